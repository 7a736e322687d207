"""Refusals per connection are rate-limited: past its budget a connection is read more slowly,
and it stays open."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from crdt_sync.engine import Limits

from .conftest import RunningServer, wait_for
from .peers import mux_peer

ServerFactory = Callable[..., Awaitable[RunningServer]]


async def test_a_connection_past_its_refusal_budget_waits_and_stays_open(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(limits=Limits(refusals_per_second=1.0, refusal_burst=2))
    async with mux_peer(server.ws("/ws")) as peer:
        for n in range(4):  # each refused (and compensated), one after the other
            await peer.edit(f"deals/{n}", amount=f"ten {n}")
            await wait_for(lambda n=n: len(peer.errors) == n + 1)  # type: ignore[misc]
        assert {e.code for e in peer.errors} == {"schema_violation"}
        (connection,) = server.app.state.hub.connections  # type: ignore[attr-defined]
        assert connection.refusals.waits >= 1  # its reader waited for the budget to refill
        ok = await peer.wait_ack(await peer.edit("contacts/1", name="fine"))
        assert ok > 0
