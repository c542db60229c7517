"""Version and model caches: LRU order, compute-once under concurrency, id lookup."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from proxal.proxy_service.cache import LoadedVersion, OnceLRU, VersionCache, model_key
from proxal.proxy_service.classifiers import ClassifierSpec
from proxal.runtime.errors import FailedPreconditionError, NotFoundError
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import EncoderInfo, Store


def test_lru_evicts_least_recently_used() -> None:
    cache: OnceLRU[str, int] = OnceLRU(2)
    assert cache.get("a", lambda: 1) == (1, False)
    assert cache.get("b", lambda: 2) == (2, False)
    assert cache.get("a", lambda: 99) == (1, True)  # refreshes "a"
    cache.get("c", lambda: 3)
    assert cache.keys() == ["a", "c"]
    assert cache.get("b", lambda: 4) == (4, False)


def test_discard_forgets_a_value() -> None:
    cache: OnceLRU[str, int] = OnceLRU(2)
    cache.get("a", lambda: 1)
    assert "a" in cache and "b" not in cache
    cache.discard("a")
    cache.discard("b")  # absent: nothing to do
    assert "a" not in cache and cache.keys() == []
    assert cache.get("a", lambda: 2) == (2, False)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        OnceLRU(0)


def test_concurrent_callers_compute_once() -> None:
    cache: OnceLRU[str, int] = OnceLRU(4)
    calls = []
    release = threading.Event()

    def compute() -> int:
        calls.append(1)
        release.wait(5)
        return 42

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.get, "k", compute) for _ in range(8)]
        time.sleep(0.1)
        release.set()
        results = [f.result(timeout=5) for f in futures]
    assert len(calls) == 1
    assert [value for value, _ in results] == [42] * 8
    assert sum(not hit for _, hit in results) == 1


def test_failures_are_not_cached() -> None:
    cache: OnceLRU[str, int] = OnceLRU(4)

    def fail() -> int:
        raise FailedPreconditionError("not yet")

    with pytest.raises(FailedPreconditionError):
        cache.get("k", fail)
    assert cache.get("k", lambda: 7) == (7, False)


def test_rows_maps_ids_and_names_unknown_ones() -> None:
    version = LoadedVersion(
        EmbeddingVersion("pool", "v1"),
        np.array([2, 5, 9, 40], dtype=np.int64),
        np.zeros((4, 3), np.float32),
    )
    assert version.rows(np.array([40, 2, 9, 9]), "ids").tolist() == [3, 0, 2, 2]
    assert version.rows(np.zeros(0, dtype=np.int64), "ids").tolist() == []
    with pytest.raises(
        NotFoundError, match=r"candidate_ids: 3 id\(s\) not in .*pool/v1.*\[1, 7, 41\]"
    ):
        version.rows(np.array([1, 2, 7, 41, 41]), "candidate_ids")


def test_model_key_depends_on_every_input() -> None:
    ids = np.arange(5, dtype=np.int64)
    labels = np.array([0, 1, 0, 1, 2], dtype=np.int32)
    spec = ClassifierSpec().resolved()
    base = model_key("p", "v1", spec, 0, ids, labels, 3)
    assert base == model_key("p", "v1", spec, 0, ids.copy(), labels.copy(), 3)
    variants = [
        model_key("q", "v1", spec, 0, ids, labels, 3),
        model_key("p", "v2", spec, 0, ids, labels, 3),
        model_key("p", "v1", ClassifierSpec(c=2.0).resolved(), 0, ids, labels, 3),
        model_key("p", "v1", ClassifierSpec(balanced=True).resolved(), 0, ids, labels, 3),
        model_key("p", "v1", spec, 1, ids, labels, 3),
        model_key("p", "v1", spec, 0, ids[::-1].copy(), labels, 3),
        model_key("p", "v1", spec, 0, ids, labels[::-1].copy(), 3),
        model_key("p", "v1", spec, 0, ids, labels, 4),
    ]
    assert len({base, *variants}) == len(variants) + 1


def add_version(store: Store, pool: str, n: int, dim: int) -> tuple[str, np.ndarray]:
    store.add_pool_rows(pool, "train", [f"text {i}" for i in range(n)], [None] * n)
    writer = store.begin_embedding(pool, EncoderInfo("synthetic", "none", dim, 16))
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    writer.write(np.arange(n)[::-1], vectors[::-1])
    return writer.commit().version, vectors


def test_version_cache_loads_once_from_the_store(store: Store) -> None:
    version, vectors = add_version(store, "cached", 50, 4)
    loads = []
    read = store.read_embeddings

    def counting_read(pool: str, version: str) -> tuple[np.ndarray, np.ndarray]:
        loads.append((pool, version))
        return read(pool, version)

    store.read_embeddings = counting_read  # type: ignore[method-assign]
    cache = VersionCache(store, max_versions=2, max_models=2)
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: cache.get(EmbeddingVersion("cached", version)), range(8)))
    assert loads == [("cached", version)]
    assert all(item is loaded[0] for item in loaded)
    assert loaded[0].ids.tolist() == list(range(50))
    np.testing.assert_array_equal(loaded[0].vectors, vectors)
    assert not loaded[0].vectors.flags.writeable
    with pytest.raises(NotFoundError, match="complete versions"):
        cache.get(EmbeddingVersion("cached", "v9"))


def test_a_version_with_nan_or_inf_is_refused_with_the_ids(store: Store) -> None:
    """The store refuses non-finite vectors on write; a version corrupted outside proxal
    (simulated by altering what read_embeddings returns) must still not reach a model."""
    version, _ = add_version(store, "corrupt", 40, 4)
    read = store.read_embeddings

    def corrupted(pool: str, version: str) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = read(pool, version)
        vectors = np.array(vectors)
        vectors[3, 1], vectors[17, 0] = np.nan, np.inf
        return ids, vectors

    store.read_embeddings = corrupted  # type: ignore[method-assign]
    cache = VersionCache(store, max_versions=2, max_models=2)
    with pytest.raises(FailedPreconditionError, match=r"2 vector\(s\) with NaN.*\[3, 17\]"):
        cache.get(EmbeddingVersion("corrupt", version))
    store.read_embeddings = read  # type: ignore[method-assign]
    fixed = cache.get(EmbeddingVersion("corrupt", version))  # the bad load was not cached
    assert fixed.ids.tolist() == list(range(40))
