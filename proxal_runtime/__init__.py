"""Small runtime shared by every proxal service: errors, gRPC bootstrap, packed arrays."""
