"""Pools, their embedding versions and the writer of an embedding run (Store's part).

An embedding run writes its fragments first (invisible) and commits them as one table
version at the end, then tags it, then records it as complete. Readers only open versions
recorded complete, by tag, so a partial run is never visible.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import lance
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from lance.fragment import FragmentMetadata, write_fragments
from proxal.runtime.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from proxal.runtime.names import check_name
from proxal.store.records import (
    COMPLETE,
    DELETED,
    FAILED,
    RUNNING,
    CleanupResult,
    EncoderInfo,
    PoolInfo,
    VersionComparison,
    VersionInfo,
    utcnow,
)
from proxal.store.tables import Tables, eq, in_ints

POOL_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("split", pa.string(), nullable=False),
    ]
)
VERSIONS_SCHEMA = pa.schema(
    [
        ("pool", pa.string()),
        ("version", pa.string()),
        ("table_version", pa.int64()),
        ("model_id", pa.string()),
        ("checkpoint_hash", pa.string()),
        ("backend", pa.string()),
        ("pooling", pa.string()),
        ("dim", pa.int32()),
        ("max_length", pa.int32()),
        ("status", pa.string()),
        ("row_count", pa.int64()),
        ("truncated_texts", pa.int64()),
        ("created_at", pa.string()),
        ("precision", pa.string()),
        ("pinned", pa.bool_()),
        ("source", pa.string()),
        ("label_count", pa.int64()),
        ("label_set_hash", pa.string()),
        ("recorded_at", pa.string()),
    ]
)
# Durable progress of running embedding runs: one row per written chunk, so a run whose
# process died can be resumed from its committed fragments (see Store.resume_embedding).
FRAGMENTS_SCHEMA = pa.schema(
    [
        ("pool", pa.string()),
        ("version", pa.string()),
        ("ids", pa.list_(pa.int64())),
        ("truncated", pa.int64()),
        ("fragments", pa.string()),  # JSON list of lance FragmentMetadata
        ("recorded_at", pa.string()),
    ]
)
# Id ranges claimed by the workers of fan-out runs (see PoolsMixin.claim_range): one row per
# claim, renewal or release; a claim is live until released or past its latest expires_at.
CLAIMS_SCHEMA = pa.schema(
    [
        ("pool", pa.string()),
        ("version", pa.string()),
        ("claim", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("owner", pa.string()),
        ("released", pa.bool_()),
        ("expires_at", pa.string()),
    ]
)
CLAIMS_TABLE = "embedding_claims"
CLAIMS_COMPACT_FRAGMENTS = 200
READ_BATCH_ROWS = 2048  # scan batch of read_embeddings: measured fastest of 512..65536
TAKE_BATCH_ROWS = 65_536  # rows per take of read_part when a version is not in id order


def _vectors_to_arrow(ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.table(
        {
            "id": pa.array(np.asarray(ids, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        },
        schema=_embedding_schema(dim),
    )


def _embedding_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


class EmbeddingWriter:
    """Writes one embedding run in fragments; nothing is visible until `commit()`.

    Use as a context manager: leaving the block without `commit()` records the run failed.
    """

    def __init__(
        self, store: PoolsMixin, pool: str, version: str, info: EncoderInfo, expected: int
    ):
        self._store = store
        self.pool = pool
        self.version = version
        self.info = info
        self.expected_rows = expected
        self.rows_written = 0
        self.truncated_texts = 0
        self.created_at = utcnow()
        self._fragments: list[FragmentMetadata] = []
        self._seen = np.zeros(0, dtype=np.int64)
        self._done = False

    @property
    def done_ids(self) -> npt.NDArray[np.int64]:
        """Ids written so far (including those recovered by a resume), (n,) int64."""
        return self._seen.copy()

    def write(
        self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32], truncated: int = 0
    ) -> None:
        """Append rows: ids (n,) int64, vectors (n, dim) float32; `truncated` texts among them.

        The chunk's fragments are recorded durably before this returns, so a run whose
        process dies can resume after its last written chunk.
        """
        ids_arr = np.asarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape != (len(ids_arr), self.info.dim):
            raise InvalidArgumentError(
                f"vectors must have shape ({len(ids_arr)}, {self.info.dim}), got {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            raise InvalidArgumentError("vectors contain NaN or infinite values")
        table = _vectors_to_arrow(ids_arr, vectors)
        fragments = write_fragments(
            table,
            self._store._tables.uri_of(_emb_table(self.pool)),
            schema=table.schema,
            mode="overwrite",  # a run may have another dim than the previous version
            storage_options=self._store._tables.storage_options,
        )
        staged = {
            "pool": self.pool,
            "version": self.version,
            "ids": ids_arr.tolist(),
            "truncated": truncated,
            "fragments": json.dumps([f.to_json() for f in fragments]),
            "recorded_at": utcnow(),
        }
        _append(
            self._store._tables,
            "embedding_fragments",
            pa.Table.from_pylist([staged], schema=FRAGMENTS_SCHEMA),
        )
        self._fragments.extend(fragments)
        self._seen = np.concatenate([self._seen, ids_arr])
        self.rows_written += len(ids_arr)
        self.truncated_texts += truncated

    def commit(self) -> VersionInfo:
        """Commit all fragments as one table version, tag it, record it complete."""
        if self.rows_written != self.expected_rows:
            raise FailedPreconditionError(
                f"embedding run {self.pool}/{self.version} wrote {self.rows_written} rows, "
                f"expected {self.expected_rows}"
            )
        if len(np.unique(self._seen)) != len(self._seen):
            raise FailedPreconditionError(
                f"embedding run {self.pool}/{self.version} has duplicate ids"
            )
        table_version = self._store._commit_embeddings(
            self.pool, self.info.dim, self._fragments, self.version
        )
        info = self._info(COMPLETE, table_version)
        self._store._record_version(info)
        self._done = True
        return info

    def abort(self) -> None:
        if not self._done:
            self._store._record_version(self._info(FAILED, -1))
            self._done = True

    def _info(self, status: str, table_version: int) -> VersionInfo:
        return VersionInfo(
            pool=self.pool,
            version=self.version,
            table_version=table_version,
            status=status,
            row_count=self.rows_written,
            truncated_texts=self.truncated_texts,
            created_at=self.created_at,
            model_id=self.info.model_id,
            checkpoint_hash=self.info.checkpoint_hash,
            backend=self.info.backend,
            pooling=self.info.pooling,
            dim=self.info.dim,
            max_length=self.info.max_length,
            precision=self.info.precision,
            source=self.info.source,
            label_count=self.info.label_count,
            label_set_hash=self.info.label_set_hash,
        )

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


@dataclass(frozen=True)
class VersionIndex:
    """Where each id of a version is stored: ids (N,) ascending and their row positions (N,)."""

    name: str
    ids: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]

    @classmethod
    def of(cls, name: str, stored_ids: npt.NDArray[np.int64]) -> VersionIndex:
        """The index of a version whose id column, in storage order, is `stored_ids` (N,)."""
        order = np.argsort(stored_ids, kind="stable").astype(np.int64)
        return cls(name=name, ids=np.ascontiguousarray(stored_ids[order]), rows=order)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.rows.nbytes)

    def positions(self, ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Row positions (n,) of `ids` (n,); NotFoundError naming a few ids not stored."""
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        at = np.searchsorted(self.ids, wanted)
        found = at < len(self.ids)
        found[found] = self.ids[at[found]] == wanted[found]
        if not found.all():
            missing = wanted[~found][:5].tolist()
            raise NotFoundError(
                f"ids {missing} are not in embedding version {self.name} "
                f"({(~found).sum()} missing); ids come from the pool ({len(self.ids)} rows)"
            )
        return self.rows[at]


