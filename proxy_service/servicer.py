"""The gRPC face of the proxy: unpack the request, call the domain, pack the response."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service import selection, sequential
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.classifiers import ClassifierSpec
from proxal.proxy_service.limits import RequestLimits
from proxal.proxy_service.metrics import ProxyMetrics
from proxal.proxy_service.shards import ShardOwner
from proxal.runtime.arrays import (
    pack_float32,
    pack_int32,
    pack_int64,
    unpack_float32,
    unpack_int32,
    unpack_int64,
)
from proxal.runtime.deadline import Deadline
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.limits import check_strings
from proxal.runtime.versions import EmbeddingVersion

SERVICE_NAME: str = proxy_pb2.DESCRIPTOR.services_by_name["ProxyService"].full_name


def _loader(cache: VersionCache, pool: str, tag: str, precision: str = "") -> selection.Loader:
    """The request's version loader, once the names are valid (checked here, once) and, if
    the version is cached, the store still has it (NotFoundError otherwise: it was deleted).
    `precision`: as `VersionCache.get` ("" takes the version as held)."""
    version = EmbeddingVersion(pool, tag)
    cache.drop_if_deleted(version)
    return lambda: cache.get(version, precision)


def _training(message: proxy_pb2.TrainingSet) -> selection.TrainingSet:
    return selection.TrainingSet(
        ids=unpack_int64(message.ids.data, "training.ids"),
        labels=unpack_int32(message.labels.data, "training.labels"),
        num_classes=message.num_classes,
    )


def _spec(message: proxy_pb2.ClassifierSpec) -> ClassifierSpec:
    return ClassifierSpec(
        kind=message.kind, c=message.c, max_iter=message.max_iter, balanced=message.balanced
    )


def _shard(request: proxy_pb2.SelectRequest) -> selection.Shard | None:
    kind = request.shard.WhichOneof("kind") if request.HasField("shard") else None
    if kind is None:
        return None
    if kind == "ids":
        return selection.Shard(ids=unpack_int64(request.shard.ids.data, "shard.ids"))
    if kind == "part":
        return selection.Shard(part=(request.shard.part.index, request.shard.part.count))
    return selection.Shard(start=request.shard.range.start, end=request.shard.range.end)


def _subsampling(request: proxy_pb2.SelectRequest) -> selection.Subsampling | None:
    if not request.HasField("subsampling"):
        return None
    message = request.subsampling
    return selection.Subsampling(
        gamma=message.gamma,
        temperature=message.temperature,
        previous_ids=unpack_int64(message.previous_ids.data, "subsampling.previous_ids"),
        previous_scores=unpack_float32(message.previous_scores.data, "subsampling.previous_scores"),
    )


def query_from_proto(request: proxy_pb2.SelectRequest) -> selection.Query:
    """The domain Query of a SelectRequest (unpacking errors are InvalidArgumentError)."""
    return selection.Query(
        training=_training(request.training),
        strategy=request.strategy,
        k=request.k,
        seed=request.seed,
        spec=_spec(request.classifier),
        candidate_ids=unpack_int64(request.candidate_ids.data, "candidate_ids"),
        shard=_shard(request),
        subsampling=_subsampling(request),
        return_scores=request.return_scores,
        mc_samples=request.mc_samples,
        initial=request.initial,
        precision=request.precision,
        class_balanced=request.class_balanced,
    )


def _timings(timings: selection.Timings) -> proxy_pb2.Timings:
    return proxy_pb2.Timings(
        load_s=timings.load_s,
        fit_s=timings.fit_s,
        score_s=timings.score_s,
        select_s=timings.select_s,
    )


class ProxyServicer(proxy_pb2_grpc.ProxyServiceServicer):
    """ProxyService over the versions and models held by `cache`, within `limits`."""

    def __init__(
        self,
        cache: VersionCache,
        score_threads: int = 1,
        sequential_warm_start: bool = True,
        limits: RequestLimits | None = None,
        metrics: ProxyMetrics | None = None,
        shards: ShardOwner | None = None,
    ):
        self.cache = cache
        self.shards = shards  # set on a `--shard I/R` replica: it holds only its part
        self.metrics = metrics or ProxyMetrics(cache)
        self.score_threads = score_threads
        # SelectSequential refits warm after each label; False makes every refit cold.
        self.sequential_warm_start = sequential_warm_start
        self.limits = limits or RequestLimits()

    def check_ready(self) -> None:
        """Readiness: raises UnavailableError unless the store answers."""
        self.cache.store.check_reachable()

    def _owned_version(self, pool: str, tag: str) -> EmbeddingVersion:
        """The request's version (names checked) on a shard-owning replica; NotFoundError
        if the store deleted it since its parts were loaded."""
        version = EmbeddingVersion(pool, tag)
        if self.shards is not None:
            self.shards.drop_if_deleted(version)
        return version

    def Describe(
        self, request: proxy_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> proxy_pb2.DescribeResponse:
        """The part this replica owns (unset: whole versions) and its scoring precision."""
        response = proxy_pb2.DescribeResponse(
            precision=self.cache.precision, float16_min_rows=self.cache.float16_min_rows
        )
        if self.shards is not None:  # a shard-owning replica holds its part in float32
            response.precision, response.float16_min_rows = "float32", 0
            response.shard.CopyFrom(
                proxy_pb2.ShardPart(index=self.shards.part.index, count=self.shards.part.count)
            )
        return response

    def _check_training(self, training: proxy_pb2.TrainingSet) -> None:
        self.limits.check_classes(training.num_classes)
        self.limits.check_ids("training.ids", training.ids.data)
        self.limits.check_ids("training.labels", training.labels.data, itemsize=4)

    def _check_select(self, request: proxy_pb2.SelectRequest, check_k: bool = True) -> None:
        """Refuse a SelectRequest over the limits before anything is unpacked."""
        check_strings(request)
        if check_k:
            self.limits.check_k(request.k)
        self._check_training(request.training)
        self.limits.check_ids("candidate_ids", request.candidate_ids.data)
        self.limits.check_ids("shard.ids", request.shard.ids.data)
        self.limits.check_ids("subsampling.previous_ids", request.subsampling.previous_ids.data)
        self.limits.check_ids(
            "subsampling.previous_scores", request.subsampling.previous_scores.data, itemsize=4
        )

    def Select(
        self, request: proxy_pb2.SelectRequest, context: grpc.ServicerContext
    ) -> proxy_pb2.SelectResponse:
        self._check_select(request)
        query = query_from_proto(request)
        if self.shards is not None:
            result = self.shards.select(
                self._owned_version(request.pool, request.embedding_version),
                query,
                request.adopt,
                self.cache.models,
                Deadline.of(context),
                self.score_threads,
            )
        else:
            result = selection.select(
                _loader(
                    self.cache,
                    request.pool,
                    request.embedding_version,
                    selection.wanted_precision(query),
                ),
                self.cache.models,
                query,
                deadline=Deadline.of(context),
                threads=self.score_threads,
            )
        self.metrics.record("Select", result.timings)
        return proxy_pb2.SelectResponse(
            ids=common_pb2.Int64Array(data=pack_int64(result.ids)),
            scores=common_pb2.Float32Array(data=pack_float32(result.scores)),
            strategy=result.strategy_used,
            fallback_reason=result.fallback_reason,
            timings=_timings(result.timings),
            candidates=result.n_candidates,
            scored_ids=common_pb2.Int64Array(data=pack_int64(result.scored_ids)),
            scored_scores=common_pb2.Float32Array(data=pack_float32(result.scored_scores)),
            predicted_labels=common_pb2.Int32Array(data=pack_int32(result.predicted_labels)),
            predicted_probabilities=common_pb2.Float32Array(
                data=pack_float32(result.predicted_probabilities)
            ),
            precision=result.precision,
            rescored=result.rescored,
        )

    def Predict(
        self, request: proxy_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> proxy_pb2.PredictResponse:
        check_strings(request)
        self._check_training(request.training)
        self.limits.check_ids("ids", request.ids.data)
        ids = unpack_int64(request.ids.data, "ids")
        if self.shards is not None:
            load = self.shards.predict_loader(
                self._owned_version(request.pool, request.embedding_version),
                unpack_int64(request.training.ids.data, "training.ids"),
                ids,
            )
        else:
            load = _loader(self.cache, request.pool, request.embedding_version)
        result = selection.predict(
            load,
            self.cache.models,
            _training(request.training),
            ids,
            seed=request.seed,
            spec=_spec(request.classifier),
            deadline=Deadline.of(context),
            strategy=request.strategy,
        )
        self.metrics.record("Predict", result.timings)
        return proxy_pb2.PredictResponse(
            labels=common_pb2.Int32Array(data=pack_int32(result.labels)),
            confidence=common_pb2.Float32Array(data=pack_float32(result.confidence)),
            timings=_timings(result.timings),
            scores=common_pb2.Float32Array(data=pack_float32(result.scores)),
        )

    def SelectSequential(
        self,
        request_iterator: Iterator[proxy_pb2.SequentialRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[proxy_pb2.SequentialResponse]:
        """`start`, then one `label` per item returned; the stream ends when no item is left.

        An error (bad label, unknown id, a message out of order) ends the stream with its
        status code; the model lives only in this call.
        """
        deadline = Deadline.of(context)
        first = next(request_iterator, None)
        if first is None:
            return
        arrived = time.perf_counter()
        if first.WhichOneof("step") != "start":
            raise InvalidArgumentError(
                "the first message of SelectSequential must be `start` (a SelectRequest), "
                f"got {first.WhichOneof('step') or 'an empty message'}"
            )
        request = first.start
        self._check_select(request, check_k=False)  # a sequential stream ignores k
        query = query_from_proto(request)
        if self.shards is not None:
            session, step = self.shards.sequential(
                self._owned_version(request.pool, request.embedding_version),
                query,
                request.adopt,
                deadline,
                self.score_threads,
                self.sequential_warm_start,
            )
        else:
            session, step = sequential.SequentialSession.start(
                _loader(
                    self.cache,
                    request.pool,
                    request.embedding_version,
                    selection.wanted_precision(query),
                ),
                query,
                deadline=deadline,
                threads=self.score_threads,
                warm_start=self.sequential_warm_start,
            )
        yield _sequential_response(step, time.perf_counter() - arrived)
        for message in request_iterator:
            arrived = time.perf_counter()
            if message.WhichOneof("step") != "label":
                raise InvalidArgumentError(
                    "after `start`, SelectSequential takes only `label` messages, got "
                    f"{message.WhichOneof('step') or 'an empty message'}"
                )
            next_step = session.label(message.label.id, message.label.label, deadline)
            if next_step is None:
                return
            yield _sequential_response(next_step, time.perf_counter() - arrived)


def _sequential_response(step: sequential.Step, latency_s: float) -> proxy_pb2.SequentialResponse:
    return proxy_pb2.SequentialResponse(
        id=step.id,
        score=step.score,
        strategy=step.strategy_used,
        fallback_reason=step.fallback_reason,
        timings=_timings(step.timings),
        labels=step.labels,
        latency_s=latency_s,
    )
