"""In-memory caches of the proxy: loaded embedding versions and fitted models.

Both are LRUs that compute each entry at most once, even under concurrent requests: the
first caller of a key computes it while later callers of the same key wait for its result.
Failures are not cached, so a version that completes later can still be loaded.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
from proxal.proxy_service.classifiers import ClassifierSpec, ProxyClassifier
from proxal.runtime.errors import FailedPreconditionError, NotFoundError
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import Store

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

SHOWN_UNKNOWN_IDS = 5
CHECK_CHUNK_ROWS = 65_536


class OnceLRU(Generic[K, V]):
    """A thread-safe LRU of at most `capacity` values, each computed once per key."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._values: OrderedDict[K, V] = OrderedDict()
        self._pending: dict[K, Future[V]] = {}

    def get(self, key: K, compute: Callable[[], V]) -> tuple[V, bool]:
        """(value, hit): the cached value for `key`, computing it with `compute` if absent."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key], True
            pending = self._pending.get(key)
            if pending is None:
                future: Future[V] = Future()
                self._pending[key] = future
        if pending is not None:
            return pending.result(), True
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            self._values[key] = value
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
        future.set_result(value)
        return value, False

    def __contains__(self, key: object) -> bool:
        """Whether a value for `key` is cached (one being computed is not yet)."""
        with self._lock:
            return key in self._values

    def discard(self, key: K) -> None:
        """Forget the cached value of `key`, if any (a computation in flight is left alone)."""
        with self._lock:
            self._values.pop(key, None)

    def keys(self) -> list[K]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._values)

    def values(self) -> list[V]:
        """Cached values, least recently used first."""
        with self._lock:
            return list(self._values.values())


@dataclass(frozen=True, eq=False)
class LoadedVersion:
    """One complete embedding version in memory: ids (N,) int64 ascending, vectors (N, d)."""

    name: EmbeddingVersion
    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]

    @property
    def pool(self) -> str:
        return self.name.pool

    @property
    def version(self) -> str:
        return self.name.tag

    @property
    def nbytes(self) -> int:
        """Bytes held in memory: ids and vectors."""
        return int(self.ids.nbytes + self.vectors.nbytes)

    def part_rows(self, index: int, count: int) -> npt.NDArray[np.intp]:
        """Rows (s,) of shard part `index` of `count`: positions [index*N//count,
        (index+1)*N//count) of the ascending ids (see ShardPart in proxy.proto)."""
        n = len(self.ids)
        return np.arange(index * n // count, (index + 1) * n // count)

    def rows(self, ids: npt.NDArray[np.int64], field: str) -> npt.NDArray[np.intp]:
        """Row indices (n,) of `ids` (n,); raises NotFoundError naming a few unknown ids."""
        n = len(self.ids)
        pos = np.searchsorted(self.ids, ids)
        found = pos < n
        found[found] = self.ids[pos[found]] == ids[found]
        if not found.all():
            unknown = np.unique(ids[~found])
            raise NotFoundError(
                f"{field}: {len(unknown)} id(s) not in embedding version "
                f"{self.name} ({n} ids), e.g. {unknown[:SHOWN_UNKNOWN_IDS].tolist()}"
            )
        return pos


def model_key(
    pool: str,
    version: str,
    spec: ClassifierSpec,
    seed: int,
    training_ids: npt.NDArray[np.int64],
    training_labels: npt.NDArray[np.int32],
    num_classes: int,
) -> str:
    """A fingerprint of everything a fitted model depends on (spec must be resolved)."""
    digest = hashlib.blake2b(digest_size=20)
    header = (
        f"{pool}\0{version}\0{spec.kind}\0{spec.c!r}\0{spec.max_iter}\0{spec.balanced}\0"
        f"{seed}\0{num_classes}"
    )
    digest.update(header.encode())
    digest.update(np.ascontiguousarray(training_ids, dtype="<i8").tobytes())
    digest.update(b"\0")
    digest.update(np.ascontiguousarray(training_labels, dtype="<i4").tobytes())
    return digest.hexdigest()


class VersionCache:
    """Loaded versions of `store` per (pool, version) and recently fitted models, both LRU."""

    def __init__(self, store: Store, max_versions: int, max_models: int):
        self.store = store
        self.versions: OnceLRU[EmbeddingVersion, LoadedVersion] = OnceLRU(max_versions)
        self.models: OnceLRU[str, ProxyClassifier] = OnceLRU(max_models)

    def get(self, version: EmbeddingVersion) -> LoadedVersion:
        """The complete version, loaded from the store on first use.

        Raises NotFoundError (unknown pool or version), FailedPreconditionError (incomplete).
        """
        value, _ = self.versions.get(version, lambda: self._load(version))
        return value

    def drop_if_deleted(self, version: EmbeddingVersion) -> None:
        """If `version` is cached but gone from the store, drop it and raise NotFoundError.

        Every request calls this: DeleteVersion and CleanupVersions remove the version's tag,
        so a replica that cached it answers as a fresh one would. Reads the tag list only
        (`Store.has_version`), and nothing for a version that is not cached.
        """
        if version not in self.versions or self.store.has_version(version.pool, version.tag):
            return
        self.versions.discard(version)
        self.store.get_version(version.pool, version.tag)  # raises the store's NotFoundError
        raise NotFoundError(
            f"embedding version {version.tag!r} of pool {version.pool!r} was deleted"
        )

    def _load(self, version: EmbeddingVersion) -> LoadedVersion:
        ids, vectors = self.store.read_embeddings(version.pool, version.tag)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        _check_finite(version, ids, vectors)
        ids.flags.writeable = False
        vectors.flags.writeable = False
        return LoadedVersion(name=version, ids=ids, vectors=vectors)


def _check_finite(
    version: EmbeddingVersion, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]
) -> None:
    """Raise FailedPreconditionError naming a few ids whose vectors hold NaN or inf."""
    bad: list[npt.NDArray[np.int64]] = []
    for start in range(0, len(vectors), CHECK_CHUNK_ROWS):
        finite = np.isfinite(vectors[start : start + CHECK_CHUNK_ROWS]).all(axis=1)
        bad.append(ids[start : start + CHECK_CHUNK_ROWS][~finite])
    bad_ids = np.concatenate(bad) if bad else np.zeros(0, np.int64)
    if len(bad_ids):
        raise FailedPreconditionError(
            f"embedding version {version} has {len(bad_ids)} vector(s) with NaN or "
            f"infinite values, e.g. ids {bad_ids[:SHOWN_UNKNOWN_IDS].tolist()}; embed the pool "
            "again (EncoderService.EmbedPool) and delete this version"
        )
