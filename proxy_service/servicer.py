"""The gRPC face of the proxy: unpack the request, call the domain, pack the response."""

from __future__ import annotations

import grpc
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc

from proxal_runtime.arrays import pack_float32, pack_int32, pack_int64, unpack_int32, unpack_int64
from proxal_runtime.errors import InvalidArgumentError
from proxal_runtime.names import check_name
from proxy_service import selection
from proxy_service.cache import VersionCache
from proxy_service.classifiers import ClassifierSpec

SERVICE_NAME: str = proxy_pb2.DESCRIPTOR.services_by_name["ProxyService"].full_name


def _loader(cache: VersionCache, pool: str, version: str) -> selection.Loader:
    check_name("pool", pool)
    if not version:
        raise InvalidArgumentError(
            "embedding_version is empty: name a version; list them with EncoderService.ListVersions"
        )
    return lambda: cache.get(pool, version)


def _training(message: proxy_pb2.TrainingSet) -> selection.TrainingSet:
    return selection.TrainingSet(
        ids=unpack_int64(message.ids.data, "training.ids"),
        labels=unpack_int32(message.labels.data, "training.labels"),
        num_classes=message.num_classes,
    )


def _spec(message: proxy_pb2.ClassifierSpec) -> ClassifierSpec:
    return ClassifierSpec(kind=message.kind, c=message.c, max_iter=message.max_iter)


def _timings(timings: selection.Timings) -> proxy_pb2.Timings:
    return proxy_pb2.Timings(
        load_s=timings.load_s,
        fit_s=timings.fit_s,
        score_s=timings.score_s,
        select_s=timings.select_s,
    )


class ProxyServicer(proxy_pb2_grpc.ProxyServiceServicer):
    """ProxyService over the versions and models held by `cache`."""

    def __init__(self, cache: VersionCache):
        self.cache = cache

    def Select(
        self, request: proxy_pb2.SelectRequest, context: grpc.ServicerContext
    ) -> proxy_pb2.SelectResponse:
        result = selection.select(
            _loader(self.cache, request.pool, request.embedding_version),
            self.cache.models,
            _training(request.training),
            unpack_int64(request.candidate_ids.data, "candidate_ids"),
            strategy=request.strategy,
            k=request.k,
            seed=request.seed,
            spec=_spec(request.classifier),
        )
        return proxy_pb2.SelectResponse(
            ids=common_pb2.Int64Array(data=pack_int64(result.ids)),
            scores=common_pb2.Float32Array(data=pack_float32(result.scores)),
            strategy=result.strategy_used,
            fallback_reason=result.fallback_reason,
            timings=_timings(result.timings),
            candidates=result.n_candidates,
        )

    def Predict(
        self, request: proxy_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> proxy_pb2.PredictResponse:
        result = selection.predict(
            _loader(self.cache, request.pool, request.embedding_version),
            self.cache.models,
            _training(request.training),
            unpack_int64(request.ids.data, "ids"),
            seed=request.seed,
            spec=_spec(request.classifier),
        )
        return proxy_pb2.PredictResponse(
            labels=common_pb2.Int32Array(data=pack_int32(result.labels)),
            confidence=common_pb2.Float32Array(data=pack_float32(result.confidence)),
            timings=_timings(result.timings),
        )
