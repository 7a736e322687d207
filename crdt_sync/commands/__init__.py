"""Sub-commands of `crdt-sync`, one module per group, registered in `crdt_sync/cli.py`."""
