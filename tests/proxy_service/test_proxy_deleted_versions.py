"""A replica that cached a version stops serving it once the encoder deleted it: real
EncoderService and ProxyService servers over one store on tmp_path, each with its own
Store (as separate processes would have)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.common.v1 import common_pb2
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.encoder_service.encoders import EncoderCache
from proxal.encoder_service.servicer import EncoderServicer
from proxal.encoder_service.settings import EncoderSettings
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime.arrays import pack_int32, pack_int64
from proxal.runtime.errors import NotFoundError
from proxal.runtime.server import RunningServer, ServerSettings, start_server
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import EncoderInfo, Store

from tests.conftest import add_blobs_version

POOL, N, DIM = "blobs", 200, 8


@dataclass
class World:
    encoder: encoder_pb2_grpc.EncoderServiceStub
    proxy: proxy_pb2_grpc.ProxyServiceStub
    cache: VersionCache
    store_uri: str


def _add_version(store: Store, vectors: np.ndarray) -> str:
    writer = store.begin_embedding(POOL, EncoderInfo("synthetic-blobs", "none", DIM, 16))
    writer.write(list(range(N)), vectors)
    return str(writer.commit().version)


def _serve(register: Callable[[grpc.Server], None], name: str) -> RunningServer:
    return start_server(ServerSettings(port=0, max_workers=4), register, [name])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    uri = str(tmp_path / "store")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=N)
    vectors = (labels[:, None] * 2.0 + rng.normal(size=(N, DIM))).astype(np.float32)
    writer = Store(uri)
    assert add_blobs_version(writer, POOL, vectors, labels) == "v1"
    assert _add_version(writer, vectors + 0.1) == "v2"
    assert _add_version(writer, vectors - 0.1) == "v3"

    settings = EncoderSettings(server=ServerSettings(port=0), store=uri, onnx_cache=tmp_path)
    encoder = EncoderServicer(Store(uri), settings, EncoderCache(tmp_path, capacity=1))
    cache = VersionCache(Store(uri), max_versions=4, max_models=4)
    proxy = ProxyServicer(cache)
    servers = [
        _serve(
            lambda s: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(encoder, s),
            encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name,
        ),
        _serve(lambda s: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(proxy, s), SERVICE_NAME),
    ]
    channels = [grpc.insecure_channel(s.address) for s in servers]
    yield World(
        encoder_pb2_grpc.EncoderServiceStub(channels[0]),
        proxy_pb2_grpc.ProxyServiceStub(channels[1]),
        cache,
        uri,
    )
    for channel, server in zip(channels, servers, strict=True):
        channel.close()
        server.stop(0)


def _select(stub: proxy_pb2_grpc.ProxyServiceStub, version: str) -> proxy_pb2.SelectResponse:
    ids = np.arange(20)
    training = proxy_pb2.TrainingSet(
        ids=common_pb2.Int64Array(data=pack_int64(ids)),
        labels=common_pb2.Int32Array(data=pack_int32(ids % 2)),
        num_classes=2,
    )
    request = proxy_pb2.SelectRequest(
        pool=POOL, embedding_version=version, training=training, strategy="margin", k=5
    )
    return stub.Select(request, timeout=30)


def _not_found(stub: proxy_pb2_grpc.ProxyServiceStub, version: str) -> str:
    with pytest.raises(grpc.RpcError) as info:
        _select(stub, version)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    return str(info.value.details())


def _fresh_replica_answer(world: World, version: str) -> str:
    """What a replica that never loaded `version` answers (its own cache over the store)."""
    fresh = VersionCache(Store(world.store_uri), max_versions=1, max_models=1)
    with pytest.raises(NotFoundError) as info:
        fresh.get(EmbeddingVersion(POOL, version))
    return str(info.value)


def test_a_cached_version_is_not_found_once_deleted(world: World) -> None:
    for version in ("v1", "v2", "v3"):
        _select(world.proxy, version)  # loaded and cached
    cached = {EmbeddingVersion(POOL, tag) for tag in ("v1", "v2", "v3")}
    assert set(world.cache.versions.keys()) == cached

    world.encoder.DeleteVersion(encoder_pb2.VersionRequest(pool=POOL, version="v2"))
    details = _not_found(world.proxy, "v2")
    assert "'v2' of pool 'blobs' not found" in details and "['v1', 'v3']" in details
    assert details == _fresh_replica_answer(world, "v2")  # the same answer on any replica
    assert set(world.cache.versions.keys()) == cached - {EmbeddingVersion(POOL, "v2")}  # freed
    assert len(_select(world.proxy, "v3").ids.data) == 5 * 8  # the others still serve

    removed = world.encoder.CleanupVersions(
        encoder_pb2.CleanupVersionsRequest(pool=POOL, keep_latest=1)
    ).removed
    assert list(removed) == ["v1"]
    details = _not_found(world.proxy, "v1")
    assert "'v1' of pool 'blobs' not found" in details
    assert details == _fresh_replica_answer(world, "v1")
    assert set(world.cache.versions.keys()) == {EmbeddingVersion(POOL, "v3")}


def test_the_existence_check_reads_no_embeddings(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached version is served without reading the store's vectors again."""
    _select(world.proxy, "v3")
    store = world.cache.store
    reads: list[str] = []
    original = store.read_embeddings

    def read_embeddings(pool: str, version: str) -> tuple[np.ndarray, np.ndarray]:
        reads.append(version)
        return original(pool, version)

    monkeypatch.setattr(store, "read_embeddings", read_embeddings)
    for _ in range(3):
        _select(world.proxy, "v3")
    assert reads == []
    _select(world.proxy, "v2")  # not cached yet: read once (the spy sees reads)
    _select(world.proxy, "v2")
    assert reads == ["v2"]
