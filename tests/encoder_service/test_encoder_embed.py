"""EmbedPool and ListVersions end to end: real server, real store, real MiniLM model."""

from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from proxal.encoder.v1 import encoder_pb2
from proxal.encoder_service.servicer import SERVICE_NAME

POOL = "bank"
TRAIN, TEST = 150, 50


def to_jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def embed(encoder_server, **request: object) -> list[encoder_pb2.EmbedProgress]:
    stream = encoder_server.stub.EmbedPool(encoder_pb2.EmbedPoolRequest(**request), timeout=300)
    return list(stream)


@pytest.fixture(scope="module")
def bank_pool(encoder_server, banking_rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """A pool of 200 real Banking77 rows in two splits; ids follow the list order."""
    rows = banking_rows[: TRAIN + TEST]
    for split, part in (("train", rows[:TRAIN]), ("test", rows[TRAIN:])):
        header = encoder_pb2.PoolHeader(pool=POOL, split=split)
        chunk = encoder_pb2.IngestPoolChunk(header=header, data=to_jsonl(part))
        encoder_server.stub.IngestPool(iter([chunk]), timeout=60)
    return rows


@pytest.fixture(scope="module")
def torch_run(encoder_server, bank_pool: list[dict[str, str]]) -> list[encoder_pb2.EmbedProgress]:
    return embed(encoder_server, pool=POOL, batch_size=32)


def test_embed_pool_streams_progress_then_a_complete_version(
    encoder_server, torch_run: list[encoder_pb2.EmbedProgress]
) -> None:
    *progress, last = torch_run
    assert len(progress) >= 2
    assert all(not m.HasField("version") for m in progress)
    done = [m.rows_done for m in progress]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 200
    assert {m.rows_total for m in torch_run} == {200}
    assert progress[-1].rows_per_second > 0 and progress[-1].eta_seconds == 0

    version = last.version
    assert last.HasField("version") and last.rows_done == 200
    assert (version.pool, version.version, version.status) == (POOL, "v1", "complete")
    assert (version.row_count, version.dim, version.max_length) == (200, 384, 128)
    assert (version.model_id, version.backend, version.pooling) == ("minilm-l6", "torch", "mean")
    assert len(version.checkpoint_hash) == 64 and version.truncated_texts == 0
    assert version.table_version > 0 and version.created_at


def test_stored_vectors_are_unit_norm_in_id_order(
    encoder_server, encoders, bank_pool: list[dict[str, str]], torch_run: object
) -> None:
    ids, vectors = encoder_server.store.read_embeddings(POOL, "v1")
    assert ids.tolist() == list(range(200))
    assert vectors.shape == (200, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sample = [0, 77, 150, 199]
    direct, _ = encoders.get("minilm-l6", "torch", 128).encode(
        [bank_pool[i]["text"] for i in sample]
    )
    np.testing.assert_allclose(vectors[sample], direct, atol=1e-4)


def test_onnx_version_agrees_with_torch_and_is_listed(
    encoder_server, torch_run: list[encoder_pb2.EmbedProgress]
) -> None:
    last = embed(encoder_server, pool=POOL, backend="onnx", precision="fp32", batch_size=64)[-1]
    assert (last.version.version, last.version.backend) == ("v2", "onnx")
    _, a = encoder_server.store.read_embeddings(POOL, "v1")
    _, b = encoder_server.store.read_embeddings(POOL, "v2")
    assert (a * b).sum(axis=1).mean() >= 0.999

    listed = encoder_server.stub.ListVersions(encoder_pb2.ListVersionsRequest(pool=POOL))
    assert [(v.version, v.backend, v.status) for v in listed.versions] == [
        ("v1", "torch", "complete"),
        ("v2", "onnx", "complete"),
    ]


def test_cancelled_run_is_recorded_failed(
    encoder_server, torch_run: list[encoder_pb2.EmbedProgress]
) -> None:
    stream = encoder_server.stub.EmbedPool(
        encoder_pb2.EmbedPoolRequest(pool=POOL, batch_size=1), timeout=300
    )
    assert next(stream).rows_done == 0  # the run has started
    stream.cancel()
    deadline = time.monotonic() + 60
    while (run := encoder_server.store.list_versions(POOL, True)[-1]).status == "running":
        assert time.monotonic() < deadline, "the cancelled run did not stop"
        time.sleep(0.05)
    assert run.status == "failed"
    assert run.version not in {v.version for v in encoder_server.store.list_versions(POOL)}


def test_truncated_texts_are_recorded(encoder_server) -> None:
    long_text = " ".join(["why was my transfer to another account declined"] * 10)
    rows = [{"text": "hello"}, {"text": long_text}, {"text": "card arrived?"}]
    header = encoder_pb2.PoolHeader(pool="long", format=encoder_pb2.FILE_FORMAT_JSONL)
    chunk = encoder_pb2.IngestPoolChunk(header=header, data=to_jsonl(rows))
    encoder_server.stub.IngestPool(iter([chunk]), timeout=60)
    version = embed(encoder_server, pool="long", max_length=16)[-1].version
    assert (version.truncated_texts, version.max_length, version.row_count) == (1, 16, 3)


NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"pool": "unknown"}, NOT_FOUND, "pool 'unknown' not found"),
        ({"pool": "Bad Name"}, INVALID, "pool name 'Bad Name' is invalid"),
        ({"pool": POOL, "backend": "tensorrt"}, INVALID, "unknown backend 'tensorrt'; choose"),
        ({"pool": POOL, "model": "bert-huge"}, INVALID, "unknown model 'bert-huge'; choose"),
        ({"pool": POOL, "batch_size": 5000}, INVALID, "batch_size 5000 is out of range"),
        ({"pool": POOL, "batch_size": -1}, INVALID, "batch_size -1 is out of range"),
        ({"pool": POOL, "max_length": 1024}, INVALID, "max_length 1024 is out of range"),
    ],
    ids=["unknown-pool", "bad-pool", "backend", "model", "big-batch", "neg-batch", "max-length"],
)
def test_bad_embed_requests_start_no_run(
    encoder_server,
    bank_pool: object,
    fields: dict[str, object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    before = encoder_server.store.list_versions(POOL, include_incomplete=True)
    with pytest.raises(grpc.RpcError) as err:
        embed(encoder_server, **fields)
    assert err.value.code() is code
    assert message in (err.value.details() or "")
    assert encoder_server.store.list_versions(POOL, include_incomplete=True) == before


def test_health_is_serving(encoder_server) -> None:
    for service in (SERVICE_NAME, ""):
        response = encoder_server.health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_list_versions_of_unknown_pool_is_not_found(encoder_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        encoder_server.stub.ListVersions(encoder_pb2.ListVersionsRequest(pool="never-ingested"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "never-ingested" in info.value.details()
