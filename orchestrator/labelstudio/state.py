"""Which pool item each Label Studio annotation labelled, kept in a SQLite file: Label
Studio's delete events carry only annotation ids, and the backend may restart between an
annotation and its deletion."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS annotations (project TEXT NOT NULL, annotation INTEGER NOT "
    "NULL, item INTEGER NOT NULL, PRIMARY KEY (project, annotation))"
)


class AnnotationIndex:
    """(project, annotation id) -> pool id, in `path` (":memory:" for none on disk)."""

    def __init__(self, path: str | Path):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)

    def record(self, project: str, pairs: Sequence[tuple[int, int]]) -> None:
        """Remember (annotation id, pool id) pairs of `project` (a later write wins)."""
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO annotations VALUES (?, ?, ?)",
                [(project, a, item) for a, item in pairs],
            )

    def items(self, project: str, annotations: Sequence[int]) -> dict[int, int]:
        """{annotation id: pool id} for the annotations of `project` it knows."""
        marks = ",".join("?" * len(annotations))
        with self._lock:
            rows = self._db.execute(
                f"SELECT annotation, item FROM annotations WHERE project = ? AND annotation "
                f"IN ({marks})",
                [project, *annotations],
            ).fetchall()
        return {int(a): int(i) for a, i in rows}

    def close(self) -> None:
        self._db.close()
