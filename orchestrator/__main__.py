"""`python -m orchestrator ...` is the `proxal` command."""

import sys

from orchestrator.cli import main

sys.exit(main())
