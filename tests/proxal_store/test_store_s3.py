"""The store on object storage: a real (local, loopback-only) moto S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pytest
from proxal.runtime.errors import InvalidArgumentError
from proxal.store import EncoderInfo, SessionRecord, Store
from proxal.store.local_s3 import moto_s3

BUCKET = "proxal-test"
ROWS, DIM, FRAGMENT_ROWS = 120_000, 32, 50_000


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[dict[str, str], Any]]:
    """(storage_options, boto3 client) of a moto S3 server with an empty bucket."""
    with moto_s3(BUCKET) as server:
        yield server.options, server.client


def _data_keys(client: Any, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def _embed(store: Store, x: np.ndarray) -> str:
    info = EncoderInfo(model_id="synthetic", backend="torch", dim=DIM, max_length=16)
    with store.begin_embedding("p", info) as writer:
        for start in range(0, len(x), FRAGMENT_ROWS):
            ids = np.arange(start, min(len(x), start + FRAGMENT_ROWS))
            writer.write(ids, x[ids])
        return writer.commit().version


def test_store_round_trip_on_s3(s3: tuple[dict[str, str], Any], tmp_path: Path) -> None:
    options, client = s3
    store = Store(f"s3://{BUCKET}/proxal", storage_options=options)
    assert not store.has_pool("p")
    texts = [f"row {i}" for i in range(ROWS)]
    assert store.add_pool_rows("p", "train", texts, ["a" if i % 3 else None for i in range(ROWS)])
    assert store.pool_info("p").rows == ROWS and store.pool_info("p").classes == ["a"]

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    assert _embed(store, x1) == "v1"
    ids, vectors = store.read_embeddings("p", "v1")
    assert ids.tolist() == list(range(ROWS))
    np.testing.assert_array_equal(vectors, x1)
    wanted = np.array([119_999, 3, 50_000])
    np.testing.assert_array_equal(store.lookup("p", "v1", wanted), x1[wanted])

    with pytest.raises(InvalidArgumentError, match="--db"):  # no SQLite file on S3
        store.list_sessions()
    db = f"sqlite:///{tmp_path / 'sessions.db'}"  # sessions in a database of their own
    with_db = Store(f"s3://{BUCKET}/proxal", storage_options=options, db=db)
    with_db.create_session(SessionRecord("s", "p", "v1", "margin", 2, 0))
    with_db.append_labels("s", "p", [5, 9], ["a", "b"])
    with_db.append_labels("s", "p", [5], ["b"])
    reopened = Store(f"s3://{BUCKET}/proxal", storage_options=options, db=db)
    labelled, labels = reopened.read_labels("s")
    assert labelled.tolist() == [9, 5] and labels == ["b", "b"]
    assert reopened.read_labels("nobody")[0].size == 0

    data = "proxal/embeddings__p.lance/data/"
    v1_keys = _data_keys(client, data)
    x2 = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    assert _embed(store, x2) == "v2" and _embed(store, x2) == "v3"
    store.pin_version("p", "v1")
    reader = lance.dataset(
        f"s3://{BUCKET}/proxal/embeddings__p.lance", version="v1", storage_options=options
    )
    result = store.cleanup_versions("p", keep_latest=1)
    assert result.removed == ["v2"] and result.kept == ["v1", "v3"]
    assert reader.to_table().num_rows == ROWS  # its data files are still there
    left = _data_keys(client, data)  # v1's and v3's fragments only
    assert v1_keys <= left and len(left) == 2 * len(v1_keys)
    np.testing.assert_array_equal(store.read_embeddings("p", "v1")[1], x1)
    np.testing.assert_array_equal(store.read_embeddings("p", "v3")[1], x2)
    assert store.compare_versions("p", "v1", "v3", sample=100).sampled == 100


def test_services_run_on_s3_through_their_flags(s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Encoder and proxy subprocesses on an s3:// store, configured by flags only."""
    import json

    import grpc
    from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
    from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient, TrainingSet
    from proxal.orchestrator_service.rpc.processes import ServiceProcess

    from tests.conftest import BANKING77, read_jsonl

    options, client = s3
    uri = f"s3://{BUCKET}/services"
    flags = [f"--store-option={k}={v}" for k, v in options.items()]
    rows = read_jsonl(BANKING77 / "train.jsonl")[::50][:120]
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with (
        ServiceProcess("encoder_service", uri, flags) as enc,
        ServiceProcess("proxy_service", uri, flags) as prx,
    ):
        encoder = EncoderClient(enc.address)
        assert encoder.ingest_file("s3pool", "train", data).rows_added == 120
        version = encoder.embed("s3pool", batch_size=32)
        assert (version.version, version.row_count, version.status) == ("v1", 120, "complete")
        labels = sorted({r["label"] for r in rows})
        ids = np.arange(0, 120, 3, dtype=np.int64)
        training = TrainingSet(
            ids, np.array([labels.index(rows[i]["label"]) for i in ids], np.int32), len(labels)
        )
        selection = ProxyClient(prx.address).select("s3pool", "v1", training, "margin", 5, seed=0)
        assert len(set(selection.ids.tolist()) - set(ids.tolist())) == 5
        stub = encoder_pb2_grpc.EncoderServiceStub(grpc.insecure_channel(enc.address))
        assert stub.GetPool(encoder_pb2.GetPoolRequest(pool="s3pool")).rows == 120
    assert any(
        key.startswith("services/embeddings__s3pool.lance/")
        for key in _data_keys(client, "services/")
    )
