"""The embedding store on a real LanceDB directory: versions, atomicity, labels, rounds."""

from __future__ import annotations

from pathlib import Path

import lance
import numpy as np
import pytest
from proxal.runtime.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from proxal.store import EncoderInfo, RoundRecord, SessionRecord, Store

INFO = EncoderInfo(model_id="test-model", backend="torch", dim=8, max_length=32)


def _pool(store: Store, n: int = 10) -> None:
    store.add_pool_rows(
        "p", "train", [f"text {i}" for i in range(n)], ["a" if i % 2 else "b" for i in range(n)]
    )


def _embed(store: Store, pool: str = "p", seed: int = 0):  # type: ignore[no-untyped-def]
    n = store.pool_info(pool).rows
    rng = np.random.default_rng(seed)
    with store.begin_embedding(pool, INFO) as writer:
        for start in range(0, n, 4):
            ids = np.arange(start, min(n, start + 4))
            writer.write(ids, rng.normal(size=(len(ids), 8)).astype(np.float32))
        return writer.commit()


def test_pool_splits_get_consecutive_ids(store: Store) -> None:
    assert store.add_pool_rows("p", "train", ["a", "b", "c"], ["x", None, "y"]) == (0, 3)
    assert store.add_pool_rows("p", "test", ["d"], ["x"]) == (3, 1)
    info = store.pool_info("p")
    assert info.rows == 4 and info.splits == {"test": 1, "train": 3}
    assert info.classes == ["x", "y"]
    assert store.pool_rows("p", split="test").column("text").to_pylist() == ["d"]


def test_pool_bad_input_leaves_pool_unchanged(store: Store) -> None:
    _pool(store, 4)
    with pytest.raises(AlreadyExistsError):
        store.add_pool_rows("p", "train", ["x"], [None])
    with pytest.raises(InvalidArgumentError):
        store.add_pool_rows("p", "extra", [], [])
    with pytest.raises(InvalidArgumentError, match="invalid"):
        store.add_pool_rows("../etc", "train", ["x"], [None])
    assert store.pool_info("p").rows == 4
    with pytest.raises(NotFoundError):
        store.pool_info("nope")


def test_versions_are_tagged_and_immutable(store: Store) -> None:
    _pool(store)
    v1 = _embed(store, seed=1)
    v2 = _embed(store, seed=2)
    assert (v1.version, v2.version) == ("v1", "v2")
    assert v1.complete and v1.row_count == 10 and v1.dim == 8
    ids1, x1 = store.read_embeddings("p", "v1")
    _, x2 = store.read_embeddings("p", "v2")
    assert ids1.tolist() == list(range(10)) and x1.shape == (10, 8) and x1.dtype == np.float32
    assert not np.allclose(x1, x2)  # v1 still reads its own vectors after v2 was written
    assert [v.version for v in store.list_versions("p")] == ["v1", "v2"]
    assert store.latest_version("p").version == "v2"


def test_incomplete_run_is_never_visible(store: Store) -> None:
    _pool(store)
    _embed(store)
    writer = store.begin_embedding("p", INFO)
    writer.write(np.arange(4), np.ones((4, 8), np.float32))
    assert [v.version for v in store.list_versions("p")] == ["v1"]
    with pytest.raises(FailedPreconditionError, match="running"):
        store.read_embeddings("p", "v2")
    with pytest.raises(FailedPreconditionError, match="wrote 4 rows, expected 10"):
        writer.commit()
    writer.abort()
    statuses = {v.version: v.status for v in store.list_versions("p", include_incomplete=True)}
    assert statuses == {"v1": "complete", "v2": "failed"}
    assert store.latest_version("p").version == "v1"


def test_writer_rejects_bad_vectors(store: Store) -> None:
    _pool(store, 2)
    with store.begin_embedding("p", INFO) as writer:
        with pytest.raises(InvalidArgumentError, match="shape"):
            writer.write([0, 1], np.ones((2, 7), np.float32))
        with pytest.raises(InvalidArgumentError, match="NaN"):
            writer.write([0, 1], np.full((2, 8), np.nan, np.float32))
        writer.write([0, 0], np.ones((2, 8), np.float32))
        with pytest.raises(FailedPreconditionError, match="duplicate"):
            writer.commit()


def test_unknown_versions(store: Store) -> None:
    _pool(store)
    with pytest.raises(FailedPreconditionError, match="no complete embedding version"):
        store.latest_version("p")
    _embed(store)
    with pytest.raises(NotFoundError, match="v9"):
        store.read_embeddings("p", "v9")


def test_labels_are_append_only_and_last_label_wins(store: Store) -> None:
    for name in ("s1", "s2"):
        store.create_session(SessionRecord(name, "p", "v1", "margin", 2, 0))
    with pytest.raises(NotFoundError):  # labels belong to a session
        store.append_labels("s3", "p", [3], ["a"])
    store.append_labels("s1", "p", [3, 1], ["a", "b"])
    store.append_labels("s1", "p", [3], ["b"])
    store.append_labels("s2", "p", [7], ["a"])
    ids, labels = store.read_labels("s1")
    assert ids.tolist() == [1, 3] and labels == ["b", "b"]
    reopened = Store(store.uri)  # a new process would see the same: it is on disk
    assert reopened.read_labels("s2")[0].tolist() == [7]


