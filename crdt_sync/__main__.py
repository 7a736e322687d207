"""`python -m crdt_sync` runs the CLI."""

from .cli import app

app()
