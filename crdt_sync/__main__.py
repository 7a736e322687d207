"""`python -m crdt_sync` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
