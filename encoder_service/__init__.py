"""proxal encoder_service."""
