"""The CLI's command groups; `crdt_sync/cli.py` is the entry point that registers them."""
