"""proxal: the gRPC contracts (`proxal.<service>.v1`) and, lazily, the notebook `Client`.

`from proxal import Client` imports `rpc.client` on first use only, so importing
the generated protos never loads the orchestrator (nor torch: the client imports grpc).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from proxal.orchestrator_service.rpc.client import Client

        return Client
    raise AttributeError(f"module 'proxal' has no attribute {name!r}")
