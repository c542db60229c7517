"""proxal orchestrator."""
