"""Shard-owning replicas: a proxy started with ``--shard I/R`` holds only part I of R of
every version (the rows whose position in ascending id order is in [I*N//R, (I+1)*N//R)).

A part is read from the store without the rest of the version (`Store.read_part`) into
one array with `DEFAULT_SPARE_ROWS` rows of headroom after it. Fitting needs the labelled
rows' vectors, mostly in other parts: they are fetched by id (`ExactRows`) and appended
to the headroom once, so a request sees the part and its labelled rows as one
`PartView` (a `LoadedVersion`: rows [0, owned) are the part, rows after it the appended
labelled rows) without copying the part. The same model is fitted as on a whole-version
replica, and only the part's unlabeled rows are scored. Should the headroom fill up, a
request copies the part once with its new rows (slow, twice the memory; logged).

What a shard-owning replica serves (`ShardOwner.route`):

* ``shard.part`` = its own part: from memory.
* another part of the same count with ``adopt``: that part is loaded on demand into a
  small LRU of adopted parts (counted: `ShardOwner.adoptions`) - slower, not failed;
  without ``adopt``: FAILED_PRECONDITION naming the part it owns.
* no shard but candidate ids (a two-stage merge's stage 2): the labelled and candidate
  rows are fetched by id and the request runs on just them, as on a whole replica.
* a range, an id list, or no shard and no candidates (the whole pool): FAILED_PRECONDITION.
* a part index >= count, count < 1, or a count other than the replica's: INVALID_ARGUMENT.

Predict fetches the rows of ids outside the owned part by id; those inside come from it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from proxal.proxy_service import selection, sequential
from proxal.proxy_service.cache import (
    SHOWN_UNKNOWN_IDS,
    LoadedVersion,
    OnceLRU,
    _check_finite,
)
from proxal.proxy_service.rows import ExactRows
from proxal.runtime.deadline import Deadline
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import Store

log = logging.getLogger(__name__)

DEFAULT_SPARE_ROWS = 65_536  # labelled rows from other parts one loaded part can hold
ADOPTED_PARTS = 1  # parts of other replicas kept loaded after an adopt (LRU)
_ORDINAL = re.compile(r"-(\d+)$")

RowFetcher = Callable[[EmbeddingVersion, npt.NDArray[np.int64]], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class ShardPart:
    """Part `index` of `count` of every version (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, value: str, hostname: str) -> ShardPart:
        """``I/R``, or ``auto/R`` taking I from `hostname`'s trailing ordinal (``proxy-3``:
        3, a StatefulSet pod); ValueError saying what to write otherwise."""
        index_text, sep, count_text = value.strip().partition("/")
        if not sep or not count_text.isdigit():
            raise ValueError(f"--shard must be I/R or auto/R (R a number), got {value!r}")
        count = int(count_text)
        if index_text == "auto":
            match = _ORDINAL.search(hostname)
            if match is None:
                raise ValueError(
                    f"--shard auto/{count}: hostname {hostname!r} ends in no -<ordinal> "
                    "(a StatefulSet pod is <name>-<ordinal>); give --shard I/R"
                )
            index_text = match.group(1)
        if not index_text.isdigit():
            raise ValueError(f"--shard must be I/R or auto/R, got {value!r}")
        index = int(index_text)
        if count < 1 or index >= count:
            raise ValueError(f"--shard {index}/{count}: need R >= 1 and 0 <= I < R")
        return cls(index, count)


@dataclass(frozen=True, eq=False)
class PartView(LoadedVersion):
    """A loaded part as a version: rows [0, owned) hold the part (ids ascending), rows after
    it labelled rows of other parts, found through `extra` (id -> row)."""

    owned: int = 0
    part: tuple[int, int] = (0, 1)
    extra: Mapping[int, int] = field(default_factory=dict)

    def part_rows(self, index: int, count: int) -> npt.NDArray[np.intp]:
        """The owned rows (owned,); FailedPreconditionError for any other part."""
        if (index, count) != self.part:
            raise FailedPreconditionError(
                f"this view holds part {self.part[0]}/{self.part[1]}, not {index}/{count}"
            )
        return np.arange(self.owned)

    def rows(self, ids: npt.NDArray[np.int64], field: str) -> npt.NDArray[np.intp]:
        """Row indices (n,) of `ids` (n,) in the part or among the appended rows."""
        owned_ids = self.ids[: self.owned]
        pos = np.searchsorted(owned_ids, ids)
        found = pos < self.owned
        found[found] = owned_ids[pos[found]] == ids[found]
        if not found.all():
            extra = np.array([self.extra.get(int(i), -1) for i in ids[~found]], dtype=np.intp)
            pos[~found] = extra
            if (extra < 0).any():
                unknown = np.unique(ids[~found][extra < 0])
                raise NotFoundError(
                    f"{field}: {len(unknown)} id(s) not in part {self.part[0]}/{self.part[1]} "
                    f"of embedding version {self.name}, e.g. "
                    f"{unknown[:SHOWN_UNKNOWN_IDS].tolist()}"
                )
        return pos


