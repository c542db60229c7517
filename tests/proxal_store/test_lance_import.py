"""`proxal db import-lance`: session state an older proxal kept in LanceDB tables is copied
into the session database, and reads back the same (a round trip on both databases)."""

from __future__ import annotations

import json
from pathlib import Path

import lance
import pyarrow as pa
import pytest
from proxal.orchestrator_service.cli.main import main
from proxal.store import RoundRecord, Store
from proxal.store.labels import GRANT, RELEASE, LabelEvent, LabelLog, LeaseEvent, active_leases

# The Lance schemas proxal wrote before session state moved to SQL (commit b6dfc1e).
OLD = {
    "sessions": pa.schema(
        [("session", pa.string()), ("pool", pa.string()), ("embedding_version", pa.string()),
         ("strategy", pa.string()), ("batch_size", pa.int32()), ("seed", pa.int64()),
         ("split", pa.string()), ("config", pa.string()), ("created_at", pa.string())]
    ),
    "labels": pa.schema(
        [("session", pa.string()), ("pool", pa.string()), ("id", pa.int64()),
         ("label", pa.string()), ("source", pa.string()), ("created_at", pa.string()),
         ("kind", pa.string()), ("request_id", pa.string()), ("request_hash", pa.string()),
         ("annotator", pa.string()), ("undoes", pa.string())]
    ),
    "leases": pa.schema(
        [("session", pa.string()), ("kind", pa.string()), ("lease_id", pa.string()),
         ("annotator", pa.string()), ("ids", pa.list_(pa.int64())), ("expires_at", pa.float64()),
         ("created_at", pa.string())]
    ),
    "rounds": pa.schema(
        [("session", pa.string()), ("round", pa.int64()), ("strategy", pa.string()),
         ("embedding_version", pa.string()), ("proxy_spec", pa.string()),
         ("selected_ids", pa.list_(pa.int64())), ("scores_summary", pa.string()),
         ("timings", pa.string()), ("metrics", pa.string()), ("labels_total", pa.int64()),
         ("created_at", pa.string())]
    ),
}  # fmt: skip
NOW = 1_800_000_000.0
T = "2026-01-01T00:00:0{}+00:00"
EVENTS = [
    LabelEvent("label", 4, "a", "r1", "h1", "ann", "", "human", T.format(1)),
    LabelEvent("label", 5, "b", "r1", "h1", "ann", "", "human", T.format(1)),
    LabelEvent("skip", 6, "", "r2", "h2", "ann", "", "human", T.format(2)),
    LabelEvent("undo", 6, "", "r3", "h3", "ann", "r2", "human", T.format(3)),
    LabelEvent("label", 7, "a", "", "", "", "", "oracle", T.format(4)),
    LabelEvent("import", 4, "b", "r4", "h4", "imp", "", "import", T.format(5)),
]
LEASES = [
    LeaseEvent(GRANT, "old", "ann", (1, 2), NOW - 10, T.format(1)),  # expired
    LeaseEvent(GRANT, "gone", "bob", (3,), NOW + 600, T.format(2)),
    LeaseEvent(RELEASE, "gone", "bob", (), 0.0, T.format(3)),
    LeaseEvent(GRANT, "live", "ann", (8, 9), NOW + 600, T.format(4)),
    LeaseEvent(GRANT, "clash", "cat", (9, 10), NOW + 600, T.format(5)),  # 9 held by "live"
]
ROUNDS = [
    RoundRecord("s1", 0, "margin", "v1", [4, 5], 0, {"kind": "logreg"}, {}, {"round_s": 0.1},
                {}, T.format(1)),
    RoundRecord("s1", 1, "margin", "v1", [8, 9], 3, {"kind": "logreg"}, {"max": 0.5}, {}, {},
                T.format(4)),
]  # fmt: skip


def _write_old_store(root: Path) -> None:
    def write(table: str, rows: list[dict[str, object]]) -> None:
        lance.write_dataset(
            pa.Table.from_pylist(rows, schema=OLD[table]), str(root / f"{table}.lance")
        )

    config = {"classes": ["a", "b"], "lineage": ["v1"]}
    write("sessions", [
        {"session": s, "pool": "p", "embedding_version": "v1", "strategy": "margin",
         "batch_size": 2, "seed": 0, "split": "train", "config": json.dumps(config),
         "created_at": T.format(i)}
        for i, s in enumerate(("s1", "s2"))
    ])  # fmt: skip
    write("labels", [{**e.__dict__, "session": "s1", "pool": "p"} for e in EVENTS])
    write("leases", [{**e.__dict__, "ids": list(e.ids), "session": "s1"} for e in LEASES])
    write("rounds", [
        {**r.__dict__, **{k: json.dumps(getattr(r, k)) for k in
                          ("proxy_spec", "scores_summary", "timings", "metrics")}}
        for r in ROUNDS
    ])  # fmt: skip


def test_import_round_trips_sessions_labels_rounds_and_live_leases(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    _write_old_store(root)
    monkeypatch.setattr("time.time", lambda: NOW)
    assert main(["db", "import-lance", "--store", str(root), "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "2 session(s) imported, 0 already there; 2 rounds, 2 live leases" in out

    store = Store(str(root), db=db_url)
    assert [s.session for s in store.list_sessions()] == ["s1", "s2"]
    assert store.get_session("s1").config["classes"] == ["a", "b"]
    assert store.read_label_events("s1") == EVENTS
    log = store.read_label_log("s1")
    assert log.labels == {5: "b", 7: "a", 4: "b"} and not log.skipped
    assert log.requests["r2"].undone_by == "r3"  # undo still knows what it reverted
    assert store.read_rounds("s1") == ROUNDS
    live = active_leases(store.read_lease_events("s1"), LabelLog.replay(EVENTS), NOW)
    assert [(x.lease_id, x.ids) for x in live] == [("live", (8, 9)), ("clash", (10,))]
    assert store.read_label_events("s2") == []

    assert main(["db", "import-lance", "--store", str(root), "--db", db_url]) == 0
    assert "0 session(s) imported, 2 already there" in capsys.readouterr().out
    assert store.read_label_events("s1") == EVENTS  # nothing doubled