def test_sessions_and_rounds_round_trip(store: Store) -> None:
    rec = store.create_session(SessionRecord("s", "p", "v1", "margin", 10, 3, config={"k": 1}))
    assert rec.created_at
    with pytest.raises(AlreadyExistsError):
        store.create_session(SessionRecord("s", "p", "v1", "margin", 10, 3))
    assert store.get_session("s").config == {"k": 1}
    with pytest.raises(NotFoundError):
        store.get_session("other")
    store.record_round(RoundRecord("s", 1, "margin", "v1", [5, 6], 12, metrics={"accuracy": 0.5}))
    store.record_round(RoundRecord("s", 0, "random", "v1", [1], 10, timings={"fit_s": 0.1}))
    rounds = store.read_rounds("s")
    assert [r.round for r in rounds] == [0, 1]
    assert rounds[1].selected_ids == [5, 6] and rounds[1].metrics == {"accuracy": 0.5}


def test_a_run_resumes_from_its_recorded_chunks(store: Store) -> None:
    _pool(store, 10)
    x = np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32)
    writer = store.begin_embedding("p", INFO)
    writer.write(np.arange(0, 4), x[0:4], truncated=1)
    writer.write(np.arange(4, 7), x[4:7])
    del writer  # the process "dies": no commit, no abort

    assert [v.version for v in store.interrupted_runs()] == ["v1"]
    resumed = Store(store.uri).resume_embedding("p", "v1")
    assert sorted(resumed.done_ids.tolist()) == list(range(7))
    assert (resumed.rows_written, resumed.truncated_texts) == (7, 1)
    resumed.write(np.arange(7, 10), x[7:10])
    info = resumed.commit()
    assert info.complete and info.row_count == 10 and info.truncated_texts == 1
    ids, vectors = store.read_embeddings("p", "v1")
    assert ids.tolist() == list(range(10))
    np.testing.assert_array_equal(vectors, x)
    assert store.interrupted_runs() == []


def test_only_running_runs_resume(store: Store) -> None:
    _pool(store, 4)
    _embed(store)
    with pytest.raises(FailedPreconditionError, match="complete"):
        store.resume_embedding("p", "v1")
    with pytest.raises(NotFoundError):
        store.resume_embedding("p", "v5")


def test_a_new_version_may_change_dim(store: Store) -> None:
    _pool(store, 4)
    _embed(store)
    small = EncoderInfo(model_id="other", backend="torch", dim=3, max_length=32)
    with store.begin_embedding("p", small) as writer:
        writer.write(np.arange(4), np.ones((4, 3), np.float32))
        assert writer.commit().dim == 3
    assert store.read_embeddings("p", "v1")[1].shape == (4, 8)
    assert store.read_embeddings("p", "v2")[1].shape == (4, 3)


def test_the_label_log_keeps_commit_order_across_sessions(tmp_path: Path) -> None:
    from proxal.store.labels import LabelEvent

    store = Store(str(tmp_path / "s"))
    for name in ("s0", "s1"):
        store.create_session(SessionRecord(name, "p", "v1", "margin", 2, 0))
    n = 107
    for i in range(n):  # one transaction per request, as sessions write them
        store.append_label_events(
            f"s{i % 2}", "p", [LabelEvent("label", (i * 37) % 101, f"c{i}", f"r{i}")]
        )
    events = Store(store.uri).read_label_events("s1")  # a fresh reader
    assert [e.request_id for e in events] == [f"r{i}" for i in range(1, n, 2)]
    assert store.read_label_log("s1").labels == {(i * 37) % 101: f"c{i}" for i in range(1, n, 2)}


def test_the_version_log_is_compacted_and_keeps_its_records(tmp_path: Path) -> None:
    """`embedding_versions`, the one append-only log left in Lance, is compacted."""
    from proxal.store.records import COMPLETE, VersionInfo
    from proxal.store.tables import COMPACT_EVERY

    store = Store(str(tmp_path / "s"))
    store.add_pool_rows("p", "train", ["a"], [None])
    n = 2 * COMPACT_EVERY + 7
    for i in range(n):  # one commit per record, as embedding runs write them
        info = VersionInfo("p", f"v{i + 1}", i, "m", "", "torch", "mean", 4, 8, COMPLETE, 1, 0, "")
        store._record_version(info)
    fragments = lance.dataset(str(tmp_path / "s" / "embedding_versions.lance")).get_fragments()
    assert len(fragments) <= 8  # compacted twice, then 7 one-row appends
    assert [v.version for v in store.list_versions("p")] == [f"v{i + 1}" for i in range(n)]