class LoadedPart:
    """One part of a version in memory: ids (n,) ascending, a (n + spare, d) float32 buffer
    whose first n rows are the part's vectors and the rest headroom for labelled rows."""

    def __init__(
        self,
        name: EmbeddingVersion,
        part: ShardPart,
        ids: npt.NDArray[np.int64],
        buffer: npt.NDArray[np.float32],
    ):
        self.name, self.part, self.owned = name, part, len(ids)
        self.buffer = buffer
        self.ids = np.empty(len(buffer), dtype=np.int64)
        self.ids[: self.owned] = ids
        self._used = 0  # appended rows after the part
        self._extra: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held: ids and vectors, headroom included."""
        return int(self.ids.nbytes + self.buffer.nbytes)

    def outside(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The distinct ids (m,) of `ids` that are not in the part."""
        unique = np.unique(ids)
        owned_ids = self.ids[: self.owned]
        pos = np.minimum(np.searchsorted(owned_ids, unique), max(self.owned - 1, 0))
        inside = (owned_ids[pos] == unique) if self.owned else np.zeros(len(unique), bool)
        return unique[~inside]

    def view(self, labelled: npt.NDArray[np.int64], fetch: RowFetcher) -> PartView:
        """The part plus the rows of `labelled` ids outside it, fetched once and appended."""
        outside = self.outside(labelled)
        with self._lock:
            new = np.array([i for i in outside.tolist() if i not in self._extra], np.int64)
            vectors = fetch(self.name, new) if len(new) else np.zeros((0, self.buffer.shape[1]))
            _check_finite(self.name, new, vectors.astype(np.float32, copy=False))
            extra = dict(self._extra)
            n = self.owned + self._used
            if len(new) <= len(self.buffer) - n:
                self.buffer[n : n + len(new)] = vectors
                self.ids[n : n + len(new)] = new
                self._extra.update(zip(new.tolist(), range(n, n + len(new)), strict=True))
                self._used += len(new)
                extra, n = dict(self._extra), n + len(new)
                all_ids, all_vectors = self.ids[:n], self.buffer[:n]
            else:  # headroom full: this request alone copies the part with its rows
                log.warning("part %s of %s: headroom full, copying the part", self.part, self.name)
                all_ids = np.concatenate([self.ids[:n], new])
                all_vectors = np.concatenate([self.buffer[:n], vectors.astype(np.float32)])
                extra.update(zip(new.tolist(), range(n, n + len(new)), strict=True))
        return PartView(
            name=self.name,
            ids=all_ids,
            vectors=all_vectors,
            owned=self.owned,
            part=(self.part.index, self.part.count),
            extra=extra,
        )


def fetched_version(
    name: EmbeddingVersion, ids: npt.NDArray[np.int64], fetch: RowFetcher
) -> LoadedVersion:
    """A small version of just `ids` (deduplicated, ascending) with their fetched rows."""
    unique = np.unique(ids)
    vectors = np.ascontiguousarray(fetch(name, unique), dtype=np.float32)
    _check_finite(name, unique, vectors)
    return LoadedVersion(name=name, ids=unique, vectors=vectors)