@dataclass(frozen=True)
class RangeClaim:
    """A live claim on the ids start..end-1 of an embedding run, held by `owner`."""

    claim: str
    start: int
    end: int
    owner: str
    expires_at: str


def _live_claims(rows: pa.Table, now: str) -> list[RangeClaim]:
    """The claims of `rows` (CLAIMS_SCHEMA) neither released nor expired at `now`."""
    latest: dict[str, RangeClaim] = {}
    released: set[str] = set()
    for row in rows.to_pylist():
        if row["released"]:
            released.add(row["claim"])
            continue
        known = latest.get(row["claim"])
        if known is None or row["expires_at"] > known.expires_at:
            latest[row["claim"]] = RangeClaim(
                row["claim"], row["start"], row["end"], row["owner"], row["expires_at"]
            )
    return [c for k, c in latest.items() if k not in released and c.expires_at > now]


def _append(tables: Tables, name: str, rows: pa.Table) -> int:
    """Append `rows` to table `name` (made on first use); returns the committing version.

    Safe from many processes at once (fan-out workers) once the table exists: lance
    retries a conflicting append commit (`begin_embedding` makes the tables).
    """
    with tables.lock:
        ds = lance.write_dataset(
            rows,
            tables.uri_of(name),
            schema=rows.schema,
            mode="append",
            storage_options=tables.storage_options,
        )
    return int(ds.version)


