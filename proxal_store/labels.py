"""A session's label log: append-only events, replayed into the session's current state.

Every write to a session (labels, skips, imports, undos) is a batch of events sharing one
client request id, committed as one append. The current state is a pure function of the
log (`LabelLog.replay`), so nothing a restart would lose lives outside the store.

Undo does not delete: it appends events naming the request it reverts, and replay skips
that request's events. Replaying the remaining events in order gives the state as if the
reverted request had never been made, including when a later request changed the same item.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

LABEL = "label"  # a person's (or an oracle's) label
IMPORT = "import"  # a label made elsewhere, imported
SKIP = "skip"  # not shown again in this session
UNDO = "undo"  # reverts the request named in `undoes`
REMOVE = "remove"  # takes the item's label or skip away (it goes back to the pool)
KINDS = (LABEL, IMPORT, SKIP, UNDO, REMOVE)
UNDOABLE = (LABEL, SKIP)


@dataclass(frozen=True)
class LabelEvent:
    """One row of the log: `kind` applied to pool item `id` by `request_id`."""

    kind: str
    id: int
    label: str = ""  # the class for LABEL/IMPORT; for UNDO, the label it took back
    request_id: str = ""
    request_hash: str = ""  # digest of the request, to tell a retry from a reused id
    annotator: str = ""
    undoes: str = ""  # UNDO: the request id reverted
    source: str = "human"
    created_at: str = ""


@dataclass
class Request:
    """The events one request wrote, as replay saw them."""

    request_id: str
    kind: str
    request_hash: str
    annotator: str
    events: list[LabelEvent] = field(default_factory=list)
    undone_by: str = ""

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.events]


@dataclass
class LabelLog:
    """A session's state after replaying its events in commit order.

    `labels` maps id -> class, in the order the labels were given (a relabel moves the id
    to the end); `skipped` holds ids skipped and not labelled since. `requests` has every
    request id seen, in commit order (events without a request id are not listed there).
    """

    labels: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, None] = field(default_factory=dict)  # an ordered set
    requests: dict[str, Request] = field(default_factory=dict)
    annotator_of: dict[int, str] = field(default_factory=dict)
    events: int = 0

    @classmethod
    def replay(cls, events: Iterable[LabelEvent]) -> LabelLog:
        log = cls()
        rows = list(events)
        log.events = len(rows)
        undone = {e.undoes: e.request_id for e in rows if e.kind == UNDO}
        for event in rows:
            if event.request_id:
                request = log.requests.get(event.request_id)
                if request is None:
                    request = log.requests[event.request_id] = Request(
                        event.request_id, event.kind, event.request_hash, event.annotator
                    )
                    request.undone_by = undone.get(event.request_id, "")
                request.events.append(event)
                if request.undone_by:
                    continue
            if event.kind in (LABEL, IMPORT):
                log.labels.pop(event.id, None)
                log.labels[event.id] = event.label
                log.annotator_of[event.id] = event.annotator
                log.skipped.pop(event.id, None)
            elif event.kind == SKIP:
                log.skipped[event.id] = None
            elif event.kind == REMOVE:
                log.labels.pop(event.id, None)
                log.annotator_of.pop(event.id, None)
                log.skipped.pop(event.id, None)
        return log

    def decided(self, item: int) -> bool:
        """Labelled or skipped: not to be handed out again."""
        return item in self.labels or item in self.skipped

    def last_undoable(self, annotator: str) -> Request | None:
        """The annotator's latest label or skip request that is not undone yet."""
        for request in reversed(self.requests.values()):
            if (
                request.annotator == annotator
                and request.kind in UNDOABLE
                and not request.undone_by
            ):
                return request
        return None


GRANT = "grant"
RELEASE = "release"


@dataclass(frozen=True)
class LeaseEvent:
    """A lease granted (items reserved for an annotator until `expires_at`) or released."""

    kind: str  # GRANT | RELEASE
    lease_id: str
    annotator: str
    ids: tuple[int, ...] = ()
    expires_at: float = 0.0  # Unix seconds
    created_at: str = ""


@dataclass(frozen=True)
class Lease:
    lease_id: str
    annotator: str
    ids: tuple[int, ...]  # the items not labelled or skipped yet
    expires_at: float


def active_leases(events: Iterable[LeaseEvent], log: LabelLog, now: float) -> list[Lease]:
    """Leases granted, not released, not expired at `now`, with undecided items left."""
    granted: dict[str, LeaseEvent] = {}
    for event in events:
        if event.kind == GRANT:
            granted[event.lease_id] = event
        else:
            granted.pop(event.lease_id, None)
    out = []
    for grant in granted.values():
        left = tuple(i for i in grant.ids if not log.decided(i))
        if grant.expires_at > now and left:
            out.append(Lease(grant.lease_id, grant.annotator, left, grant.expires_at))
    return out
