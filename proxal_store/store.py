"""The embedding store: the contract between proxal's services (with the protos).

Layout (one LanceDB database at `uri`, a local directory or an object-storage URI; each
table is a Lance dataset ``<uri>/<table>.lance``, written with pylance, which LanceDB opens):

==========================  ==========================================================
table                       columns
==========================  ==========================================================
``pool__<pool>``            id int64, text string, label string (null: unlabeled), split
``embeddings__<pool>``      id int64, vector fixed_size_list<float32>[dim]; one table
                            version per embedding run, pinned by a tag ("v1", "v2", ...)
``embedding_versions``      metadata per run (append-only; the last row per version wins)
``labels``                  a session's label log: label / import / skip / undo events
                            with request id and annotator (append-only)
``leases``                  items reserved for an annotator: grant and release events
``rounds``                  one row per AL round: strategy, version, selected ids, ...
``sessions``                one row per AL session
==========================  ==========================================================

Modules: `records` (the record dataclasses), `tables` (Lance plumbing of a store root and
the filter builder), `pools` (pools, embedding runs and versions), `sessions` (sessions,
labels, leases, rounds); this module is the `Store` facade and re-exports their names.

Atomicity: an embedding run writes its fragments first (invisible) and commits them as one
table version at the end, then tags it, then records it as complete. Readers only open
versions recorded complete, by tag, so a partial run is never visible. Pool ingestion is a
single append commit. Label appends are committed before `append_labels` returns; the
events of one request are one commit, so a request is either wholly in the log or not.
"""

from __future__ import annotations

from proxal.store.pools import (
    FRAGMENTS_SCHEMA,
    POOL_SCHEMA,
    READ_BATCH_ROWS,
    VERSIONS_SCHEMA,
    EmbeddingWriter,
    PoolsMixin,
)
from proxal.store.records import (
    COMPLETE,
    DELETED,
    FAILED,
    RUNNING,
    CleanupResult,
    EncoderInfo,
    PoolInfo,
    RoundRecord,
    SessionRecord,
    VersionComparison,
    VersionInfo,
    utcnow,
)
from proxal.store.sessions import (
    LABELS_SCHEMA,
    LEASES_SCHEMA,
    ROUNDS_SCHEMA,
    SESSIONS_SCHEMA,
    SessionsMixin,
)
from proxal.store.tables import (
    COMPACT_EVERY,
    LOG_TABLES,
    Tables,
    check_local_store,
    local_store_path,
)

__all__ = [
    "COMPACT_EVERY",
    "COMPLETE",
    "DELETED",
    "FAILED",
    "FRAGMENTS_SCHEMA",
    "LABELS_SCHEMA",
    "LEASES_SCHEMA",
    "LOG_TABLES",
    "POOL_SCHEMA",
    "READ_BATCH_ROWS",
    "ROUNDS_SCHEMA",
    "RUNNING",
    "SESSIONS_SCHEMA",
    "VERSIONS_SCHEMA",
    "CleanupResult",
    "EmbeddingWriter",
    "EncoderInfo",
    "PoolInfo",
    "RoundRecord",
    "SessionRecord",
    "Store",
    "VersionComparison",
    "VersionInfo",
    "local_store_path",
    "utcnow",
]


class Store(PoolsMixin, SessionsMixin):
    """Typed access to the store at `uri` (a directory path or e.g. ``s3://bucket/prefix``).

    Safe to share between threads of one process.
    """

    def __init__(
        self, uri: str, storage_options: dict[str, str] | None = None, *, create: bool = True
    ):
        """Open the store at `uri`; a missing local directory is made only if `create`.

        Commands that only read or add to an existing store pass ``create=False``, so a
        mistyped path is NotFoundError instead of a new empty store. A path that is a file
        is InvalidArgumentError. Object-storage URIs are not checked (a prefix exists once
        something is written under it).
        """
        self.uri = uri.rstrip("/") or uri
        self.storage_options = storage_options
        check_local_store(self.uri, create)
        self._tables = Tables(self.uri, storage_options)
        self._lock = self._tables.lock
        self._tagged = {}
