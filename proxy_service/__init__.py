"""proxal proxy_service."""
