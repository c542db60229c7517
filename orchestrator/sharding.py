"""Sharded selection: fan one Select out over N proxy replicas and merge the answers.

The pool is cut into shards (id ranges or explicit id lists, see `split_range` and
`split_ids`). `ShardedSelector` sends one SelectRequest per shard, concurrently, over a
single gRPC channel that balances calls round-robin over the replicas. A shard whose call
fails with UNAVAILABLE (the replica died or is unreachable) or DEADLINE_EXCEEDED (the
per-attempt deadline passed) is sent again, up to ``max_attempts`` times; round-robin
picks only replicas whose connection is ready, so the retry lands on a live one. Client
errors (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...) are never retried: the first
one surfaces at once as the `grpc.RpcError` the proxy sent.

Merging depends on the strategy that the shards report they actually used (a strategy
that cannot run yet falls back, e.g. BADGE without two classes runs core-set):

* Decomposable strategies (random, least_confidence, margin, entropy, bald, mahalanobis)
  score each candidate on its own and rank by (score desc, seeded id hash asc) with
  `proxal_runtime.ranking.top_k`. That order does not depend on positions, so the top k of
  the union of every shard's top k is the top k a single replica would pick from the
  whole pool; the client concatenates the shard answers and runs the same `top_k`. (A
  row's float32 score can differ in its last bit between chunkings of the BLAS product,
  so two candidates within one rounding step at the k-th place could swap.)
* Core-set and BADGE pick greedily, each pick depending on the earlier ones, so they do
  not decompose. They run in two stages: (1) every shard picks up to k candidates with
  the strategy on its own part; (2) one more Select runs the strategy on the union of
  those picks (``candidate_ids`` = the union, no shard) and returns its k. This is an
  approximation: the global greedy choice restricted to the union of the per-shard picks,
  not the greedy choice over the whole pool. Stage 2 sees at most k x shards candidates,
  and it still measures distances to every labeled example, so diversity with respect to
  the labeled set is exact; diversity among the picks is only as good as the union.
  With a single shard stage 1 already is the answer and stage 2 is skipped.

As with an unsharded Select, asking for more than the candidates there are is an error
(`InvalidArgumentError`), and labeled ids are never selected.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import grpc
import numpy as np
import numpy.typing as npt
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc

from orchestrator.clients import TrainingSet, channel_target, select_request
from proxal_runtime.arrays import pack_int64, unpack_float32, unpack_int64
from proxal_runtime.errors import InvalidArgumentError
from proxal_runtime.ranking import top_k
from proxal_runtime.security import ClientSecurity
from proxal_runtime.server import grpc_channel_options

# Strategies whose picks depend on one another, so they cannot be merged from per-shard
# top k (see the strategy list in protos/proxal/proxy/v1/proxy.proto, SelectRequest.strategy).
NON_DECOMPOSABLE = frozenset({"coreset", "badge"})
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
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
        raise InvalidArgumentError(
            f"k={k} but the shards hold only {len(all_ids)} candidates once labeled ids are "
            f"excluded; ask for 1 to {len(all_ids)}"
        )
    best = top_k(all_scores, all_ids, k, seed)
    return all_ids[best], all_scores[best]


@dataclass(frozen=True)
class ShardReport:
    """One shard's call: its index (-1 for stage 2), attempts, counts and timings (s)."""

    index: int
    attempts: int
    candidates: int
    returned: int
    strategy: str
    wall_s: float
    timings: dict[str, float]


