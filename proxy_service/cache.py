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
from typing import Generic, TypeVar, cast

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
FLOAT32 = "float32"
FLOAT16 = "float16"
AUTO = "auto"
PRECISIONS = (AUTO, FLOAT32, FLOAT16)
# Measured in bench/proxy.py (docs/proxy.md): below this, re-scoring's fixed cost (reading
# the survivors' float32 rows) outweighs what the halved pass saves.
DEFAULT_FLOAT16_MIN_ROWS = 500_000
FLOAT16_MAX = 65504.0


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
    """One complete embedding version in memory: ids (N,) int64 ascending, vectors (N, d).

    ``vectors`` are float32, or float16 (the scoring matrix; no float32 copy is kept) with
    ``norms`` (N,), the float32 rows' Euclidean norms, and ``exact_source``, which reads
    float32 rows by id from the store. ``float16_ok``: every value fits float16's range.
    """

    name: EmbeddingVersion
    ids: npt.NDArray[np.int64]
    # float16 values where `precision` says so; typed float32, as numpy's typing cannot
    # follow the dtype (only the kernel strategies run on a float16 matrix).
    vectors: npt.NDArray[np.float32]
    norms: npt.NDArray[np.float32] | None = None
    exact_source: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float32]] | None = None
    float16_ok: bool = True

    @property
    def precision(self) -> str:
        """How the scoring matrix is held: "float32" or "float16"."""
        return FLOAT16 if self.vectors.dtype == np.float16 else FLOAT32

    def exact(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        """The float32 vectors (n, d) of rows (n,): held ones, or read by id when float16."""
        if self.vectors.dtype == np.float32:
            return np.asarray(self.vectors[rows], dtype=np.float32)
        if self.exact_source is None:
            raise FailedPreconditionError(
                f"embedding version {self.name} is held in float16 without a source of its "
                "float32 rows; load it with precision float32"
            )
        return self.exact_source(self.ids[rows])

    @property
    def pool(self) -> str:
        return self.name.pool

    @property
    def version(self) -> str:
        return self.name.tag

    @property
    def nbytes(self) -> int:
        """Bytes held in memory: ids, vectors and (float16) row norms."""
        norms = 0 if self.norms is None else self.norms.nbytes
        return int(self.ids.nbytes + self.vectors.nbytes + norms)

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
    """Loaded versions of `store` per (pool, version) and recently fitted models, both LRU.

    Each version is held once, in float32 or float16. ``precision`` ("auto" | "float32" |
    "float16") is the replica's default: auto holds versions of at least
    ``float16_min_rows`` rows in float16. A request may ask for either precision; the
    version is then loaded again in it (see `get`).
    """

    def __init__(
        self,
        store: Store,
        max_versions: int,
        max_models: int,
        precision: str = AUTO,
        float16_min_rows: int = DEFAULT_FLOAT16_MIN_ROWS,
    ):
        from proxal.proxy_service.rows import ExactRows  # rows.py builds on this module

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.store = store
        self.precision = precision
        self.float16_min_rows = float16_min_rows
        self.exact_rows = ExactRows(store)
        self.versions: OnceLRU[EmbeddingVersion, LoadedVersion] = OnceLRU(max_versions)
        self.models: OnceLRU[str, ProxyClassifier] = OnceLRU(max_models)

    def get(self, version: EmbeddingVersion, precision: str = "") -> LoadedVersion:
        """The complete version, loaded from the store on first use.

        ``precision`` "" or "auto" takes the version as held (first load: the replica's
        rule). "float32" or "float16" makes sure it is held so, loading it again if not
        (a float16 copy is made from the held float32 one). Raises NotFoundError (unknown
        pool or version), FailedPreconditionError (incomplete; or float16 asked for a
        version with values beyond float16's range).
        """
        value, _ = self.versions.get(version, lambda: self._load(version, precision))
        if precision in ("", AUTO) or value.precision == precision:
            return value
        if precision == FLOAT16 and not value.float16_ok:
            raise FailedPreconditionError(_out_of_range(version))
        self.versions.discard(version)
        value, _ = self.versions.get(version, lambda: self._load(version, precision, value))
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

    def _load(
        self, version: EmbeddingVersion, precision: str, held: LoadedVersion | None = None
    ) -> LoadedVersion:
        """Read the version (or reuse `held` float32 rows) and hold it in `precision`."""
        if held is not None and held.vectors.dtype == np.float32:
            ids, vectors = held.ids, np.asarray(held.vectors, dtype=np.float32)
        else:
            ids, vectors = self.store.read_embeddings(version.pool, version.tag)
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            _check_finite(version, ids, vectors)
        in_range = bool(len(vectors) == 0 or np.abs(vectors).max() <= FLOAT16_MAX)
        wanted = self.precision if precision in ("", AUTO) else precision
        if wanted == AUTO:
            wanted = FLOAT16 if len(ids) >= self.float16_min_rows and in_range else FLOAT32
        if wanted == FLOAT16 and not in_range:
            if precision == FLOAT16:
                raise FailedPreconditionError(_out_of_range(version))
            wanted = FLOAT32
        ids.flags.writeable = False
        if wanted == FLOAT32:
            vectors.flags.writeable = False
            return LoadedVersion(name=version, ids=ids, vectors=vectors, float16_ok=in_range)
        half, norms = to_float16(vectors)
        del vectors
        return LoadedVersion(
            name=version,
            ids=ids,
            vectors=cast(npt.NDArray[np.float32], half),
            norms=norms,
            exact_source=lambda wanted_ids: self.exact_rows.get(version, wanted_ids),
            float16_ok=True,
        )


def _out_of_range(version: EmbeddingVersion) -> str:
    return (
        f"embedding version {version} has values beyond float16's range (|x| > {FLOAT16_MAX:g}); "
        'score it with precision float32 (or "", auto, which falls back to float32)'
    )


def to_float16(
    vectors: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.float32]]:
    """vectors (N, d) float32 -> (the same in float16 (N, d), the float32 rows' norms (N,)),
    chunk by chunk; the norms are rounded up a little so they bound the exact ones."""
    half = np.empty(vectors.shape, dtype=np.float16)
    norms = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), CHECK_CHUNK_ROWS):
        chunk = vectors[start : start + CHECK_CHUNK_ROWS]
        half[start : start + len(chunk)] = chunk
        norms[start : start + len(chunk)] = np.sqrt(
            np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64)
        ) * (1 + 1e-6)
    half.flags.writeable = False
    norms.flags.writeable = False
    return half, norms


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
