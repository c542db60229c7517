"""Sharded selection: fan one Select out over N proxy replicas and merge the answers.

`ReplicaSet` is where the replicas are: a fixed list (``a:p,b:p,c:p``) or a
``dns:///name:port`` that `socket.getaddrinfo` resolves at start-up, again after a
replica fails and every `RESOLVE_EVERY_S` seconds, so replicas that come and go (a
headless Service, compose replicas) are picked up. `ShardedSelector` has `ProxyClient`'s
``select``/``predict`` signatures and returns a `clients.Selection`, so it can stand
wherever one proxy does (`Sessions`, the engine). Its policy (`make_selector`,
``--shard-above``): a selection over at most ``shard_above`` candidate ids goes to one
replica, the next one round-robin; above that the candidates are cut into one shard per
replica (`split_ids`) and every replica scores one. A selection without candidate ids
(the whole pool) is not sized here and goes to one replica. `predict` always goes to one
replica.

**Shard-owning replicas.** Replicas started with ``--shard I/R`` hold only part I of R
of every version. The selector asks every replica what it is (`Describe`, cached for
`RESOLVE_EVERY_S` seconds and again after a failure) and builds a `ShardMap`; when any
replica owns a part, every Select fans out one part per index to its owner (``shard.part``)
and merges as below. If the owner fails (UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED), or no replica owns the part, the same part goes with ``adopt=true``
to another live replica, which loads it on demand: slower, not failed (the `ShardReport`
says who adopted it). Replicas that disagree on R are a FailedPreconditionError naming
them. Replicas without ``--shard`` keep the id-range policy below.

**Failover.** Every replica has its own channel. A call that fails with UNAVAILABLE (the
replica died or is unreachable), DEADLINE_EXCEEDED (the per-attempt deadline passed) or
RESOURCE_EXHAUSTED (overloaded) is sent to the next replica it has not been tried on;
replicas that failed in the last `DOWN_S` seconds are tried last. A call fails only when
every replica failed it: then `UnavailableError` lists each replica's error. Client errors
(INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...) are never retried: the first one
surfaces at once as the `grpc.RpcError` the proxy sent, as with `ProxyClient`.

**Merging** depends on the strategy that the shards report they actually used (a strategy
that cannot run yet falls back, e.g. BADGE without two classes runs core-set):

* Decomposable strategies (random, least_confidence, margin, entropy, bald, mahalanobis)
  score each candidate on its own and rank by (score desc, seeded id hash asc) with
  `proxal.runtime.ranking.top_k`. That order does not depend on positions, so the top k of
  the union of every shard's top k is the top k a single replica would pick from the
  whole pool; the client concatenates the shard answers and runs the same `top_k`. The
  picked scores are computed one row at a time by the proxy, so the picks and their
  scores are bit-identical to one replica's, whatever the number of replicas or which of
  them answered. (Scores returned with ``return_scores`` for rows not picked can differ in
  their last bit between shardings.)
* Core-set and BADGE pick greedily, each pick depending on the earlier ones, so they do
  not decompose. They run in two stages: (1) every shard picks up to k candidates with
  the strategy on its own part; (2) one more Select runs the strategy on the union of
  those picks (``candidate_ids`` = the union, no shard) and returns its k. This is an
  approximation: the global greedy choice restricted to the union of the per-shard picks,
  not the greedy choice over the whole pool. Stage 2 sees at most k x shards candidates,
  and it still measures distances to every labeled example, so diversity with respect to
  the labeled set is exact; diversity among the picks is only as good as the union. The
  shards are cut from the candidates by the number of replicas in the set, not by which
  answer, so a replica that dies does not change the picks (a DNS set that shrinks does).
  With a single shard stage 1 already is the answer and stage 2 is skipped.
* The k-means initial batch (``initial="kmeans"``, strategy used "kmeans") runs in the
  same two stages: each shard clusters its own candidates (a sample of 20k of them if it
  has more) and returns the nearest candidate to each of its k centres; stage 2 clusters
  the union of those (at most k x shards candidates) into k and returns the nearest to
  each. Each shard's picks cover its part's topics, so the union covers the pool's; the
  final k are a k-means of that union, not of the whole pool.
* ``class_balanced`` requests also run in two stages, whatever the strategy: each shard
  returns its own class-balanced k and stage 2 balances their union. A shard's share of
  a class is at least that class's share in the whole pool's answer (a shard has no more
  classes with candidates to share its k turns with), so the union holds the whole pool's
  answer and stage 2 picks it, up to near-ties in the chunked scores. (Before two classes
  are labeled nothing is balanced and stage 2 re-ranks the union as one replica would.)

As with an unsharded Select, asking for more than the candidates there are is an error
(`InvalidArgumentError`), and labeled ids are never selected.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from proxal.common.v1 import common_pb2
from proxal.orchestrator_service.engine.selectors import (
    ClassifierSpec,
    Predictions,
    Selection,
    Subsampling,
    TrainingSet,
)
from proxal.orchestrator_service.rpc.clients import (
    check_address,
    predict_request,
    predictions_from,
    select_request,
    selection_from_proto,
)
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.runtime.arrays import pack_int64, unpack_float32, unpack_int32, unpack_int64
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError
from proxal.runtime.ranking import top_k
from proxal.runtime.security import ClientSecurity
from proxal.runtime.server import grpc_channel_options

log = logging.getLogger(__name__)

# Strategies whose picks depend on one another, so they cannot be merged from per-shard
# top k (see the strategy list in protos/proxal/proxy/v1/proxy.proto, SelectRequest.strategy).
NON_DECOMPOSABLE = frozenset({"coreset", "badge", "kmeans"})
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
DEFAULT_SHARD_ABOVE = 50_000  # candidates; `proxal serve --shard-above`
DESCRIBE_TIMEOUT_S = 5.0  # each replica's Describe while building the shard map
DOWN_S = 10.0  # a replica that failed this recently is tried after the others
REFRESH_S = 1.0  # a DNS replica set resolves again after a failure at most this often
RESOLVE_EVERY_S = 30.0  # and before a call when its last answer is this old
# Reconnect soon after a replica comes back (gRPC's default backoff grows to 120 s).
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
]
_PROXY_FORMS = "host:port, a list host:port,host:port or dns:///name:port"

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``ip:port`` (``[ip6]:port``) `host` resolves to, sorted; [] if none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    found = {
        f"[{info[4][0]}]:{port}" if info[0] == socket.AF_INET6 else f"{info[4][0]}:{port}"
        for info in infos
    }
    return sorted(found)


def _dns_name(target: str) -> tuple[str, int]:
    """(host, port) of ``dns:///host:port`` or ``dns:host:port``; InvalidArgumentError else."""
    rest = target[len("dns:") :]
    if rest.startswith("//"):
        authority, sep, rest = rest[2:].partition("/")
        if authority or not sep:
            raise InvalidArgumentError(
                f"proxy address {target!r}: name no DNS server, write dns:///name:port"
            )
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgumentError(
            f"proxy address {target!r} is not dns:///name:port (a port is a number 1-65535)"
        )
    return host.strip("[]"), int(port)


