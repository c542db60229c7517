"""Embedding-version lifecycle on a real LanceDB directory: pin, delete, cleanup, compare,
batch-wise reads and id lookups."""

from __future__ import annotations

import math
from pathlib import Path

import lance
import numpy as np
import pytest
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from proxal.store import EncoderInfo, Store, VersionInfo

INFO = EncoderInfo(model_id="test-model", backend="torch", dim=8, max_length=32)


def _pool(store: Store, n: int = 10) -> None:
    store.add_pool_rows("p", "train", [f"text {i}" for i in range(n)], [None] * n)


def _vectors(seed: int, n: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _embed(store: Store, seed: int = 0, info: EncoderInfo = INFO, chunk: int = 4) -> VersionInfo:
    n = store.pool_info("p").rows
    x = _vectors(seed, n, info.dim)
    with store.begin_embedding("p", info) as writer:
        for start in range(0, n, chunk):
            ids = np.arange(start, min(n, start + chunk))
            writer.write(ids, x[ids])
        return writer.commit()


def _data_files(store: Store) -> set[str]:
    return {p.name for p in (Path(store.uri) / "embeddings__p.lance" / "data").iterdir()}


def _names(store: Store, **kwargs: bool) -> list[str]:
    return [v.version for v in store.list_versions("p", **kwargs)]


def test_pool_and_version_existence(store: Store) -> None:
    """has_pool and has_version read table manifests and tags, never rows."""
    assert not store.has_pool("p") and not store.has_version("p", "v1")
    _pool(store)
    assert store.has_pool("p") and not store.has_pool("q")
    _embed(store, seed=1)
    _embed(store, seed=2)
    writer = store.begin_embedding("p", INFO)  # v3, running: not committed
    assert store.has_version("p", "v1") and store.has_version("p", "v2")
    assert not store.has_version("p", "v3") and not store.has_version("p", "v9")
    writer.abort()
    store.delete_version("p", "v1")
    assert not store.has_version("p", "v1") and store.has_version("p", "v2")
    _embed(store, seed=4)
    assert store.cleanup_versions("p", keep_latest=1).removed == ["v2"]
    assert not store.has_version("p", "v2") and store.has_version("p", "v4")
    with pytest.raises(InvalidArgumentError, match="version name"):
        store.has_version("p", "../v1")


def test_pin_and_unpin(store: Store) -> None:
    _pool(store)
    _embed(store)
    assert store.pin_version("p", "v1").pinned
    assert store.get_version("p", "v1").pinned and store.list_versions("p")[0].pinned
    assert store.pin_version("p", "v1").pinned  # idempotent
    assert not store.unpin_version("p", "v1").pinned
    assert not store.get_version("p", "v1").pinned
    writer = store.begin_embedding("p", INFO)
    with pytest.raises(FailedPreconditionError, match="running, not complete"):
        store.pin_version("p", "v2")
    writer.abort()
    with pytest.raises(FailedPreconditionError, match="failed, not complete"):
        store.pin_version("p", "v2")
    with pytest.raises(NotFoundError, match="v7"):
        store.pin_version("p", "v7")
    with pytest.raises(InvalidArgumentError, match="version name"):
        store.pin_version("p", "../v1")


def test_delete_removes_version_and_its_data(store: Store) -> None:
    _pool(store)
    _embed(store, seed=1)
    v1_files = _data_files(store)
    _embed(store, seed=2)
    _embed(store, seed=3)
    store.pin_version("p", "v2")
    with pytest.raises(FailedPreconditionError, match="unpin it first"):
        store.delete_version("p", "v2")
    deleted = store.delete_version("p", "v1")
    assert deleted.version == "v1" and deleted.status == "deleted"
    assert _names(store) == ["v2", "v3"]
    history = {v.version: v.status for v in store.list_versions("p", include_incomplete=True)}
    assert history == {"v1": "deleted", "v2": "complete", "v3": "complete"}
    with pytest.raises(NotFoundError, match="v1"):
        store.get_version("p", "v1")
    with pytest.raises(NotFoundError):
        store.read_embeddings("p", "v1")
    with pytest.raises(NotFoundError):
        store.delete_version("p", "v1")
    assert not v1_files & _data_files(store)  # its fragments are gone from disk
    assert "v1" not in lance.dataset(f"{store.uri}/embeddings__p.lance").tags.list()
    np.testing.assert_array_equal(store.read_embeddings("p", "v3")[1], _vectors(3, 10))


def test_delete_latest_version_frees_its_data_and_names_are_not_reused(store: Store) -> None:
    _pool(store)
    _embed(store, seed=1)
    before = _data_files(store)
    _embed(store, seed=2)
    v2_files = _data_files(store) - before
    store.delete_version("p", "v2")
    assert not v2_files & _data_files(store)
    assert store.latest_version("p").version == "v1"
    np.testing.assert_array_equal(store.read_embeddings("p", "v1")[1], _vectors(1, 10))
    assert _embed(store, seed=4).version == "v3"  # "v2" stays retired
    np.testing.assert_array_equal(store.read_embeddings("p", "v3")[1], _vectors(4, 10))


def test_cleanup_keeps_pinned_and_newest(store: Store) -> None:
    _pool(store)
    _embed(store, seed=1)
    v1_files = _data_files(store)
    for seed in (2, 3, 4):
        _embed(store, seed=seed)
    store.pin_version("p", "v1")
    reader = lance.dataset(f"{store.uri}/embeddings__p.lance", version="v1")  # open reader
    failed = store.begin_embedding("p", INFO)
    failed.write(np.arange(4), np.ones((4, 8), np.float32))
    failed.abort()
    with pytest.raises(InvalidArgumentError, match="keep_latest"):
        store.cleanup_versions("p", -1)
    result = store.cleanup_versions("p", keep_latest=1)
    assert result.removed == ["v2", "v3"] and result.kept == ["v1", "v4"]
    assert _names(store) == ["v1", "v4"]
    assert reader.to_table().num_rows == 10  # tagged versions survive lance's cleanup
    np.testing.assert_array_equal(store.read_embeddings("p", "v1")[1], _vectors(1, 10))
    # Left: v1's and v4's fragments only (v2, v3 and the failed run's files are gone).
    left = _data_files(store)
    assert v1_files <= left and len(left) == 2 * len(v1_files)
    assert store.cleanup_versions("p", keep_latest=0).removed == ["v4"]
    assert _names(store) == ["v1"]


def test_cleanup_spares_a_running_runs_fragments(store: Store) -> None:
    _pool(store)
    _embed(store, seed=1)
    _embed(store, seed=2)
    writer = store.begin_embedding("p", INFO)
    x = _vectors(5, 10)
    writer.write(np.arange(5), x[:5])
    assert store.cleanup_versions("p", keep_latest=1).removed == ["v1"]
    writer.write(np.arange(5, 10), x[5:])
    assert writer.commit().version == "v3"
    np.testing.assert_array_equal(store.read_embeddings("p", "v3")[1], x)


def test_compare_versions(store: Store) -> None:
    _pool(store, 50)
    _embed(store, seed=1)
    _embed(store, seed=1)
    _embed(store, seed=2)
    same = store.compare_versions("p", "v1", "v2")
    assert (same.rows_a, same.rows_b, same.common_ids, same.sampled) == (50, 50, 50, 50)
    assert same.same_dim and same.mean_cosine == pytest.approx(1.0, abs=1e-6)
    other = store.compare_versions("p", "v1", "v3", sample=20, seed=7)
    assert other.sampled == 20 and abs(other.mean_cosine) < 0.5
    assert store.compare_versions("p", "v1", "v3", sample=20, seed=7) == other  # seeded
    # a version of another dim (a re-embedding with another model)
    with store.begin_embedding("p", EncoderInfo("other", "torch", dim=4, max_length=8)) as w:
        w.write(np.arange(50), _vectors(4, 50, 4))
        assert w.commit().version == "v4"
    mixed = store.compare_versions("p", "v1", "v4")
    assert not mixed.same_dim and math.isnan(mixed.mean_cosine) and mixed.common_ids == 50
    with pytest.raises(InvalidArgumentError, match="sample"):
        store.compare_versions("p", "v1", "v2", sample=0)
    with pytest.raises(NotFoundError):
        store.compare_versions("p", "v1", "v9")


def test_read_embeddings_batchwise_sorted(store: Store) -> None:
    n = 30_000  # several fragments and scan batches
    store.add_pool_rows("p", "train", ["t"] * n, [None] * n)
    x = _vectors(3, n, 4)
    order = np.random.default_rng(0).permutation(n)
    info = EncoderInfo("m", "torch", dim=4, max_length=8)
    with store.begin_embedding("p", info) as writer:
        for start in range(0, n, 7_000):
            ids = order[start : start + 7_000]
            writer.write(ids, x[ids])
        writer.commit()
    ids, vectors = store.read_embeddings("p", "v1")
    assert ids.tolist() == list(range(n)) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, x)
    wanted = np.array([29_999, 0, 17, 17, 12_345])
    np.testing.assert_array_equal(store.lookup("p", "v1", wanted), x[wanted])
    assert store.lookup("p", "v1", []).shape == (0, 4)
    with pytest.raises(NotFoundError, match=r"\[30000\]"):
        store.lookup("p", "v1", [5, 30_000])
