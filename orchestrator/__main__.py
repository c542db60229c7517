"""`python -m proxal.orchestrator_service ...` is the `proxal` command."""

import sys

from proxal.orchestrator_service.cli.main import main

sys.exit(main())
