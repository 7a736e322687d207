"""Server CPU per fan-out delivery and per edit, by difference, for each server of live_bench.

    python benchmarks/fanout_cpu.py [--rounds 3] [--subscribers 50,200] [--sides ours,ywss]
                                    [--ours-python PATH] [--ours-b-python PATH]

live_bench's (b) counts a server's CPU over the whole load: the subscribers' handshakes and
closes as well as the edits. Here each server gets the same (b) load twice per round, with 200
edits and with 20 (same subscribers, same joins), so (cpu_200 - cpu_20) / 180 is what one edit
costs it with S subscribers; with two subscriber counts, cost(S) = per_edit + S * per_delivery
is solved for both; what the 20 edits leave of their load's CPU is the rest (joins, closes,
the creating edit). `--ours-b-python` adds a second crdt-sync as side "ours_b", measured in the
same rounds: an A/B. It is run as `PATH -m crdt_sync serve` from this tree, so PATH is a wrapper
that changes to the other tree's directory first (`-m` imports from the working directory
before PYTHONPATH): `cd /other/tree && exec /venv/bin/python "$@"`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import live_bench as lb

FEW, MANY = 20, 200  # edits per load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subscribers", default="50,200")
    parser.add_argument("--sides", default="ours,hocuspocus,ywss")
    parser.add_argument("--ours-python", default=sys.executable)
    parser.add_argument("--ours-b-python", default="")
    parser.add_argument("--per-process", type=int, default=50)
    args = parser.parse_args()
    subscribers = [int(s) for s in args.subscribers.split(",")]
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    bench = lb.Bench(
        argparse.Namespace(
            ours_python=args.ours_python,
            peer_python=sys.executable,
            sides=sides,
            verbose=False,
            load_timeout=120.0,
        ),
        Path(tempfile.mkdtemp(prefix="fanout-cpu-")),
    )
    servers = {side: bench.server(side, "b") for side in bench.sides}
    if args.ours_b_python:
        bench.python["ours"] = args.ours_b_python
        servers["ours_b"] = bench.server("ours", "b")
        bench.python["ours"] = args.ours_python
    cpu: dict[str, dict[int, list[float]]] = {
        side: {s: [] for s in subscribers} for side in servers
    }
    rest: dict[str, dict[int, list[float]]] = {
        side: {s: [] for s in subscribers} for side in servers
    }
    try:
        for server in servers.values():
            server.start()
        names = list(servers)
        for r in range(args.rounds):
            for side in names[r % len(names) :] + names[: r % len(names)]:
                for subs in subscribers:
                    few, many = (run(bench, servers[side], subs, n, args) for n in (FEW, MANY))
                    per_edit_ms = (many["server_cpu_s"] - few["server_cpu_s"]) / (MANY - FEW) * 1e3
                    cpu[side][subs].append(per_edit_ms)
                    rest[side][subs].append(few["server_cpu_s"] - FEW * per_edit_ms / 1e3)
                    print(
                        f"  round {r + 1} {side:10} {subs:4} subs: {per_edit_ms:.3f} ms of server "
                        f"CPU an edit; p50 {many['p50_ms']:.2f} p99 {many['p99_ms']:.2f} ms",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    report(cpu, rest, subscribers)


def run(bench: lb.Bench, server: lb.Server, subs: int, edits: int, args: Any) -> dict[str, Any]:
    params = bench.params(
        server,
        "fanout",
        subscribers=subs,
        edits=edits,
        rate=100.0,
        timeout=120.0,
        per_process=args.per_process,
    )
    result = bench.measured(server, f"{server.side} {subs}", params)
    if "error" in result or "server_cpu_s" not in result:
        raise RuntimeError(f"{server.side} {subs} subscribers: {result.get('error')}")
    return result


def report(
    cpu: dict[str, dict[int, list[float]]],
    rest: dict[str, dict[int, list[float]]],
    subscribers: list[int],
) -> None:
    print("\nthe rest of a load (joins, closes, the creating edit): server CPU s, median")
    for side, by in rest.items():
        cells = [f"{s} subs {statistics.median(v):.3f}" for s, v in by.items()]
        print(f"  {side:10} " + " | ".join(cells))
    print("\nserver CPU an edit, ms (median of rounds; all rounds)")
    for side, by in cpu.items():
        cells = [
            f"{s} subs {statistics.median(v):.3f} {[round(x, 2) for x in v]}" for s, v in by.items()
        ]
        line = f"  {side:10} " + " | ".join(cells)
        if len(subscribers) >= 2:
            low, high = subscribers[0], subscribers[-1]
            a, b = statistics.median(by[low]), statistics.median(by[high])
            per_delivery = (b - a) / (high - low)
            line += f" | per delivery {per_delivery * 1e3:.2f} us, per edit {a - low * per_delivery:.3f} ms"
        print(line)


if __name__ == "__main__":
    main()
