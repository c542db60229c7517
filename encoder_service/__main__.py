"""`python -m proxal.encoder_service` (or `proxal-encoder`): serve EncoderService until stopped.

`python -m proxal.encoder_service embed-begin | embed-range | embed-commit ...` runs one
fan-out step instead (encoder_service/fanout.py, docs/store.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc
from proxal.encoder.v1 import encoder_pb2_grpc
from proxal.encoder_service import fanout
from proxal.encoder_service.encoders import EncoderCache
from proxal.encoder_service.metrics import EncoderMetrics
from proxal.encoder_service.recovery import start_recovery
from proxal.encoder_service.servicer import SERVICE_NAME, EncoderServicer
from proxal.encoder_service.settings import EncoderSettings, parse_settings
from proxal.runtime.errors import ProxalError
from proxal.runtime.metrics import new_registry
from proxal.runtime.server import RunningServer, serve_forever, start_or_exit
from proxal.store import Store


def start(
    settings: EncoderSettings, store: Store, encoders: EncoderCache | None = None
) -> RunningServer:
    """Serve EncoderService over `store`, with its metrics; health turns SERVING once the
    store answers and the default model is loaded (`EncoderServicer.check_ready`)."""
    registry = new_registry()
    servicer = EncoderServicer(store, settings, encoders, EncoderMetrics(registry))

    def register(server: grpc.Server) -> None:
        encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server)

    return start_or_exit(
        settings.server,
        register,
        [SERVICE_NAME],
        "proxal-encoder",
        readiness=servicer.check_ready,
        registry=registry,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in fanout.SUBCOMMANDS:
        return fanout.main(argv)
    settings = parse_settings(argv)
    try:  # the encoder may create the store: it is what writes new pools
        store = Store(settings.store, settings.store_options, create=True)
    except ProxalError as exc:
        raise SystemExit(f"proxal-encoder: {exc}") from None
    running = start(settings, store)
    start_recovery(store, settings)  # finish runs a killed process left running
    serve_forever(running)
    return 0


if __name__ == "__main__":
    sys.exit(main())