def _address_list(value: str) -> list[str]:
    """Distinct ``host:port`` addresses of a comma-separated list (``ipv4:``/``ipv6:`` too)."""
    for scheme in ("ipv4:", "ipv6:"):
        value = value.removeprefix(scheme)
    parts = [part.strip() for part in value.split(",")]
    if "" in parts:
        raise InvalidArgumentError(
            f"proxy address list {value!r} has an empty entry; write {_PROXY_FORMS}"
        )
    for part in parts:
        if part.startswith(("dns:", "ipv4:", "ipv6:")):
            raise InvalidArgumentError(
                f"proxy address {part!r} inside a list: give one dns:/// target, or a list "
                "of host:port"
            )
        try:
            check_address(part)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{exc}; write {_PROXY_FORMS}") from None
    if len(set(parts)) < len(parts):
        raise InvalidArgumentError(f"proxy address list {value!r} names a replica twice")
    return parts


class ReplicaSet:
    """The proxy replicas: a fixed list of addresses, or a DNS name resolved to them.

    ``addresses()`` is the current list (sorted for a DNS name); ``refresh()`` resolves the
    name again (rate-limited) and says whether the list changed. A DNS answer with no
    address keeps the last list.
    """

    def __init__(
        self,
        addresses: Sequence[str] = (),
        dns: tuple[str, int] | None = None,
        resolver: Resolver = resolve,
    ):
        if not addresses and dns is None:
            raise InvalidArgumentError(f"no proxy replica given; write {_PROXY_FORMS}")
        self.dns = dns
        self._resolver = resolver
        self._lock = threading.Lock()
        self._addresses = list(addresses)
        self._resolved_at = -float("inf")
        if dns is not None:
            self.refresh()
            if not self._addresses:
                log.warning("proxy address %s resolves to no address yet", self.spec)

    @classmethod
    def parse(cls, value: str, resolver: Resolver = resolve) -> ReplicaSet:
        """A set from what a user writes: ``host:port``, ``a:p,b:p``, ``ipv4:a:p,b:p``,
        ``dns:///name:port`` or another gRPC target (``unix:path``: one replica)."""
        value = value.strip()
        if not value:
            raise InvalidArgumentError(f"the proxy address is empty; write {_PROXY_FORMS}")
        if value.startswith("dns:"):
            return cls(dns=_dns_name(value), resolver=resolver)
        if value.startswith(("unix:", "unix-abstract:", "vsock:", "xds:")):
            return cls([value])
        return cls(_address_list(value))

    @property
    def spec(self) -> str:
        """The set as a user wrote it, for messages."""
        if self.dns is not None:
            return f"dns:///{self.dns[0]}:{self.dns[1]}"
        return ",".join(self._addresses)

    @property
    def authority(self) -> str | None:
        """The DNS name (for TLS checks on resolved addresses), None for a fixed list."""
        return None if self.dns is None else self.dns[0]

    def addresses(self) -> list[str]:
        with self._lock:
            return list(self._addresses)

    def refresh(self, older_than: float | None = None) -> bool:
        """Resolve a DNS name again if the last answer is `older_than` seconds old
        (`REFRESH_S` by default): True if the addresses changed."""
        if self.dns is None:
            return False
        older_than = REFRESH_S if older_than is None else older_than
        with self._lock:
            if time.monotonic() - self._resolved_at < older_than:
                return False
            self._resolved_at = time.monotonic()
            found = self._resolver(*self.dns)
            if not found or found == self._addresses:
                return False  # keep the last answer when DNS has none for a moment
            log.info("proxy replicas of %s: %s", self.spec, ", ".join(found))
            self._addresses = found
            return True


