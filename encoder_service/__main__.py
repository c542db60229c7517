"""`python -m proxal.encoder_service` (or `proxal-encoder`): serve EncoderService until stopped."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc
from proxal.encoder.v1 import encoder_pb2_grpc
from proxal.encoder_service.recovery import start_recovery
from proxal.encoder_service.servicer import SERVICE_NAME, EncoderServicer
from proxal.encoder_service.settings import parse_settings
from proxal.runtime.errors import ProxalError
from proxal.runtime.server import serve_forever, start_or_exit
from proxal.store import Store


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    try:  # the encoder may create the store: it is what writes new pools
        store = Store(settings.store, settings.store_options, create=True)
    except ProxalError as exc:
        raise SystemExit(f"proxal-encoder: {exc}") from None
    servicer = EncoderServicer(store, settings)

    def register(server: grpc.Server) -> None:
        encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server)

    running = start_or_exit(settings.server, register, [SERVICE_NAME], "proxal-encoder")
    start_recovery(store, settings)  # finish runs a killed process left running
    serve_forever(running)
    return 0


if __name__ == "__main__":
    sys.exit(main())