@dataclass(frozen=True)
class ShardedSelection:
    """A merged answer: ids (k,) best first, scores (k,) and the fan-out's statistics.

    ``strategy`` is the one the proxy used (it may be a fallback, with ``fallback_reason``).
    ``two_stage``: stage 1 picked ``stage1_ids`` (u,) on the shards and ``stage2`` chose
    the answer among them. ``candidates`` sums the shards' candidate counts.
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

    @property
    def attempts(self) -> int:
        """Select calls made, retries and stage 2 included."""
        return sum(r.attempts for r in self.shards) + (self.stage2.attempts if self.stage2 else 0)

    @property
    def retries(self) -> int:
        """Calls beyond the first for each shard (and stage 2)."""
        calls = len(self.shards) + (1 if self.stage2 else 0)
        return self.attempts - calls


def _timings(t: proxy_pb2.Timings) -> dict[str, float]:
    return {"load_s": t.load_s, "fit_s": t.fit_s, "score_s": t.score_s, "select_s": t.select_s}


class ShardedSelector:
    """Fans Select out over proxy replicas behind one round-robin channel. Close when done.

    ``timeout`` is each attempt's deadline (s); a shard gets at most ``max_attempts``
    calls, ``backoff_s`` x 2^i apart; at most ``max_parallel`` shards are in flight.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        timeout: float = 120.0,
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        max_parallel: int = 16,
    ):
        if max_attempts < 1 or max_parallel < 1:
            raise InvalidArgumentError("max_attempts and max_parallel must be >= 1")
        self.addresses = list(addresses)
        self.target = channel_target(self.addresses)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_parallel = max_parallel
        options: list[tuple[str, str | int]] = [
            *grpc_channel_options(),
            ("grpc.lb_policy_name", "round_robin"),
        ]
        self._channel = ClientSecurity.from_env().channel(self.target, options)
        self._stub = proxy_pb2_grpc.ProxyServiceStub(self._channel)
        self._lock = threading.Lock()
        self.calls = 0  # every Select attempt this selector has made

    def _call(
        self, request: proxy_pb2.SelectRequest, timeout: float
    ) -> tuple[proxy_pb2.SelectResponse, int]:
        """(response, attempts) after retrying UNAVAILABLE / DEADLINE_EXCEEDED."""
        for attempt in range(1, self.max_attempts + 1):
            with self._lock:
                self.calls += 1
            try:
                return self._stub.Select(request, timeout=timeout), attempt
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code not in RETRYABLE or attempt == self.max_attempts:
                    raise
            time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _report(
        self, index: int, request: proxy_pb2.SelectRequest, timeout: float
    ) -> tuple[proxy_pb2.SelectResponse, ShardReport]:
        start = time.perf_counter()
        response, attempts = self._call(request, timeout)
        return response, ShardReport(
            index=index,
            attempts=attempts,
            candidates=response.candidates,
            returned=len(response.ids.data) // 8,
            strategy=response.strategy,
            wall_s=time.perf_counter() - start,
            timings=_timings(response.timings),
        )

    def select(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        strategy: str,
        k: int,
        seed: int,
        shards: Sequence[Shard],
        classifier: proxy_pb2.ClassifierSpec | None = None,
        mc_samples: int = 0,
        candidate_ids: npt.NDArray[np.int64] | None = None,
        timeout: float | None = None,
        on_shard: Callable[[ShardReport], None] | None = None,
    ) -> ShardedSelection:
        """The k best unlabeled candidates in the union of `shards`, merged (module doc).

        `candidate_ids` (c,) narrows every shard further. `on_shard` sees each shard's
        report as it arrives, on a pool thread. Raises the first non-retryable
        `grpc.RpcError`, or the last one once a shard is out of attempts.
        """
        if not shards:
            raise InvalidArgumentError("need at least one shard")
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        base = select_request(
            pool,
            version,
            training,
            strategy,
            k,
            seed,
            candidate_ids=candidate_ids,
            classifier=classifier,
            mc_samples=mc_samples,
        )

        def run(index: int, shard: Shard) -> tuple[proxy_pb2.SelectResponse, ShardReport]:
            request = proxy_pb2.SelectRequest()
            request.CopyFrom(base)
            request.shard.CopyFrom(shard_proto(shard))
            response, report = self._report(index, request, timeout)
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
            results = [f.result() for f in futures]
        finally:
            # On failure, queued shards are dropped; calls in flight end within `timeout`.
            executor.shutdown(wait=False, cancel_futures=True)

        responses = [r for r, _ in results]
        reports = [rep for _, rep in results]
        used = {r.strategy for r in responses}
        if len(used) != 1:
            raise RuntimeError(f"shards disagree on the strategy they used: {sorted(used)}")
        used_strategy = used.pop()
        fallback_reason = responses[0].fallback_reason
        shard_ids = [unpack_int64(r.ids.data) for r in responses]
        shard_scores = [unpack_float32(r.scores.data) for r in responses]
        candidates = sum(r.candidates for r in responses)
        stage1_ids = np.unique(np.concatenate(shard_ids))

        def one_stage(
            ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]
        ) -> ShardedSelection:
            return ShardedSelection(
                ids=ids,
                scores=scores,
                strategy=used_strategy,
                fallback_reason=fallback_reason,
                two_stage=False,
                shards=reports,
                stage1_ids=stage1_ids,
                stage2=None,
                candidates=candidates,
                wall_s=time.perf_counter() - started,
            )

        if used_strategy not in NON_DECOMPOSABLE:
            return one_stage(*merge_top_k(shard_ids, shard_scores, k, seed))
        if len(stage1_ids) < k:  # every shard returned all it had: too few candidates
            raise InvalidArgumentError(
                f"k={k} but the shards hold only {len(stage1_ids)} candidates once labeled "
                f"ids are excluded; ask for 1 to {len(stage1_ids)}"
            )
        if len(responses) == 1:  # one shard: its greedy picks already are the answer
            return one_stage(shard_ids[0], shard_scores[0])
        final = proxy_pb2.SelectRequest()
        final.CopyFrom(base)
        final.candidate_ids.data = pack_int64(stage1_ids)
        final.k = min(k, len(stage1_ids))
        response, stage2 = self._report(-1, final, timeout)
        return ShardedSelection(
            ids=unpack_int64(response.ids.data),
            scores=unpack_float32(response.scores.data),
            strategy=response.strategy,
            fallback_reason=response.fallback_reason,
            two_stage=True,
            shards=reports,
            stage1_ids=stage1_ids,
            stage2=stage2,
            candidates=candidates,
            wall_s=time.perf_counter() - started,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ShardedSelector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
