"""The offline-first client replica: local store, offline queue, sync over /ws or REST.

local.py     the replica's SQLite file: documents, queue, cursor (layout.py: its versions)
intent.py    what a local change meant, to make it again after a refusal
replica.py   Replica: the public API (records offline, sync(), live(), status)
context.py   SyncContext: what the transports share (the file, the status, the wake-up)
mux.py       the /ws link (drives the protocol's PeerSession as Role.CLIENT)
rest.py      the REST fallback (/api/sync/*)
status.py    SyncState, SyncStatus and the status stream
backoff.py   capped exponential backoff with jitter
"""

from .backoff import Backoff
from .local import QueuedChange
from .replica import Replica
from .status import SyncState, SyncStatus, Transport

__all__ = ["Backoff", "QueuedChange", "Replica", "SyncState", "SyncStatus", "Transport"]
