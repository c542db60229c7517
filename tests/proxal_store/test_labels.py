"""The label log's replay (undo, relabel, skip) and leases, as pure functions."""

from __future__ import annotations

from proxal.store.labels import (
    GRANT,
    IMPORT,
    LABEL,
    RELEASE,
    SKIP,
    UNDO,
    LabelEvent,
    LabelLog,
    LeaseEvent,
    active_leases,
)


def ev(
    kind: str, item: int, label: str = "", rid: str = "", who: str = "a", undoes: str = ""
) -> LabelEvent:
    return LabelEvent(kind, item, label, rid, "h", who, undoes)


def test_replay_applies_labels_in_order_and_relabels_move_to_the_end() -> None:
    log = LabelLog.replay(
        [
            ev(LABEL, 1, "x", "r1"),
            ev(LABEL, 2, "y", "r1"),
            ev(LABEL, 1, "z", "r2"),
            ev(IMPORT, 3, "x", "r3", "imp"),
        ]
    )
    assert list(log.labels.items()) == [(2, "y"), (1, "z"), (3, "x")]
    assert log.requests["r1"].ids == [1, 2] and log.annotator_of[3] == "imp"
    assert log.events == 4


def test_undo_removes_a_request_even_under_later_changes() -> None:
    events = [
        ev(LABEL, 1, "x", "r1"),
        ev(LABEL, 1, "y", "r2", who="b"),  # b relabels after a
        ev(SKIP, 2, "", "r3"),
        ev(UNDO, 1, "x", "u1", undoes="r1"),  # a undoes r1: b's later label stands
    ]
    log = LabelLog.replay(events)
    assert log.labels == {1: "y"} and list(log.skipped) == [2]
    assert log.requests["r1"].undone_by == "u1"
    assert log.last_undoable("a").request_id == "r3"  # type: ignore[union-attr]
    log = LabelLog.replay([*events, ev(UNDO, 2, "", "u2", undoes="r3")])
    assert not log.skipped and log.last_undoable("a") is None
    assert log.last_undoable("b").request_id == "r2"  # type: ignore[union-attr]
    # undoing b's relabel brings back nothing of r1 (undone): item 1 has no label
    log = LabelLog.replay([*events, ev(UNDO, 1, "y", "u3", who="b", undoes="r2")])
    assert 1 not in log.labels


def test_a_label_clears_a_skip_and_imports_are_not_undoable() -> None:
    log = LabelLog.replay(
        [ev(SKIP, 4, "", "r1"), ev(LABEL, 4, "x", "r2"), ev(IMPORT, 5, "y", "r3")]
    )
    assert log.labels == {4: "x"} | {5: "y"} and not log.skipped
    assert log.decided(4) and not log.decided(6)
    assert log.last_undoable("a").request_id == "r2"  # type: ignore[union-attr]


def test_leases_end_when_released_expired_or_decided() -> None:
    log = LabelLog.replay([ev(LABEL, 1, "x", "r1"), ev(SKIP, 2, "", "r2")])
    events = [
        LeaseEvent(GRANT, "l1", "a", (1, 2, 3), expires_at=100.0),
        LeaseEvent(GRANT, "l2", "b", (4,), expires_at=50.0),
        LeaseEvent(GRANT, "l3", "c", (5,), expires_at=100.0),
        LeaseEvent(RELEASE, "l3", "c"),
        LeaseEvent(GRANT, "l4", "d", (1, 2), expires_at=100.0),  # all decided
    ]
    leases = active_leases(events, log, now=60.0)
    assert [(x.lease_id, x.ids) for x in leases] == [("l1", (3,))]
    assert active_leases(events, log, now=40.0)[1].ids == (4,)