class ShardOwner:
    """The parts a `--shard I/R` replica holds and how it serves each request (module doc).

    `fetch` returns float32 rows (m, d) of ids (m,) of a version (default: `ExactRows`,
    Lance take by id with a small LRU).
    """

    def __init__(
        self,
        store: Store,
        part: ShardPart,
        max_versions: int,
        fetch: RowFetcher | None = None,
        spare_rows: int = DEFAULT_SPARE_ROWS,
    ):
        self.store, self.part, self.spare_rows = store, part, spare_rows
        self.fetch: RowFetcher = fetch or ExactRows(store).get
        self.own: OnceLRU[EmbeddingVersion, LoadedPart] = OnceLRU(max_versions)
        self.adopted: OnceLRU[tuple[EmbeddingVersion, int], LoadedPart] = OnceLRU(ADOPTED_PARTS)
        self.adoptions = 0  # parts of other replicas loaded on an adopt

    def parts(self) -> list[LoadedPart]:
        """Every part held, own and adopted."""
        return self.own.values() + self.adopted.values()

    def _load(self, version: EmbeddingVersion, part: ShardPart) -> LoadedPart:
        spare = self.spare_rows if part == self.part else 0
        ids, buffer = self.store.read_part(version.pool, version.tag, part.index, part.count, spare)
        _check_finite(version, ids, buffer[: len(ids)])
        loaded = LoadedPart(version, part, ids, buffer)
        log.info("loaded part %s of %s: %d rows", part, version, len(ids))
        return loaded

    def loaded(self, version: EmbeddingVersion, part: ShardPart) -> LoadedPart:
        """Part `part` of `version`: the owned one, or an adopted one (loaded on demand)."""
        if part == self.part:
            return self.own.get(version, lambda: self._load(version, part))[0]
        value, hit = self.adopted.get((version, part.index), lambda: self._load(version, part))
        if not hit:
            self.adoptions += 1
        return value

    def drop_if_deleted(self, version: EmbeddingVersion) -> None:
        """Forget `version`'s parts and raise NotFoundError if the store no longer has it."""
        adopted = [key for key in self.adopted.keys() if key[0] == version]  # noqa: SIM118
        held = version in self.own or bool(adopted)
        if not held or self.store.has_version(version.pool, version.tag):
            return
        self.own.discard(version)
        for key in adopted:
            self.adopted.discard(key)
        raise NotFoundError(
            f"embedding version {version.tag!r} of pool {version.pool!r} was deleted"
        )

    def route(
        self, shard: selection.Shard | None, adopt: bool, candidates: bool
    ) -> ShardPart | None:
        """The part a Select with this shard runs on; None to run on fetched rows (no shard,
        candidate ids given). InvalidArgumentError / FailedPreconditionError (module doc)."""
        own = self.part
        if shard is not None and shard.part is not None:
            index, count = shard.part
            if count < 1 or not 0 <= index < count:
                raise InvalidArgumentError(
                    f"shard.part must have count >= 1 and 0 <= index < count, got {index}/{count}"
                )
            if count != own.count:
                raise InvalidArgumentError(
                    f"shard.part {index}/{count}: this replica splits versions into "
                    f"{own.count} parts (it owns part {own}); send parts of {own.count}"
                )
            if index == own.index or adopt:
                return ShardPart(index, count)
            raise FailedPreconditionError(
                f"this replica owns part {own} of every version, not {index}/{count}; send "
                f"part {index}/{count} to its owner, or here with adopt=true if it is gone"
            )
        if shard is None and candidates:
            return None
        asked = "no shard and no candidate ids" if shard is None else "an id range or id list"
        raise FailedPreconditionError(
            f"this replica owns part {own} of every version and holds no other rows; the "
            f"request sent {asked}: send shard.part {own} (Describe says which part a "
            "replica owns), or candidate ids"
        )

    def select_loader(
        self, version: EmbeddingVersion, query: selection.Query, adopt: bool
    ) -> tuple[selection.Loader, selection.Query, bool]:
        """(loader, query, empty) to run `query` with `selection.select` or a sequential
        session: the part's view (candidate ids narrowed to the part) or the fetched rows;
        `empty` when none of the request's candidate ids lies in the part."""
        has_candidates = query.candidate_ids is not None and len(query.candidate_ids) > 0
        part = self.route(query.shard, adopt, has_candidates)
        selection.check_query(query, check_k=False)  # bad requests fail before any load
        if part is None:
            wanted = np.concatenate([query.training.ids, np.asarray(query.candidate_ids)])
            return lambda: fetched_version(version, wanted, self.fetch), query, False
        loaded = self.loaded(version, part)
        empty = False
        if has_candidates:
            kept = np.unique(np.asarray(query.candidate_ids))
            owned_ids = loaded.ids[: loaded.owned]
            in_span = (kept >= owned_ids[0]) & (kept <= owned_ids[-1]) if loaded.owned else kept < 0
            query = dataclasses.replace(query, candidate_ids=kept[in_span])
            empty = not in_span.any()
        return lambda: loaded.view(query.training.ids, self.fetch), query, empty

    def select(
        self,
        version: EmbeddingVersion,
        query: selection.Query,
        adopt: bool,
        models: selection.ModelCache,
        deadline: Deadline,
        threads: int,
    ) -> selection.SelectionResult:
        """`selection.select` on the part (or fetched rows) this request routes to; load_s
        includes loading the part when it was not held yet."""
        selection.check_query(query)  # k too, before any load
        start = time.perf_counter()
        load, query, empty = self.select_loader(version, query, adopt)
        prepared = time.perf_counter() - start
        if empty:  # no candidate of the request lies in this part
            return _empty(query.strategy, selection.Timings(load_s=prepared))
        result = selection.select(load, models, query, deadline=deadline, threads=threads)
        timings = dataclasses.replace(result.timings, load_s=result.timings.load_s + prepared)
        return dataclasses.replace(result, timings=timings)

    def sequential(
        self,
        version: EmbeddingVersion,
        query: selection.Query,
        adopt: bool,
        deadline: Deadline,
        threads: int,
        warm_start: bool,
    ) -> tuple[sequential.SequentialSession, sequential.Step]:
        """A sequential session over the part (or fetched candidates) and its first step;
        InvalidArgumentError when none of its candidate ids lies in the part."""
        load, query, empty = self.select_loader(version, query, adopt)
        if empty:
            raise InvalidArgumentError(
                "none of the candidate ids lies in the requested shard part; there is "
                "nothing to select"
            )
        return sequential.SequentialSession.start(
            load, query, deadline=deadline, threads=threads, warm_start=warm_start
        )

    def predict_loader(
        self,
        version: EmbeddingVersion,
        training_ids: npt.NDArray[np.int64],
        ids: npt.NDArray[np.int64],
    ) -> selection.Loader:
        """A loader of the rows of `training_ids` and `ids` alone: those in the owned part
        from memory (if it is loaded), the others fetched by id."""
        wanted = np.unique(np.concatenate([training_ids, ids]))
        loaded = self.own.get(version, lambda: self._load(version, self.part))[0]

        def load() -> LoadedVersion:
            outside = loaded.outside(wanted)
            inside = np.setdiff1d(wanted, outside, assume_unique=True)
            rows = np.searchsorted(loaded.ids[: loaded.owned], inside)
            vectors = np.empty((len(wanted), loaded.buffer.shape[1]), dtype=np.float32)
            vectors[np.searchsorted(wanted, inside)] = loaded.buffer[rows]
            if len(outside):
                fetched = fetched_version(version, outside, self.fetch)
                vectors[np.searchsorted(wanted, outside)] = fetched.vectors
            return LoadedVersion(name=version, ids=wanted, vectors=vectors)

        return load


class PartsCollector(Collector):
    """A shard-owning replica's gauges and counter, read at scrape time."""

    def __init__(self, owner: ShardOwner):
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        parts = self._owner.parts()
        yield GaugeMetricFamily(
            "proxal_proxy_parts_loaded", "Version parts held in memory.", value=len(parts)
        )
        yield GaugeMetricFamily(
            "proxal_proxy_parts_loaded_bytes",
            "Bytes of the version parts held (ids and vectors, headroom included).",
            value=sum(p.nbytes for p in parts),
        )
        yield CounterMetricFamily(
            "proxal_proxy_parts_adopted",
            "Parts of other replicas loaded because a request adopted them.",
            value=self._owner.adoptions,
        )


def _empty(strategy: str, timings: selection.Timings) -> selection.SelectionResult:
    """The answer of a part that holds none of the request's candidates (no candidates:
    the orchestrator's merge ignores its strategy)."""
    return selection.SelectionResult(
        ids=np.zeros(0, np.int64),
        scores=np.zeros(0, np.float32),
        strategy_used=strategy,
        fallback_reason="",
        timings=timings,
        n_candidates=0,
        scored_ids=np.zeros(0, np.int64),
        scored_scores=np.zeros(0, np.float32),
    )