def _vector_rows(column: pa.FixedSizeListArray, dim: int) -> npt.NDArray[np.float32]:
    """A fixed_size_list<float32>[dim] array as an (n, dim) float32 view (no copy)."""
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), dim)


def _pool_table(pool: str) -> str:
    return f"pool__{pool}"


def _emb_table(pool: str) -> str:
    return f"embeddings__{pool}"


class PoolsMixin:
    """Store's pools, embedding runs and versions, on the tables of `_tables`."""

    _tables: Tables
    _tagged: dict[str, lance.LanceDataset]  # embeddings tables, for their tags

    # ---------------------------------------------------------------- pools
    def add_pool_rows(
        self, pool: str, split: str, texts: Sequence[str], labels: Sequence[str | None]
    ) -> tuple[int, int]:
        """Append one split's rows to a pool in one commit. Returns (first_id, rows_added).

        Raises AlreadyExistsError if the split is already in the pool.
        """
        check_name("pool", pool)
        check_name("split", split)
        if len(texts) == 0:
            raise InvalidArgumentError(f"pool {pool!r} split {split!r}: no rows to add")
        if len(texts) != len(labels):
            raise InvalidArgumentError("texts and labels must have the same length")
        with self._tables.lock:
            existing = self._tables.read(_pool_table(pool), columns=["id", "split"])
            first_id = 0
            if existing is not None and existing.num_rows:
                if split in set(existing.column("split").to_pylist()):
                    raise AlreadyExistsError(
                        f"pool {pool!r} already has a split {split!r}; use another split name "
                        "or another pool"
                    )
                first_id = int(pc.max(existing.column("id")).as_py()) + 1
            ids = np.arange(first_id, first_id + len(texts), dtype=np.int64)
            rows = pa.table(
                {
                    "id": ids,
                    "text": pa.array(list(texts), pa.string()),
                    "label": pa.array(list(labels), pa.string()),
                    "split": pa.array([split] * len(texts), pa.string()),
                },
                schema=POOL_SCHEMA,
            )
            self._tables.append(_pool_table(pool), rows)
        return first_id, len(texts)

    def has_pool(self, pool: str) -> bool:
        """Whether the pool was ingested; O(1) in its rows (opens the table, reads no rows)."""
        check_name("pool", pool)
        return self._tables.dataset(_pool_table(pool)) is not None

    def has_version(self, pool: str, version: str) -> bool:
        """Whether embedding version `version` of `pool` was committed and not deleted.

        Lists the embeddings table's tags (a tag per version, dropped on delete and cleanup)
        through a handle kept per pool: no rows, no manifest, no version log; one LIST
        request on object storage. Cheap enough for every request.
        """
        check_name("pool", pool)
        check_name("version", version)
        ds = self._tagged.get(pool)
        if ds is None:
            ds = self._tables.dataset(_emb_table(pool))
            if ds is None:
                return False
            self._tagged[pool] = ds  # tags.list() lists the tags afresh on every call
        return version in ds.tags.list()

    def pool_rows(
        self, pool: str, split: str | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """The pool's rows sorted by id (optionally one split). Raises NotFoundError."""
        check_name("pool", pool)
        where = None
        if split is not None:
            check_name("split", split)
            where = eq(split=split)
        table = self._tables.read(_pool_table(pool), where=where, columns=columns)
        if table is None:
            raise NotFoundError(
                f"pool {pool!r} not found; ingest it first (EncoderService.IngestPool)"
            )
        return table.sort_by("id") if "id" in table.column_names else table

    def pool_texts(self, pool: str, ids: Sequence[int]) -> dict[int, str]:
        """The texts of `ids` (those in the pool), read by a filter, not a full scan."""
        check_name("pool", pool)
        if not len(ids):
            return {}
        where = in_ints("id", [int(i) for i in ids])
        table = self._tables.read(_pool_table(pool), where=where, columns=["id", "text"])
        if table is None:
            raise NotFoundError(f"pool {pool!r} not found")
        return dict(
            zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True)
        )

    def pool_info(self, pool: str) -> PoolInfo:
        rows = self.pool_rows(pool, columns=["id", "label", "split"])
        splits = {}
        for split in sorted(set(rows.column("split").to_pylist())):
            splits[split] = rows.filter(pc.equal(rows.column("split"), split)).num_rows
        labels = [x for x in set(rows.column("label").to_pylist()) if x is not None]
        return PoolInfo(pool=pool, rows=rows.num_rows, splits=splits, classes=sorted(labels))

    # ---------------------------------------------------------------- embeddings
    def begin_embedding(self, pool: str, info: EncoderInfo) -> EmbeddingWriter:
        """Start a new embedding run for every row of `pool`; returns its writer."""
        rows = self.pool_rows(pool, columns=["id"]).num_rows
        with self._tables.lock:
            known = {v.version for v in self.list_versions(pool, include_incomplete=True)}
            n = len(known) + 1
            while f"v{n}" in known:
                n += 1
            writer = EmbeddingWriter(self, pool, f"v{n}", info, expected=rows)
            self._record_version(writer._info(RUNNING, -1))
            # made now, by one process: lance refuses appends racing a table's creation
            for name, schema in [
                ("embedding_fragments", FRAGMENTS_SCHEMA),
                (CLAIMS_TABLE, CLAIMS_SCHEMA),
            ]:
                if self._tables.dataset(name) is None:
                    self._tables.append(name, schema.empty_table())
        return writer

    def resume_embedding(self, pool: str, version: str) -> EmbeddingWriter:
        """A writer for a run whose process died, holding the chunks it had written."""
        info = next(
            (v for v in self.list_versions(pool, include_incomplete=True) if v.version == version),
            None,
        )
        if info is None:
            raise NotFoundError(f"embedding run {pool}/{version} not found")
        if info.status != RUNNING:
            raise FailedPreconditionError(
                f"embedding run {pool}/{version} is {info.status}; only running runs resume"
            )
        encoder = EncoderInfo(
            model_id=info.model_id,
            backend=info.backend,
            dim=info.dim,
            max_length=info.max_length,
            pooling=info.pooling,
            checkpoint_hash=info.checkpoint_hash,
            precision=info.precision,
            source=info.source,
            label_count=info.label_count,
            label_set_hash=info.label_set_hash,
        )
        rows = self.pool_rows(pool, columns=["id"]).num_rows
        writer = EmbeddingWriter(self, pool, version, encoder, expected=rows)
        writer.created_at = info.created_at
        staged = self._tables.read("embedding_fragments", where=eq(pool=pool, version=version))
        for row in [] if staged is None else staged.to_pylist():
            writer._fragments.extend(
                FragmentMetadata.from_json(json.dumps(f)) for f in json.loads(row["fragments"])
            )
            writer._seen = np.concatenate([writer._seen, np.asarray(row["ids"], np.int64)])
            writer.rows_written += len(row["ids"])
            writer.truncated_texts += row["truncated"]
        return writer

    def interrupted_runs(self) -> list[VersionInfo]:
        """Runs recorded as running, in every pool: after a restart their process is gone.

        Assumes one encoder process writes a store's embeddings at a time.
        """
        table = self._tables.read("embedding_versions", columns=["pool"])
        pools = sorted(set(table.column("pool").to_pylist())) if table is not None else []
        return [
            v
            for pool in pools
            for v in self.list_versions(pool, include_incomplete=True)
            if v.status == RUNNING
        ]

    # ---------------------------------------------------------------- fan-out claims
    def claim_range(
        self, pool: str, version: str, start: int, end: int, owner: str, lease_s: float
    ) -> str:
        """Claim ids start..end-1 of running run `pool/version` for `lease_s` seconds (renew
        with `renew_claims`); returns the claim's id.

        FailedPreconditionError, naming the other range, if a live claim overlaps: claims
        are appended (Lance serialises the commits) and only those committed before this one
        count, so of two overlapping claimants exactly the later one is refused.
        """
        run = self._find_version(pool, version)
        if run.status != RUNNING:
            raise FailedPreconditionError(
                f"embedding run {pool}/{version} is {run.status}; only running runs take workers"
            )
        claim = uuid.uuid4().hex
        at = self._append_claims(pool, version, [(claim, start, end)], owner, False, lease_s)
        uri = self._tables.uri_of(CLAIMS_TABLE)
        ds = lance.dataset(uri, version=at, storage_options=self._tables.storage_options)
        rows = ds.to_table(filter=eq(pool=pool, version=version))
        clashes = [
            c
            for c in _live_claims(rows, utcnow())
            if c.claim != claim and c.start < end and start < c.end
        ]
        if clashes:
            self.release_claims(pool, version, [claim])
            other = clashes[0]
            raise FailedPreconditionError(
                f"ids {start}:{end} of run {pool}/{version} overlap ids {other.start}:{other.end},"
                f" claimed by live worker {other.owner} (until {other.expires_at}); give this "
                "worker a disjoint range"
            )
        return claim

    def renew_claims(
        self,
        pool: str,
        version: str,
        claims: dict[str, tuple[int, int]],
        owner: str,
        lease_s: float,
    ) -> None:
        """Extend claims made by `claim_range` ({claim: (start, end)}) by `lease_s` seconds
        from now, in one append."""
        rows = [(claim, start, end) for claim, (start, end) in claims.items()]
        self._append_claims(pool, version, rows, owner, False, lease_s)

    def release_claims(self, pool: str, version: str, claims: list[str]) -> None:
        """End claims: their ranges are free for other workers at once. Compacts the claims
        table once it has CLAIMS_COMPACT_FRAGMENTS fragments (an append each), so reading
        it stays fast."""
        self._append_claims(pool, version, [(c, 0, 0) for c in claims], "", True, 0.0)
        ds = self._tables.dataset(CLAIMS_TABLE)
        if ds is not None and len(ds.get_fragments()) >= CLAIMS_COMPACT_FRAGMENTS:
            self._tables.compact(CLAIMS_TABLE)

    def live_claims(self, pool: str, version: str) -> list[RangeClaim]:
        """The live claims on run `pool/version`, in no particular order."""
        rows = self._tables.read(CLAIMS_TABLE, where=eq(pool=pool, version=version))
        return [] if rows is None else _live_claims(rows, utcnow())

    def _append_claims(
        self,
        pool: str,
        version: str,
        claims: list[tuple[str, int, int]],
        owner: str,
        released: bool,
        lease_s: float,
    ) -> int:
        """Append a row per (claim, start, end), expiring `lease_s` seconds from now, in one
        commit; returns the claims table version that committed them."""
        expires = (datetime.now(UTC) + timedelta(seconds=lease_s)).isoformat(
            timespec="microseconds"
        )
        rows = [
            {
                "pool": pool,
                "version": version,
                "claim": claim,
                "start": start,
                "end": end,
                "owner": owner,
                "released": released,
                "expires_at": expires,
            }
            for claim, start, end in claims
        ]
        return _append(self._tables, CLAIMS_TABLE, pa.Table.from_pylist(rows, schema=CLAIMS_SCHEMA))

    def _commit_embeddings(
        self, pool: str, dim: int, fragments: list[FragmentMetadata], tag: str
    ) -> int:
        uri = self._tables.uri_of(_emb_table(pool))
        with self._tables.lock:
            try:
                existing = lance.dataset(uri, storage_options=self._tables.storage_options)
            except (ValueError, FileNotFoundError, OSError):
                existing = None
            current = None if existing is None else existing.version
            tagged = {} if existing is None else existing.tags.list()
            if tag in tagged:  # this run committed, then died before it was recorded complete
                return int(tagged[tag]["version"])
            op = lance.LanceOperation.Overwrite(_embedding_schema(dim), fragments)
            ds = lance.LanceDataset.commit(
                uri, op, read_version=current, storage_options=self._tables.storage_options
            )
            ds.tags.create(tag, ds.version)
            return int(ds.version)

    def _record_version(self, info: VersionInfo) -> None:
        row = {**asdict(info), "recorded_at": utcnow()}
        self._tables.append(
            "embedding_versions", pa.Table.from_pylist([row], schema=VERSIONS_SCHEMA)
        )

    def list_versions(self, pool: str, include_incomplete: bool = False) -> list[VersionInfo]:
        """Versions of a pool, oldest first; by default only complete ones.

        `include_incomplete` adds running, failed and deleted runs (the full history, so a
        deleted version's name is never reused). Raises NotFoundError for an unknown pool.
        """
        if not self.has_pool(pool):
            raise NotFoundError(
                f"pool {pool!r} not found; ingest it first (EncoderService.IngestPool)"
            )
        table = self._tables.read("embedding_versions", where=eq(pool=pool))
        if table is None:
            return []
        latest: dict[str, dict[str, Any]] = {}
        for row in sorted(table.to_pylist(), key=lambda r: r["recorded_at"]):
            row.pop("recorded_at")
            latest[row["version"]] = row
        infos = [VersionInfo(**r) for r in latest.values()]
        infos.sort(key=lambda v: (len(v.version), v.version))
        return [v for v in infos if include_incomplete or v.complete]

    def get_version(self, pool: str, version: str) -> VersionInfo:
        """A complete version. NotFoundError if unknown or deleted, FailedPrecondition if
        running or failed."""
        info = self._find_version(pool, version)
        if not info.complete:
            raise FailedPreconditionError(
                f"embedding version {pool}/{version} is {info.status}, not complete; "
                "wait for the run to finish or use a complete version"
            )
        return info

    def _find_version(self, pool: str, version: str) -> VersionInfo:
        """A version in any status but deleted; NotFoundError otherwise."""
        check_name("version", version)
        for info in self.list_versions(pool, include_incomplete=True):
            if info.version == version and info.status != DELETED:
                return info
        known = [v.version for v in self.list_versions(pool)]
        raise NotFoundError(
            f"embedding version {version!r} of pool {pool!r} not found; complete versions: "
            f"{known or 'none (run EncoderService.EmbedPool)'}"
        )

    def latest_version(self, pool: str) -> VersionInfo:
        versions = self.list_versions(pool)
        if not versions:
            raise FailedPreconditionError(
                f"pool {pool!r} has no complete embedding version; run EncoderService.EmbedPool"
            )
        return versions[-1]

    def read_embeddings(
        self, pool: str, version: str
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """A complete version as (ids (N,) int64 sorted, vectors (N, dim) float32).

        Reads batch by batch straight into preallocated arrays (one copy of the data).
        """
        info = self.get_version(pool, version)
        ds = self._version_dataset(pool, version)
        n = ds.count_rows()
        ids = np.empty(n, dtype=np.int64)
        vectors = np.empty((n, info.dim), dtype=np.float32)
        start = 0
        for batch in ds.to_batches(columns=["id", "vector"], batch_size=READ_BATCH_ROWS):
            stop = start + batch.num_rows
            ids[start:stop] = batch.column("id").to_numpy()
            vectors[start:stop] = _vector_rows(batch.column("vector"), info.dim)
            start = stop
        if n > 1 and not np.all(ids[1:] > ids[:-1]):
            order = np.argsort(ids, kind="stable")
            ids, vectors = ids[order], vectors[order]
        return ids, vectors

    def read_part(
        self, pool: str, version: str, index: int, count: int, spare_rows: int = 0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Part `index` of `count` of a complete version: the rows whose position in
        ascending id order is in [index * N // count, (index + 1) * N // count).

        Returns (ids (n,) int64 ascending, vectors (n + spare_rows, dim) float32), the first
        n rows holding the part and `spare_rows` uninitialised rows after them. Reads the id
        column, then only the part's rows, straight into the one preallocated array.
        """
        info = self.get_version(pool, version)
        ds = self._version_dataset(pool, version)
        all_ids = ds.to_table(columns=["id"]).column("id").to_numpy()
        n = len(all_ids)
        lo, hi = index * n // count, (index + 1) * n // count
        in_order = n < 2 or bool(np.all(all_ids[1:] > all_ids[:-1]))
        positions = np.arange(lo, hi) if in_order else np.argsort(all_ids, kind="stable")[lo:hi]
        ids = np.ascontiguousarray(all_ids[positions], dtype=np.int64)
        del all_ids
        vectors = np.empty((hi - lo + spare_rows, info.dim), dtype=np.float32)
        if in_order:
            start = 0
            batches = ds.to_batches(
                columns=["vector"], offset=lo, limit=hi - lo, batch_size=READ_BATCH_ROWS
            )
            for batch in batches:
                stop = start + batch.num_rows
                vectors[start:stop] = _vector_rows(batch.column("vector"), info.dim)
                start = stop
            return ids, vectors
        for start in range(0, hi - lo, TAKE_BATCH_ROWS):  # rows by id order, scattered on disk
            chunk = positions[start : start + TAKE_BATCH_ROWS]
            order = np.argsort(chunk)
            taken = ds.take(pa.array(chunk[order], pa.uint64()), columns=["vector"])
            block = _vector_rows(taken.column("vector").combine_chunks(), info.dim)
            vectors[start + order] = block
        return ids, vectors

    def lookup(self, pool: str, version: str, ids: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Vectors (len(ids), dim) float32 of `ids`, in their order, from a complete version.

        Finds row positions in the id column and takes only those rows. Raises NotFoundError
        if an id is not in the version.
        """
        index = self.version_index(pool, version)
        return self.take_rows(pool, version, index.positions(ids))

    def version_index(self, pool: str, version: str) -> VersionIndex:
        """The id column of a complete version, to find rows by id (reads only that column)."""
        self.get_version(pool, version)
        ds = self._version_dataset(pool, version)
        return VersionIndex.of(
            f"{pool}/{version}", ds.to_table(columns=["id"]).column("id").to_numpy()
        )

    def take_rows(
        self, pool: str, version: str, positions: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """Vectors (n, dim) float32 at row `positions` (n,) of a complete version, in order."""
        info = self.get_version(pool, version)
        rows, inverse = np.unique(positions, return_inverse=True)
        if len(rows) == 0:
            return np.empty((0, info.dim), dtype=np.float32)
        ds = self._version_dataset(pool, version)
        taken = ds.take(pa.array(rows, pa.uint64()), columns=["vector"]).column("vector")
        return _vector_rows(taken.combine_chunks(), info.dim)[inverse]

    def _version_dataset(self, pool: str, version: str) -> lance.LanceDataset:
        return lance.dataset(
            self._tables.uri_of(_emb_table(pool)),
            version=version,
            storage_options=self._tables.storage_options,
        )

    # ---------------------------------------------------------------- version lifecycle
    def pin_version(self, pool: str, version: str) -> VersionInfo:
        """Pin a complete version: cleanup keeps it and `delete_version` refuses it."""
        return self._set_pinned(pool, version, True)

    def unpin_version(self, pool: str, version: str) -> VersionInfo:
        """Undo `pin_version` (a no-op for an unpinned version)."""
        return self._set_pinned(pool, version, False)

    def _set_pinned(self, pool: str, version: str, pinned: bool) -> VersionInfo:
        with self._tables.lock:
            info = self.get_version(pool, version)
            if info.pinned != pinned:
                info = replace(info, pinned=pinned)
                self._record_version(info)
        return info

    def delete_version(self, pool: str, version: str) -> VersionInfo:
        """Delete a complete or failed version and its data; returns it, status "deleted".

        FailedPreconditionError for a pinned or running one, NotFoundError if unknown.
        """
        with self._tables.lock:
            info = self._find_version(pool, version)
            if info.pinned:
                raise FailedPreconditionError(
                    f"embedding version {pool}/{version} is pinned; unpin it first "
                    "(EncoderService.UnpinVersion)"
                )
            if info.status == RUNNING:
                raise FailedPreconditionError(
                    f"embedding run {pool}/{version} is still running; wait for it to finish"
                )
            return self._remove_versions(pool, [info])[0]

    def cleanup_versions(self, pool: str, keep_latest: int = 1) -> CleanupResult:
        """Delete every unpinned complete version older than the newest `keep_latest`.

        Data files of failed runs go too (unless a run of the pool is still running).
        """
        if keep_latest < 0:
            raise InvalidArgumentError(f"keep_latest must be >= 0, got {keep_latest}")
        with self._tables.lock:
            complete = self.list_versions(pool)
            old = complete[: max(0, len(complete) - keep_latest)]
            removed = [v for v in old if not v.pinned]
            self._remove_versions(pool, removed)
        gone = {v.version for v in removed}
        return CleanupResult(
            removed=[v.version for v in removed],
            kept=[v.version for v in complete if v.version not in gone],
        )

    def _remove_versions(self, pool: str, infos: list[VersionInfo]) -> list[VersionInfo]:
        """Record `infos` deleted, drop their tags, then let lance delete unreferenced data.

        Lance's cleanup keeps every tagged version (and the latest one: if that was deleted,
        an empty version is committed over it first). Files no manifest references are
        deleted too, unless a run of this pool is running (they may be its fragments).
        """
        deleted = [replace(v, status=DELETED) for v in infos]
        for info in deleted:
            self._record_version(info)
        uri = self._tables.uri_of(_emb_table(pool))
        try:
            ds = lance.dataset(uri, storage_options=self._tables.storage_options)
        except (ValueError, FileNotFoundError, OSError):
            return deleted  # no run ever committed: nothing on disk to clean
        tags = ds.tags.list()
        names = {v.version for v in deleted}
        for name in names & tags.keys():
            ds.tags.delete(name)
        tagged = {t["version"] for name, t in tags.items() if name not in names}
        if ds.version not in tagged and ds.get_fragments():
            ds = lance.LanceDataset.commit(
                uri,
                lance.LanceOperation.Overwrite(ds.schema, []),
                read_version=ds.version,
                storage_options=self._tables.storage_options,
            )
        running = any(
            v.status == RUNNING for v in self.list_versions(pool, include_incomplete=True)
        )
        ds.cleanup_old_versions(
            older_than=timedelta(0),
            delete_unverified=not running,
            error_if_tagged_old_versions=False,
        )
        return deleted

    def compare_versions(
        self, pool: str, version_a: str, version_b: str, sample: int = 1000, seed: int = 0
    ) -> VersionComparison:
        """Row counts, common ids and the mean cosine of the same id's vectors in both
        versions over a seeded sample of `sample` common ids."""
        if sample <= 0:
            raise InvalidArgumentError(f"sample must be > 0, got {sample}")
        a = self.get_version(pool, version_a)
        b = self.get_version(pool, version_b)
        ids_a = self._version_dataset(pool, version_a).to_table(columns=["id"]).column("id")
        ids_b = self._version_dataset(pool, version_b).to_table(columns=["id"]).column("id")
        common = np.intersect1d(ids_a.to_numpy(), ids_b.to_numpy())
        if a.dim != b.dim:
            return VersionComparison(a.row_count, b.row_count, len(common), 0, math.nan, False)
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(common, size=min(sample, len(common)), replace=False))
        x = self.lookup(pool, version_a, picked)
        y = self.lookup(pool, version_b, picked)
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        cosine = np.einsum("ij,ij->i", x, y) / np.maximum(norms, np.finfo(np.float32).tiny)
        mean = float(cosine.mean()) if len(picked) else math.nan
        return VersionComparison(a.row_count, b.row_count, len(common), len(picked), mean, True)
