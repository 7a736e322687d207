"""README.md's "First five minutes", run as written against a real server, so it cannot drift.

The shell blocks run in bash in an empty folder, with `crdt-sync` on PATH, as a new user pastes
them; the only change is the port (a free one for 8765, which another run may hold). The Node
script runs with the npm packages of tests/package-lock.json instead of a fresh `npm install`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import free_socket
from .nodejs import TESTS, node_with_packages

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "join-record.mjs"


def walkthrough() -> list[tuple[str, str]]:
    """The fenced blocks of the README's "First five minutes" section: (language, text)."""
    text = README.read_text()
    section = text.split("## First five minutes", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


def shell_environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # where pip put `crdt-sync`
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDT_SYNC_")}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def first_terminal(tmp_path: Path, port: int) -> Iterator[Path]:
    """The first block (`crdt-sync serve --demo`), running in an empty folder; yields it."""
    language, block = walkthrough()[0]
    assert language == "sh" and block.strip() == "crdt-sync serve --demo --port 8765"
    log = tmp_path / "serve.log"
    folder = tmp_path / "crm"
    folder.mkdir()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", block.replace("8765", str(port))],
            cwd=folder,
            stdout=out,
            stderr=out,
            env=shell_environment(),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "serving" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield folder
    finally:
        os.killpg(process.pid, 15)
        process.wait(15)
    said = log.read_text()
    assert "Traceback" not in said
    for doc_id in ("contacts/ada", "contacts/grace", "deals/engine", "tasks/call-ada"):
        assert doc_id in said, said  # --demo lists what it seeded, as the README says


def test_the_readme_walkthrough_runs_as_written(first_terminal: Path, port: int) -> None:
    language, block = walkthrough()[1]
    assert language == "sh"
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.replace("8765", str(port))],
        cwd=first_terminal,
        capture_output=True,
        text=True,
        env=shell_environment(),
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert "Traceback" not in ran.stderr
    out = ran.stdout
    assert '"name":"Ada Lovelace"' in out  # GET contacts/ada
    assert "Difference engine" in out  # the demo's deal in stage proposal
    assert "pending   1" in out  # the offline edit, queued
    ben = [json.loads(line) for line in out.splitlines() if line.startswith('{"id":"ben"')]
    assert ben and ben[-1]["company"] == "Printing Office"  # after the second sync, on the server
    pulled = json.loads(out.splitlines()[-1])
    assert "ben" in {row["id"] for row in pulled["changes"]["contacts"]["created"]}


@pytest.mark.node
def test_the_readme_node_script_is_the_example_file_and_joins_a_record(
    first_terminal: Path, port: int, tmp_path: Path
) -> None:
    blocks = walkthrough()
    script = next(text for language, text in blocks if language == "js")
    assert script == EXAMPLE.read_text()
    run_line = blocks[-2][1].strip().splitlines()[-1]
    assert run_line.startswith("TOKEN=$DEVICE node join-record.mjs contacts/ada")
    node = node_with_packages(("yjs", "y-websocket", "ws"), "README")
    joined = tmp_path / "join"
    joined.mkdir()
    (joined / "join-record.mjs").write_text(script)
    (joined / "node_modules").symlink_to(TESTS / "node_modules")
    made = subprocess.run(
        [sys.executable, "-m", "crdt_sync", "token", "create", "--role", "device", "--name", "n"],
        cwd=first_terminal,
        capture_output=True,
        text=True,
        check=True,
    )
    device = made.stdout.strip()
    ran = subprocess.run(
        [node, "join-record.mjs", "contacts/ada"],
        cwd=joined,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TOKEN": device, "CRDT_SYNC_URL": f"ws://127.0.0.1:{port}"},
    )
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert json.loads(ran.stdout)["name"] == "Ada Lovelace"
    deadline = time.monotonic() + 10
    while True:  # the live edit arrives at the server: wait for it, bounded
        view = httpx.get(
            f"http://127.0.0.1:{port}/api/sync/initial",
            headers={"Authorization": f"Bearer {device}"},
        ).json()["changes"]["contacts"]["created"]
        if {r["id"]: r for r in view}["ada"]["company"] == "Analytical Engines Ltd":
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
