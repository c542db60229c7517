"""Lance plumbing of one store root, and a filter builder that quotes its literals.

Each table is a Lance dataset ``<uri>/<table>.lance`` (LanceDB's layout), written with
pylance alone.
"""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path

import lance
import pyarrow as pa
from proxal.runtime.errors import InvalidArgumentError, NotFoundError, UnavailableError

# The one append-only log left in Lance (session state is in SQL): a record per embedding
# run. Compacted every COMPACT_EVERY appends, since every read scans its fragments (one per
# append: `get_version` took 450 ms over 1,000 of them, docs/hardening.md).
VERSIONS_LOG = "embedding_versions"
COMPACT_EVERY = 50


def quote(text: str) -> str:
    """`text` as a SQL string literal: in single quotes, each quote doubled (DataFusion)."""
    return "'" + text.replace("'", "''") + "'"


def eq(**columns: str) -> str:
    """A Lance filter matching every ``column = value``, e.g. ``eq(session="x", split="t")``
    is ``session = 'x' AND split = 't'``; values are quoted with `quote`."""
    if not columns:
        raise ValueError("eq() needs at least one column")
    return " AND ".join(f"{name} = {quote(value)}" for name, value in columns.items())


def in_ints(column: str, values: list[int]) -> str:
    """A Lance filter matching rows whose integer `column` is one of `values`."""
    return f"{column} IN ({','.join(str(int(v)) for v in values)})"


class Tables:
    """The Lance datasets under one store root: open, read with a filter, append.

    `lock` (reentrant) serialises writes; the store's read-modify-write steps hold it too.
    Appends to VERSIONS_LOG are compacted every COMPACT_EVERY appends by this object.
    """

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri
        self.storage_options = storage_options
        self.lock = threading.RLock()
        self._appends = 0  # to VERSIONS_LOG, by this object

    def uri_of(self, name: str) -> str:
        """The dataset URI of table `name`."""
        return f"{self.uri}/{name}.lance"

    def dataset(self, name: str) -> lance.LanceDataset | None:
        """Table `name`'s latest version, or None if there is none: reads its manifest only."""
        try:
            return lance.dataset(self.uri_of(name), storage_options=self.storage_options)
        except (ValueError, FileNotFoundError, OSError):
            return None

    def probe(self) -> None:
        """Raise UnavailableError unless the storage answers: a local root must be a
        directory that lists; on object storage, the versions table must open or be
        reported missing (a refused or timed-out request is not an answer)."""
        root = local_store_path(self.uri)
        if root is not None:
            try:
                with os.scandir(root):
                    return
            except OSError as exc:
                raise UnavailableError(
                    f"the store directory {self.uri!r} cannot be read: {exc.strerror or exc}"
                ) from None
        try:
            lance.dataset(self.uri_of(VERSIONS_LOG), storage_options=self.storage_options)
        except (ValueError, OSError) as exc:
            if "was not found" not in str(exc):
                first = str(exc).splitlines()[0][:300]
                raise UnavailableError(f"the store {self.uri!r} does not answer: {first}") from None

    def read(
        self, name: str, where: str | None = None, columns: list[str] | None = None
    ) -> pa.Table | None:
        """Rows of table `name` matching the filter `where` (see `eq`), None if no table."""
        ds = self.dataset(name)
        return None if ds is None else ds.to_table(filter=where, columns=columns)

    def append(self, name: str, rows: pa.Table) -> None:
        """Append `rows` to table `name` in one commit, creating the table on first use."""
        with self.lock:
            mode = "create" if self.dataset(name) is None else "append"
            lance.write_dataset(
                rows,
                self.uri_of(name),
                schema=rows.schema,
                mode=mode,
                storage_options=self.storage_options,
            )
            if name == VERSIONS_LOG:
                self._appends += 1
                if self._appends % COMPACT_EVERY == 0:
                    self.compact(name)

    def compact(self, name: str) -> None:
        """Merge a table's small per-commit fragments, keeping row order, so reads stay
        fast; files of versions older than an hour go (nothing reads those any more)."""
        ds = lance.dataset(self.uri_of(name), storage_options=self.storage_options)
        ds.optimize.compact_files()
        ds.cleanup_old_versions(older_than=timedelta(hours=1))

    def delete(self, name: str, where: str) -> None:
        """Delete the rows of table `name` matching `where` (no-op if there is no table)."""
        ds = self.dataset(name)
        if ds is not None:
            ds.delete(where)


def local_store_path(uri: str) -> Path | None:
    """The directory of a local store URI (a path or ``file://``), None for object storage."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


def check_local_store(uri: str, create: bool) -> None:
    """Refuse a local store path that is a file, or missing when not `create` (see Store)."""
    path = local_store_path(uri)
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(
            f"the store path {uri!r} is a file, not a store directory; pass the directory of "
            "a proxal store (--store, env PROXAL_STORE)"
        )
    if path.is_dir():
        return
    if not create:
        raise NotFoundError(
            f"no store at {uri!r} (--store, env PROXAL_STORE): check the path; the encoder "
            "service creates a store when it starts, and `proxal ingest` adds pools to it"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot create the store directory {uri!r}: {exc.strerror}"
        ) from None