@dataclasses.dataclass(frozen=True)
class IdRange:
    """Ids start <= id < end of the version."""

    start: int
    end: int


Shard = IdRange | npt.NDArray[np.int64]


def split_range(start: int, end: int, n: int) -> list[IdRange]:
    """[start, end) cut into min(n, end - start) contiguous ranges whose sizes differ by <= 1."""
    if n < 1:
        raise InvalidArgumentError(f"n must be >= 1, got {n}")
    if start >= end:
        raise InvalidArgumentError(f"need start < end, got [{start}, {end})")
    parts = min(n, end - start)
    bounds = [start + (end - start) * i // parts for i in range(parts + 1)]
    return [IdRange(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def split_ids(ids: npt.ArrayLike, n: int) -> list[npt.NDArray[np.int64]]:
    """Distinct ids (m,) sorted and cut into min(n, m) contiguous parts, sizes within 1.

    Sorting keeps each part a narrow slice of the version, which the proxy reads fastest.
    """
    if n < 1:
        raise InvalidArgumentError(f"n must be >= 1, got {n}")
    unique = np.unique(np.asarray(ids, dtype=np.int64))
    if not len(unique):
        raise InvalidArgumentError("no ids to split")
    return list(np.array_split(unique, min(n, len(unique))))


def shard_proto(shard: Shard) -> proxy_pb2.Shard:
    """The proto of an IdRange or an id array (n,)."""
    if isinstance(shard, IdRange):
        return proxy_pb2.Shard(range=proxy_pb2.IdRange(start=shard.start, end=shard.end))
    return proxy_pb2.Shard(ids=common_pb2.Int64Array(data=pack_int64(shard)))


def _too_few(k: int, candidates: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"k={k} but the shards hold only {candidates} candidates once labeled ids are "
        f"excluded; ask for 1 to {candidates}"
    )


def merge_top_k(
    ids: Sequence[npt.NDArray[np.int64]],
    scores: Sequence[npt.NDArray[np.float32]],
    k: int,
    seed: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The k best of per-shard answers (ids (m_i,), scores (m_i,)): ((k,), (k,)), best first.

    Same order as the proxy (`top_k`: score desc, seeded id hash asc). An id in several
    shards counts once. InvalidArgumentError if fewer than k distinct ids are given.
    """
    all_ids = np.concatenate([np.asarray(part, dtype=np.int64) for part in ids])
    all_scores = np.concatenate([np.asarray(part, dtype=np.float32) for part in scores])
    all_ids, first = np.unique(all_ids, return_index=True)
    all_scores = all_scores[first]
    if k < 1 or k > len(all_ids):
        raise _too_few(k, len(all_ids))
    best = top_k(all_scores, all_ids, k, seed)
    return all_ids[best], all_scores[best]


@dataclasses.dataclass(frozen=True)
class ShardMap:
    """What the live replicas are: ``count`` parts (0: no replica owns one), the owners of
    each part index, and every replica that answered Describe (``live``, sorted)."""

    count: int
    owners: dict[int, list[str]]
    live: list[str]

    @classmethod
    def of(cls, parts: dict[str, tuple[int, int] | None]) -> ShardMap:
        """The map of each live replica's part (index, count), None for a whole-version
        replica; FailedPreconditionError naming the replicas if they disagree on count."""
        counts = {part[1] for part in parts.values() if part is not None}
        if len(counts) > 1:
            owned = ", ".join(
                f"{a} owns {p[0]}/{p[1]}" for a, p in sorted(parts.items()) if p is not None
            )
            raise FailedPreconditionError(
                f"proxy replicas disagree on the number of shard parts: {owned}; start every "
                "replica with the same --shard I/R count"
            )
        owners: dict[int, list[str]] = {}
        for address, part in sorted(parts.items()):
            if part is not None:
                owners.setdefault(part[0], []).append(address)
        return cls(counts.pop() if counts else 0, owners, sorted(parts))


@dataclasses.dataclass(frozen=True)
class ShardReport:
    """One shard's call: its index (-1 for stage 2), attempts, counts and timings (s)."""

    index: int
    attempts: int
    candidates: int
    returned: int
    strategy: str
    wall_s: float
    timings: dict[str, float]
    replica: str = ""  # the address that answered
    adopted: bool = False  # a shard part answered by a replica that does not own it


@dataclasses.dataclass(frozen=True)
class ShardedSelection:
    """A merged answer: ids (k,) best first, scores (k,) and the fan-out's statistics.

    ``strategy`` is the one the proxy used (it may be a fallback, with ``fallback_reason``).
    ``two_stage``: stage 1 picked ``stage1_ids`` (u,) on the shards and ``stage2`` chose
    the answer among them. ``candidates`` sums the shards' candidate counts.
    ``scored_ids``/``scored_scores`` (m,) concatenate the shards' ``return_scores`` answers.
    ``predicted_labels``/``predicted_probabilities`` (k,) are the proxy's guess for each of
    ``ids`` (empty when it fitted nothing).
    """

    ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    strategy: str
    fallback_reason: str
    two_stage: bool
    shards: list[ShardReport]
    stage1_ids: npt.NDArray[np.int64]
    stage2: ShardReport | None
    candidates: int
    wall_s: float
    scored_ids: npt.NDArray[np.int64]
    scored_scores: npt.NDArray[np.float32]
    predicted_labels: npt.NDArray[np.int32] = dataclasses.field(
        default_factory=lambda: np.zeros(0, np.int32)
    )
    predicted_probabilities: npt.NDArray[np.float32] = dataclasses.field(
        default_factory=lambda: np.zeros(0, np.float32)
    )

    @property
    def attempts(self) -> int:
        """Select calls made, retries and stage 2 included."""
        return sum(r.attempts for r in self.shards) + (self.stage2.attempts if self.stage2 else 0)

    @property
    def retries(self) -> int:
        """Calls beyond the first for each shard (and stage 2)."""
        calls = len(self.shards) + (1 if self.stage2 else 0)
        return self.attempts - calls

    def to_selection(self) -> Selection:
        """As one proxy's answer; each timing is the slowest shard's (+ stage 2's)."""
        timings = {
            key: max(r.timings[key] for r in self.shards)
            + (self.stage2.timings[key] if self.stage2 else 0.0)
            for key in self.shards[0].timings
        }
        return Selection(
            ids=self.ids,
            scores=self.scores,
            strategy=self.strategy,
            fallback_reason=self.fallback_reason,
            timings=timings,
            candidates=self.candidates,
            scored_ids=self.scored_ids,
            scored_scores=self.scored_scores,
            predicted_labels=self.predicted_labels,
            predicted_probabilities=self.predicted_probabilities,
        )


def predictions_of(
    responses: Sequence[proxy_pb2.SelectResponse], ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The predicted class (k,) and probability (k,) of each of `ids` (k,), taken from the
    responses that picked them; both empty if any response carries none (nothing fitted).

    Every replica fits the same proxy (same labels, spec and seed), so an id's prediction
    does not depend on which shard picked it.
    """
    empty = np.zeros(0, np.int32), np.zeros(0, np.float32)
    if not len(ids) or any(not r.predicted_labels.data for r in responses if r.ids.data):
        return empty
    picked = np.concatenate([unpack_int64(r.ids.data) for r in responses])
    labels = np.concatenate([unpack_int32(r.predicted_labels.data) for r in responses])
    proba = np.concatenate([unpack_float32(r.predicted_probabilities.data) for r in responses])
    if not len(picked) == len(labels) == len(proba):
        raise RuntimeError("a shard's predictions do not line up with its picks")
    order = np.argsort(picked, kind="stable")
    at = order[np.searchsorted(picked, ids, sorter=order)]
    return labels[at], proba[at]


def _timings(t: proxy_pb2.Timings) -> dict[str, float]:
    return {"load_s": t.load_s, "fit_s": t.fit_s, "score_s": t.score_s, "select_s": t.select_s}


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    return exc.code() if isinstance(exc, grpc.Call) else None


def _describe(exc: grpc.RpcError) -> str:
    code = _code(exc)
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return f"{code.name if code else 'UNKNOWN'} ({details})"


class ShardedSelector:
    """`ProxyClient`'s ``select``/``predict`` over a `ReplicaSet`: one replica round-robin
    up to ``shard_above`` candidates, one shard per replica above it, every call failed
    over to the other replicas (module doc). Close when done.

    ``timeout`` is each attempt's deadline (s); at most ``max_parallel`` shards are in flight.
    """

    def __init__(
        self,
        replicas: ReplicaSet | Sequence[str],
        shard_above: int = DEFAULT_SHARD_ABOVE,
        timeout: float = 120.0,
        max_parallel: int = 16,
        security: ClientSecurity | None = None,
    ):
        if shard_above < 1 or max_parallel < 1:
            raise InvalidArgumentError(
                f"shard_above and max_parallel must be >= 1, got {shard_above}, {max_parallel}"
            )
        self.replicas = replicas if isinstance(replicas, ReplicaSet) else ReplicaSet(replicas)
        self.shard_above = shard_above
        self.timeout = timeout
        self.max_parallel = max_parallel
        self._security = ClientSecurity.from_env() if security is None else security
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, proxy_pb2_grpc.ProxyServiceStub] = {}
        self._down: dict[str, float] = {}  # address -> when a call to it last failed
        self._turn = itertools.count()
        self.calls = 0  # every attempt this selector has made
        self._map: tuple[float, list[str], ShardMap] | None = None  # (when, addresses, map)

    @property
    def address(self) -> str:
        """The replica set as given (`ProxyClient.address`'s counterpart)."""
        return self.replicas.spec

    def _stub(self, address: str) -> proxy_pb2_grpc.ProxyServiceStub:
        with self._lock:
            if address not in self._stubs:
                options = [*grpc_channel_options(), *_CHANNEL_OPTIONS]
                if self.replicas.authority is not None:  # TLS checks the name, not the IP
                    options.append(("grpc.ssl_target_name_override", self.replicas.authority))
                channel = self._security.channel(address, options)
                self._channels[address] = channel
                self._stubs[address] = proxy_pb2_grpc.ProxyServiceStub(channel)
            return self._stubs[address]

    def _order(self, start: int) -> list[str]:
        """The replicas from index `start` (mod n) on; those failed in `DOWN_S` s last."""
        addresses = self.replicas.addresses()
        if not addresses:
            return []
        i = start % len(addresses)
        now = time.monotonic()
        with self._lock:
            down = {a for a, t in self._down.items() if now - t < DOWN_S}
        return sorted(addresses[i:] + addresses[:i], key=lambda a: a in down)

    def _call(self, rpc: str, request: Any, start: int, timeout: float) -> tuple[Any, int, str]:
        """(response, attempts, replica) of the first replica from `start` on that answers.

        Retryable failures move on to the next untried replica (and re-resolve a DNS set);
        UnavailableError once every replica failed; other `grpc.RpcError`s are raised as is.
        """
        failed: dict[str, str] = {}
        while order := [a for a in self._order(start) if a not in failed]:
            address = order[0]
            with self._lock:
                self.calls += 1
            try:
                response = getattr(self._stub(address), rpc)(request, timeout=timeout)
            except grpc.RpcError as exc:
                if _code(exc) not in RETRYABLE:
                    raise
                log.warning("proxy replica %s failed %s: %s", address, rpc, _describe(exc))
                failed[address] = _describe(exc)
                with self._lock:
                    self._down[address] = time.monotonic()
                self.replicas.refresh()
                continue
            with self._lock:
                self._down.pop(address, None)
            return response, len(failed) + 1, address
        if not failed:
            raise UnavailableError(f"proxy service: {self.replicas.spec} resolves to no address")
        errors = "; ".join(f"{a} {why}" for a, why in failed.items())
        raise UnavailableError(f"proxy service: every replica failed {rpc}: {errors}")

    def _report(
        self, index: int, request: proxy_pb2.SelectRequest, timeout: float, first: int
    ) -> tuple[proxy_pb2.SelectResponse, ShardReport]:
        """Select on replica `first` (mod n) or the next that answers, and its report."""
        start = time.perf_counter()
        response, attempts, replica = self._call("Select", request, first, timeout)
        return response, ShardReport(
            index=index,
            attempts=attempts,
            candidates=response.candidates,
            returned=len(response.ids.data) // 8,
            strategy=response.strategy,
            wall_s=time.perf_counter() - start,
            timings=_timings(response.timings),
            replica=replica,
        )

    def _part_of(self, address: str) -> tuple[int, int] | str | None:
        """A replica's Describe: its part (index, count), None (whole versions; also a
        replica without Describe), or the error of a replica that did not answer."""
        try:
            answer = self._stub(address).Describe(
                proxy_pb2.DescribeRequest(), timeout=min(self.timeout, DESCRIBE_TIMEOUT_S)
            )
        except grpc.RpcError as exc:
            if _code(exc) == grpc.StatusCode.UNIMPLEMENTED:
                return None
            if _code(exc) not in RETRYABLE:
                raise
            return _describe(exc)
        return (answer.shard.index, answer.shard.count) if answer.HasField("shard") else None

    def shard_map(self, fresh: bool = False) -> ShardMap:
        """The live replicas' `ShardMap`, from Describe of each; cached until the replica
        list changes, a part call fails, or `RESOLVE_EVERY_S` passes (`fresh`: ask now)."""
        addresses = self.replicas.addresses()
        cached = self._map
        if (
            not fresh
            and cached is not None
            and cached[1] == addresses
            and time.monotonic() - cached[0] < RESOLVE_EVERY_S
        ):
            return cached[2]
        with ThreadPoolExecutor(max(1, min(len(addresses), self.max_parallel))) as pool:
            answers = dict(zip(addresses, pool.map(self._part_of, addresses), strict=True))
        parts = {a: p for a, p in answers.items() if not isinstance(p, str)}
        shard_map = ShardMap.of(parts)
        if shard_map.count:
            log.debug("shard map: %d parts, owners %s", shard_map.count, shard_map.owners)
        self._map = (time.monotonic(), addresses, shard_map)
        return shard_map

    def _call_part(
        self, request: proxy_pb2.SelectRequest, shard_map: ShardMap, timeout: float
    ) -> tuple[proxy_pb2.SelectResponse, ShardReport]:
        """Select of one part (``request.shard.part``) on its owner, else adopted by another
        live replica (owners first, then the others from the part's index on, replicas that
        failed in `DOWN_S` s last); UnavailableError if every replica failed it."""
        index, started = request.shard.part.index, time.perf_counter()
        owners = shard_map.owners.get(index, [])
        others = [a for a in shard_map.live if a not in owners]
        turn = index % len(others) if others else 0
        now = time.monotonic()
        with self._lock:
            down = {a for a, t in self._down.items() if now - t < DOWN_S}
        plan = sorted(owners, key=lambda a: a in down) + sorted(
            others[turn:] + others[:turn], key=lambda a: a in down
        )
        failed: dict[str, str] = {}
        for address in plan:
            request.adopt = address not in owners
            with self._lock:
                self.calls += 1
            try:
                response = self._stub(address).Select(request, timeout=timeout)
            except grpc.RpcError as exc:
                if _code(exc) == grpc.StatusCode.FAILED_PRECONDITION:
                    self._map = None  # a replica restarted with another part: Describe again
                if _code(exc) not in RETRYABLE:
                    raise
                log.warning("proxy replica %s failed part %d: %s", address, index, _describe(exc))
                failed[address] = _describe(exc)
                with self._lock:
                    self._down[address] = time.monotonic()
                self._map = None  # Describe again next time: the replica may have gone
                continue
            if request.adopt:
                log.info("part %d/%d adopted by %s", index, shard_map.count, address)
            return response, ShardReport(
                index=index,
                attempts=len(failed) + 1,
                candidates=response.candidates,
                returned=len(response.ids.data) // 8,
                strategy=response.strategy,
                wall_s=time.perf_counter() - started,
                timings=_timings(response.timings),
                replica=address,
                adopted=request.adopt,
            )
        errors = "; ".join(f"{a} {why}" for a, why in failed.items()) or "no live replica"
        raise UnavailableError(
            f"proxy service: every replica failed part {index}/{shard_map.count}: {errors}"
        )

    def select_parts(
        self, base: proxy_pb2.SelectRequest, shard_map: ShardMap, timeout: float | None = None
    ) -> ShardedSelection:
        """`base` fanned out as one part per index of `shard_map` (owner first, else
        adopted), merged as `select_shards` merges (module doc)."""
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()

        def run(index: int) -> tuple[proxy_pb2.SelectResponse, ShardReport]:
            request = proxy_pb2.SelectRequest()
            request.CopyFrom(base)
            request.shard.part.CopyFrom(proxy_pb2.ShardPart(index=index, count=shard_map.count))
            return self._call_part(request, shard_map, timeout)

        with ThreadPoolExecutor(min(shard_map.count, self.max_parallel), "part") as pool:
            results = list(pool.map(run, range(shard_map.count)))
        return self._merge(base, results, timeout, started)

    def select(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        strategy: str,
        k: int,
        seed: int,
        candidate_ids: npt.NDArray[np.int64] | None = None,
        classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
        subsampling: Subsampling | proxy_pb2.Subsampling | None = None,
        return_scores: bool = False,
        mc_samples: int = 0,
        initial: str = "",
        class_balanced: bool = False,
    ) -> Selection:
        """`ProxyClient.select`: with shard-owning replicas, one part per index to its owner
        (or adopted); otherwise one replica up to `shard_above` candidate ids, else one
        shard of them per replica; merged (module doc), the same picks either way."""
        self.replicas.refresh(RESOLVE_EVERY_S)
        request = select_request(
            pool,
            version,
            training,
            strategy,
            k,
            seed,
            candidate_ids=candidate_ids,
            classifier=classifier,
            subsampling=subsampling,
            return_scores=return_scores,
            mc_samples=mc_samples,
            initial=initial,
            class_balanced=class_balanced,
        )
        shard_map = self.shard_map()
        if shard_map.count:  # shard-owning replicas: always one part per index
            return self.select_parts(request, shard_map).to_selection()
        replicas = len(self.replicas.addresses())
        unique = np.unique(candidate_ids) if candidate_ids is not None else np.zeros(0, np.int64)
        if replicas > 1 and len(unique) > self.shard_above:
            shards: list[Shard] = [*split_ids(unique, replicas)]
            result = self.select_request_shards(request, shards)
            log.debug(
                "Select of %d candidates in %d shards: %d attempts on %s",
                len(unique),
                len(shards),
                result.attempts,
                ", ".join(sorted({r.replica for r in result.shards})),
            )
            return result.to_selection()
        response, _, _ = self._call("Select", request, next(self._turn), self.timeout)
        return selection_from_proto(response)

    def predict(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        ids: npt.NDArray[np.int64],
        seed: int,
        classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
    ) -> npt.NDArray[np.int32]:
        """`ProxyClient.predict` on one replica (round-robin, failed over): (n,) int32."""
        return self.predictions(pool, version, training, ids, seed, classifier).labels

    def predictions(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        ids: npt.NDArray[np.int64],
        seed: int,
        classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
        strategy: str = "",
    ) -> Predictions:
        """`ProxyClient.predictions` on one replica (round-robin, failed over)."""
        self.replicas.refresh(RESOLVE_EVERY_S)
        request = predict_request(pool, version, training, ids, seed, classifier, strategy)
        response, _, _ = self._call("Predict", request, next(self._turn), self.timeout)
        return predictions_from(response)

    def select_shards(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        strategy: str,
        k: int,
        seed: int,
        shards: Sequence[Shard],
        classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
        mc_samples: int = 0,
        candidate_ids: npt.NDArray[np.int64] | None = None,
        timeout: float | None = None,
        on_shard: Callable[[ShardReport], None] | None = None,
        subsampling: Subsampling | proxy_pb2.Subsampling | None = None,
        return_scores: bool = False,
        initial: str = "",
        class_balanced: bool = False,
    ) -> ShardedSelection:
        """The k best unlabeled candidates in the union of `shards`, merged (module doc).

        Shard i goes to replica i (mod n) first. `candidate_ids` (c,) narrows every shard
        further. `on_shard` sees each shard's report as it arrives, on a pool thread.
        """
        base = select_request(
            pool,
            version,
            training,
            strategy,
            k,
            seed,
            candidate_ids=candidate_ids,
            classifier=classifier,
            subsampling=subsampling,
            return_scores=return_scores,
            mc_samples=mc_samples,
            initial=initial,
            class_balanced=class_balanced,
        )
        return self.select_request_shards(base, shards, timeout, on_shard)

    def select_request_shards(
        self,
        base: proxy_pb2.SelectRequest,
        shards: Sequence[Shard],
        timeout: float | None = None,
        on_shard: Callable[[ShardReport], None] | None = None,
    ) -> ShardedSelection:
        """`select_shards` for a built request `base` (its shard is set per shard)."""
        if not shards:
            raise InvalidArgumentError("need at least one shard")
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        results = self._fan_out(base, shards, timeout, on_shard)
        return self._merge(base, results, timeout, started)

    def _fan_out(
        self,
        base: proxy_pb2.SelectRequest,
        shards: Sequence[Shard],
        timeout: float,
        on_shard: Callable[[ShardReport], None] | None,
    ) -> list[tuple[proxy_pb2.SelectResponse, ShardReport]]:
        """Every shard's (response, report), in shard order; the first failure is raised."""

        def run(index: int, shard: Shard) -> tuple[proxy_pb2.SelectResponse, ShardReport]:
            request = proxy_pb2.SelectRequest()
            request.CopyFrom(base)
            request.shard.CopyFrom(shard_proto(shard))
            response, report = self._report(index, request, timeout, index)
            if on_shard is not None:
                on_shard(report)
            return response, report

        executor = ThreadPoolExecutor(min(len(shards), self.max_parallel), "shard")
        try:
            futures: list[Future[tuple[proxy_pb2.SelectResponse, ShardReport]]] = [
                executor.submit(run, i, shard) for i, shard in enumerate(shards)
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:  # the first failure, without waiting for the rest
                if future in done and (error := future.exception()) is not None:
                    raise error
            return [f.result() for f in futures]
        finally:
            # On failure, queued shards are dropped; calls in flight end within `timeout`.
            executor.shutdown(wait=False, cancel_futures=True)

    def _merge(
        self,
        base: proxy_pb2.SelectRequest,
        results: list[tuple[proxy_pb2.SelectResponse, ShardReport]],
        timeout: float,
        started: float,
    ) -> ShardedSelection:
        """One answer from the shards': merged top k, or stage 2 for greedy strategies."""
        responses = [r for r, _ in results]
        used = {r.strategy for r in responses if r.candidates} or {responses[0].strategy}
        if len(used) != 1:
            raise RuntimeError(f"shards disagree on the strategy they used: {sorted(used)}")
        shard_ids = [unpack_int64(r.ids.data) for r in responses]
        shard_scores = [unpack_float32(r.scores.data) for r in responses]
        stage1_ids = np.unique(np.concatenate(shard_ids))
        k, stage2 = base.k, None
        if used.pop() not in NON_DECOMPOSABLE and not base.class_balanced:
            ids, scores = merge_top_k(shard_ids, shard_scores, k, base.seed)
            final = responses[0]
        elif len(stage1_ids) < k:  # every shard returned all it had: too few candidates
            raise _too_few(k, len(stage1_ids))
        elif len(responses) == 1:  # one shard: its greedy picks already are the answer
            final, ids, scores = responses[0], shard_ids[0], shard_scores[0]
        else:
            request = proxy_pb2.SelectRequest()
            request.CopyFrom(base)
            request.candidate_ids.data = pack_int64(stage1_ids)
            request.return_scores = False
            final, stage2 = self._report(-1, request, timeout, next(self._turn))
            ids, scores = unpack_int64(final.ids.data), unpack_float32(final.scores.data)
        labels, probabilities = predictions_of(responses if stage2 is None else [final], ids)
        return ShardedSelection(
            ids=ids,
            scores=scores,
            strategy=final.strategy,
            fallback_reason=final.fallback_reason,
            two_stage=stage2 is not None,
            shards=[report for _, report in results],
            stage1_ids=stage1_ids,
            stage2=stage2,
            candidates=sum(r.candidates for r in responses),
            wall_s=time.perf_counter() - started,
            scored_ids=np.concatenate([unpack_int64(r.scored_ids.data) for r in responses]),
            scored_scores=np.concatenate([unpack_float32(r.scored_scores.data) for r in responses]),
            predicted_labels=labels,
            predicted_probabilities=probabilities,
        )

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._stubs.clear()
        for channel in channels:
            channel.close()

    def __enter__(self) -> ShardedSelector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_selector(
    proxy: str, shard_above: int = DEFAULT_SHARD_ABOVE, timeout: float = 120.0
) -> ShardedSelector:
    """The selector `proxal serve` uses for ``--proxy`` and ``--shard-above``.

    InvalidArgumentError, saying what to write, for an empty or malformed address or a
    `shard_above` below 1.
    """
    if shard_above < 1:
        raise InvalidArgumentError(f"--shard-above must be a number >= 1, got {shard_above}")
    return ShardedSelector(ReplicaSet.parse(proxy), shard_above, timeout)
