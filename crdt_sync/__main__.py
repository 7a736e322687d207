"""`python -m crdt_sync` runs the CLI."""

import sys

from .commands.quick_serve import main  # cli.py (typer) only when not a plain `serve`

sys.exit(main())
