"""The store: the contract between proxal's services (with the protos).

Two parts behind one facade (`Store`), so callers don't care where a table lives:

- **Pools and embeddings** in LanceDB (one database at `uri`, a local directory or an
  object-storage URI; each table a Lance dataset ``<uri>/<table>.lance``):

  ==========================  ========================================================
  table                       columns
  ==========================  ========================================================
  ``pool__<pool>``            id int64, text string, label string (null: unlabeled), split
  ``embeddings__<pool>``      id int64, vector fixed_size_list<float32>[dim]; one table
                              version per embedding run, pinned by a tag ("v1", "v2", ...)
  ``embedding_versions``      metadata per run (append-only; the last row per version wins)
  ``embedding_fragments``     a row per durable chunk of a running run (for resuming it)
  ``embedding_claims``        id ranges claimed by a run's fan-out workers (with leases)
  ==========================  ========================================================

- **Session state** in SQL (`proxal.store.sql`): sessions, the label log and its requests,
  leases and rounds. A SQLite file ``<uri>/proxal.db`` by default; PostgreSQL (or another
  SQLite file) when the store is opened with `db`. A session names its pool and version.

Modules: `records` (the record dataclasses), `tables` (Lance plumbing and the filter
builder), `pools` (pools, embedding runs and versions), `sessions` (session state), `sql`
(schema, database, migrations, queries); this module is the `Store` facade.

Atomicity: an embedding run writes its fragments first (invisible) and commits them as one
table version at the end, then tags it, then records it as complete. Readers only open
versions recorded complete, by tag, so a partial run is never visible. Pool ingestion is a
single append commit. A session write is one SQL transaction, committed and fsynced before
the call returns.
"""

from __future__ import annotations

import threading

from proxal.store.pools import (
    FRAGMENTS_SCHEMA,
    POOL_SCHEMA,
    READ_BATCH_ROWS,
    VERSIONS_SCHEMA,
    EmbeddingWriter,
    PoolsMixin,
    VersionIndex,
)
from proxal.store.records import (
    COMPLETE,
    DELETED,
    FAILED,
    RUNNING,
    CleanupResult,
    EncoderInfo,
    JobRecord,
    PoolInfo,
    RoundRecord,
    SessionRecord,
    VersionComparison,
    VersionInfo,
    utcnow,
)
from proxal.store.sessions import SessionsMixin
from proxal.store.tables import Tables, check_local_store, local_store_path

__all__ = [
    "COMPLETE",
    "DELETED",
    "FAILED",
    "FRAGMENTS_SCHEMA",
    "POOL_SCHEMA",
    "READ_BATCH_ROWS",
    "RUNNING",
    "VERSIONS_SCHEMA",
    "CleanupResult",
    "EmbeddingWriter",
    "EncoderInfo",
    "JobRecord",
    "PoolInfo",
    "RoundRecord",
    "SessionRecord",
    "Store",
    "VersionComparison",
    "VersionIndex",
    "VersionInfo",
    "local_store_path",
    "utcnow",
]


class Store(PoolsMixin, SessionsMixin):
    """Typed access to the store at `uri` (a directory path or e.g. ``s3://bucket/prefix``).

    Safe to share between threads of one process.
    """

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        *,
        create: bool = True,
        db: str = "",
    ):
        """Open the store at `uri`; a missing local directory is made only if `create`.

        Commands that only read or add to an existing store pass ``create=False``, so a
        mistyped path is NotFoundError instead of a new empty store. A path that is a file
        is InvalidArgumentError. Object-storage URIs are not checked (a prefix exists once
        something is written under it). `db` is the session database's URL ("" for
        ``<uri>/proxal.db``; a store on object storage needs one); it is opened on first use.
        """
        self.uri = uri.rstrip("/") or uri
        self.storage_options = storage_options
        check_local_store(self.uri, create)
        self._tables = Tables(self.uri, storage_options)
        self._lock = self._tables.lock
        self._tagged = {}
        self.db_url = db
        self._store_dir = local_store_path(self.uri)
        self._db = None
        self._db_guard = threading.Lock()
        self._current = threading.local()

    def check_reachable(self, database: bool = False) -> None:
        """Raise UnavailableError unless the store answers now (`Tables.probe`) and, with
        `database`, the session database answers a query too. Readiness checks call it."""
        self._tables.probe()
        if database:
            self.database().ping()
