"""Version management over real gRPC: Get/Pin/Unpin/Delete/Compare/CleanupVersions."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from proxal.encoder.v1 import encoder_pb2
from proxal.store import EncoderInfo, Store

from tests.encoder_service.conftest import EncoderServer, Upload, jsonl

INFO = EncoderInfo(model_id="synthetic", backend="torch", dim=6, max_length=16)


def _embed(store: Store, pool: str, seed: int) -> str:
    n = store.pool_info(pool).rows
    with store.begin_embedding(pool, INFO) as writer:
        writer.write(np.arange(n), np.random.default_rng(seed).normal(size=(n, 6)).astype("f4"))
        return writer.commit().version


@pytest.fixture(scope="module")
def versioned(encoder_server: EncoderServer) -> EncoderServer:
    """Pool "vers" (12 rows) with versions v1..v4: v1 and v2 identical, v3 and v4 not."""
    header = encoder_pb2.PoolHeader(pool="vers", format=encoder_pb2.FILE_FORMAT_JSONL)
    data = jsonl([{"text": f"row {i}"} for i in range(12)])
    encoder_server.stub.IngestPool(iter([encoder_pb2.IngestPoolChunk(header=header, data=data)]))
    for seed in (1, 1, 2, 3):
        _embed(encoder_server.store, "vers", seed)
    return encoder_server


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()


def test_get_pin_unpin(versioned: EncoderServer) -> None:
    stub = versioned.stub
    got = stub.GetVersion(encoder_pb2.VersionRequest(pool="vers", version="v1"))
    assert got.version == "v1" and got.status == "complete" and got.row_count == 12
    assert not got.pinned and got.dim == 6
    assert stub.PinVersion(encoder_pb2.VersionRequest(pool="vers", version="v1")).pinned
    assert stub.GetVersion(encoder_pb2.VersionRequest(pool="vers", version="v1")).pinned
    assert not stub.UnpinVersion(encoder_pb2.VersionRequest(pool="vers", version="v1")).pinned


def test_compare(versioned: EncoderServer) -> None:
    stub = versioned.stub
    same = stub.CompareVersions(
        encoder_pb2.CompareVersionsRequest(pool="vers", version_a="v1", version_b="v2")
    )
    assert (same.rows_a, same.rows_b, same.common_ids, same.sampled) == (12, 12, 12, 12)
    assert same.same_dim and same.mean_cosine == pytest.approx(1.0, abs=1e-6)
    request = encoder_pb2.CompareVersionsRequest(
        pool="vers", version_a="v1", version_b="v3", sample=5, seed=2**63
    )
    other = stub.CompareVersions(request)
    assert other.sampled == 5 and other.mean_cosine < 0.99
    assert stub.CompareVersions(request) == other


def test_errors_map_to_status_codes(versioned: EncoderServer, upload: Upload) -> None:
    stub = versioned.stub

    def req(pool: str = "vers", version: str = "v1") -> encoder_pb2.VersionRequest:
        return encoder_pb2.VersionRequest(pool=pool, version=version)

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: stub.GetVersion(req(pool="Bad/Pool"))) == invalid
    assert _code(lambda: stub.PinVersion(req(version="../v1"))) == invalid
    assert _code(lambda: stub.GetVersion(req(pool="nope"))) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: stub.DeleteVersion(req(version="v99"))) == grpc.StatusCode.NOT_FOUND
    cleanup = encoder_pb2.CleanupVersionsRequest(pool="vers", keep_latest=-1)
    assert _code(lambda: stub.CleanupVersions(cleanup)) == invalid
    for sample in (-1, 100_001):  # -1 used to mean the default
        compare = encoder_pb2.CompareVersionsRequest(
            pool="vers", version_a="v1", version_b="v1", sample=sample
        )
        assert _code(lambda compare=compare: stub.CompareVersions(compare)) == invalid
    upload("fresh", jsonl([{"text": "a"}, {"text": "b"}]))
    writer = versioned.store.begin_embedding("fresh", INFO)
    running = grpc.StatusCode.FAILED_PRECONDITION
    assert _code(lambda: stub.PinVersion(req(pool="fresh"))) == running
    assert _code(lambda: stub.DeleteVersion(req(pool="fresh"))) == running
    writer.abort()


def test_delete_and_cleanup(versioned: EncoderServer) -> None:
    stub = versioned.stub
    stub.PinVersion(encoder_pb2.VersionRequest(pool="vers", version="v2"))
    with pytest.raises(grpc.RpcError) as info:
        stub.DeleteVersion(encoder_pb2.VersionRequest(pool="vers", version="v2"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unpin" in (info.value.details() or "")
    deleted = stub.DeleteVersion(encoder_pb2.VersionRequest(pool="vers", version="v1"))
    assert (deleted.pool, deleted.version) == ("vers", "v1")
    gone = encoder_pb2.VersionRequest(pool="vers", version="v1")
    assert _code(lambda: stub.GetVersion(gone)) == grpc.StatusCode.NOT_FOUND
    result = stub.CleanupVersions(encoder_pb2.CleanupVersionsRequest(pool="vers"))  # keep 1
    assert list(result.removed) == ["v3"] and list(result.kept) == ["v2", "v4"]
    listed = stub.ListVersions(encoder_pb2.ListVersionsRequest(pool="vers"))
    assert [v.version for v in listed.versions] == ["v2", "v4"]
    history = stub.ListVersions(
        encoder_pb2.ListVersionsRequest(pool="vers", include_incomplete=True)
    )
    assert {v.version: v.status for v in history.versions} == {
        "v1": "deleted",
        "v2": "complete",
        "v3": "deleted",
        "v4": "complete",
    }
