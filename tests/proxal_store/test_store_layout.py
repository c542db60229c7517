"""The store writes pools with pylance alone, in LanceDB's layout (one `<store>/<table>.lance`
each), and session state to a SQLite file beside them."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import lance
from proxal.store.labels import LABEL, LabelEvent
from proxal.store.store import SessionRecord, Store

REPO = Path(__file__).resolve().parents[2]


def test_the_store_does_not_load_lancedb() -> None:
    """lancedb (a second copy of the Lance core, ~180 MB in the proxy image) is not needed."""
    code = (
        "import sys, proxal.store.store\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'lancedb'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[]"


def test_pools_are_lance_datasets_and_sessions_a_sqlite_file(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    store.add_pool_rows("p", "train", ["a", "b", "c"], ["x", None, "y"])
    for name in ("s1", "s2"):
        store.create_session(SessionRecord(name, "p", "v1", "margin", 2, 0))
        store.append_label_events(name, "p", [LabelEvent(LABEL, 0, "x")])
    store.delete_session("s2")
    store.close()

    files = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert [f for f in files if f.endswith(".lance")] == ["pool__p.lance"]
    assert "proxal.db" in files
    pool = lance.dataset(str(tmp_path / "store" / "pool__p.lance")).to_table()
    assert pool.column("text").to_pylist() == ["a", "b", "c"]
    with contextlib.closing(sqlite3.connect(tmp_path / "store" / "proxal.db")) as db:
        assert db.execute("SELECT session FROM sessions").fetchall() == [("s1",)]
        assert db.execute("SELECT session, id, label FROM label_events").fetchall() == [
            ("s1", 0, "x")  # s2's rows deleted with it
        ]
