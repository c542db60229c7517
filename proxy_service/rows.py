"""Exact float32 rows by id, read from the store: for replicas that do not hold them.

A replica that loads only its shard of a version, or holds its scoring matrix in float16,
still fits on the labelled rows' exact float32 vectors and re-scores its top candidates
from them. `ExactRows` reads those rows with Lance's `take` (only the rows asked for) and
keeps the most recently used ones, so the labelled set, which grows by a batch a round,
is read from the store once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import numpy.typing as npt
from proxal.proxy_service.cache import OnceLRU
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import Store, VersionIndex

DEFAULT_MAX_ROWS = 65_536  # ~100 MB of 384-d float32 rows
INDEX_VERSIONS = 4


class ExactRows:
    """float32 rows of complete versions by id; at most `max_rows` rows kept (LRU)."""

    def __init__(self, store: Store, max_rows: int = DEFAULT_MAX_ROWS):
        if max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {max_rows}")
        self.store = store
        self.max_rows = max_rows
        self._indexes: OnceLRU[EmbeddingVersion, VersionIndex] = OnceLRU(INDEX_VERSIONS)
        self._rows: OrderedDict[tuple[EmbeddingVersion, int], npt.NDArray[np.float32]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self.reads = 0  # rows read from the store, for tests and metrics

    def index(self, version: EmbeddingVersion) -> VersionIndex:
        """The version's id index (its id column, read once and kept)."""
        value, _ = self._indexes.get(
            version, lambda: self.store.version_index(version.pool, version.tag)
        )
        return value

    def get(self, version: EmbeddingVersion, ids: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Vectors (n, d) float32 of `ids` (n,), in their order; NotFoundError for unknown ids."""
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        cached = self._cached(version, wanted)
        missing = np.unique(wanted[np.array([row is None for row in cached], dtype=bool)])
        fresh: dict[int, npt.NDArray[np.float32]] = {}
        if len(missing):
            positions = self.index(version).positions(missing)
            read = self.store.take_rows(version.pool, version.tag, positions)
            fresh = dict(zip(missing.tolist(), read, strict=True))
            self._remember(version, fresh)
        if not len(wanted):
            dim = self.store.get_version(version.pool, version.tag).dim
            return np.empty((0, dim), dtype=np.float32)
        found = [
            fresh[i] if row is None else row for i, row in zip(wanted.tolist(), cached, strict=True)
        ]
        return np.stack(found).astype(np.float32, copy=False)

    def _cached(
        self, version: EmbeddingVersion, ids: npt.NDArray[np.int64]
    ) -> list[npt.NDArray[np.float32] | None]:
        with self._lock:
            found: list[npt.NDArray[np.float32] | None] = []
            for i in ids.tolist():
                row = self._rows.get((version, i))
                if row is not None:
                    self._rows.move_to_end((version, i))
                found.append(row)
            return found

    def _remember(
        self, version: EmbeddingVersion, rows: dict[int, npt.NDArray[np.float32]]
    ) -> None:
        with self._lock:
            self.reads += len(rows)
            for i, row in rows.items():
                row = np.array(row, dtype=np.float32)  # own copy: not a view of the read batch
                row.flags.writeable = False
                self._rows[(version, i)] = row
            while len(self._rows) > self.max_rows:
                self._rows.popitem(last=False)
