"""Encoder-service fixtures: the real MiniLM model (loaded once) behind a real gRPC server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.encoder_service.encoders import EncoderCache
from proxal.encoder_service.servicer import EncoderServicer
from proxal.encoder_service.settings import EncoderSettings
from proxal.runtime.server import RunningServer, ServerSettings, grpc_channel_options, start_server
from proxal.store import Store

MAX_UPLOAD_BYTES = 256 * 1024

Upload = Callable[..., encoder_pb2.IngestPoolResponse]


@dataclass
class EncoderServer:
    """A started EncoderService over its own store, with stubs on one channel."""

    running: RunningServer
    store: Store
    stub: encoder_pb2_grpc.EncoderServiceStub
    health: health_pb2_grpc.HealthStub


@pytest.fixture(scope="session")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> EncoderCache:
    """One encoder cache for every encoder test: each model/backend loads once per run."""
    return EncoderCache(tmp_path_factory.mktemp("onnx-cache"), capacity=8)


@pytest.fixture(scope="module")
def encoder_server(
    tmp_path_factory: pytest.TempPathFactory, encoders: EncoderCache
) -> Iterator[EncoderServer]:
    store = Store(str(tmp_path_factory.mktemp("encoder") / "store"))
    settings = EncoderSettings(
        server=ServerSettings(port=0, max_workers=4),
        store=store.uri,
        onnx_cache=encoders.onnx_cache_dir,
        max_upload_bytes=MAX_UPLOAD_BYTES,
    )
    servicer = EncoderServicer(store, settings, encoders)
    running = start_server(
        settings.server,
        lambda server: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server),
        [encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name],
    )
    channel = grpc.insecure_channel(running.address, options=grpc_channel_options())
    yield EncoderServer(
        running,
        store,
        encoder_pb2_grpc.EncoderServiceStub(channel),
        health_pb2_grpc.HealthStub(channel),
    )
    channel.close()
    running.stop(0)


def jsonl(rows: Sequence[dict[str, object]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def chunks(
    data: bytes, header: encoder_pb2.PoolHeader | None, chunk_bytes: int
) -> Iterator[encoder_pb2.IngestPoolChunk]:
    """The upload as the client streams it: the header rides on the first chunk."""
    pieces = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    for index, piece in enumerate(pieces):
        if index == 0 and header is not None:
            yield encoder_pb2.IngestPoolChunk(header=header, data=piece)
        else:
            yield encoder_pb2.IngestPoolChunk(data=piece)


@pytest.fixture
def upload(encoder_server: EncoderServer) -> Upload:
    """upload(pool, data, split="", fmt=UNSPECIFIED, chunk_bytes=4096) -> IngestPoolResponse."""

    def call(
        pool: str,
        data: bytes,
        split: str = "",
        fmt: int = encoder_pb2.FILE_FORMAT_UNSPECIFIED,
        chunk_bytes: int = 4096,
    ) -> encoder_pb2.IngestPoolResponse:
        header = encoder_pb2.PoolHeader(pool=pool, split=split, format=fmt)
        return encoder_server.stub.IngestPool(chunks(data, header, chunk_bytes), timeout=60)

    return call
