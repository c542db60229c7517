"""ProxyService end to end: a real in-process gRPC server over a real store on tmp_path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.limits import RequestLimits
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime.arrays import pack_int32, pack_int64, unpack_float32, unpack_int32, unpack_int64
from proxal.runtime.errors import ResourceExhaustedError
from proxal.runtime.ranking import top_k
from proxal.runtime.server import RunningServer, ServerSettings, grpc_channel_options, start_server
from proxal.store import EncoderInfo, Store

from tests.conftest import add_blobs_version

POOL = "blobs"
N, DIM, CLASSES, LABELED = 2000, 32, 4, 100


@dataclass
class Blobs:
    """The synthetic pool: ids 0..N-1, true classes, the class centers, the versions."""

    labels: np.ndarray
    centers: np.ndarray
    vectors: np.ndarray
    version: str
    incomplete: str


@dataclass
class Proxy:
    server: RunningServer
    cache: VersionCache
    stub: proxy_pb2_grpc.ProxyServiceStub
    health: health_pb2_grpc.HealthStub


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Blobs]:
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 0.6, size=(CLASSES, DIM))
    labels = rng.integers(0, CLASSES, size=N)
    vectors = (centers[labels] + rng.normal(size=(N, DIM))).astype(np.float32)
    store = Store(str(tmp_path_factory.mktemp("proxy") / "store"))
    version = add_blobs_version(store, POOL, vectors, labels)
    info = EncoderInfo("synthetic-blobs", "none", DIM, 16)
    incomplete = store.begin_embedding(POOL, info).version  # left running, never committed
    return store, Blobs(labels, centers, vectors, version, incomplete)


@pytest.fixture(scope="module")
def proxy(blobs: tuple[Store, Blobs]) -> Iterator[Proxy]:
    cache = VersionCache(blobs[0], max_versions=2, max_models=8)
    servicer = ProxyServicer(cache)
    running = start_server(
        ServerSettings(port=0, max_workers=8),
        lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
    )
    channel = grpc.insecure_channel(running.address, options=grpc_channel_options())
    yield Proxy(
        running,
        cache,
        proxy_pb2_grpc.ProxyServiceStub(channel),
        health_pb2_grpc.HealthStub(channel),
    )
    channel.close()
    running.stop(0)


@pytest.fixture
def data(blobs: tuple[Store, Blobs]) -> Blobs:
    return blobs[1]


def training(
    data: Blobs, n: int = LABELED, labels: np.ndarray | None = None
) -> proxy_pb2.TrainingSet:
    ids = np.arange(n)
    return proxy_pb2.TrainingSet(
        ids=common_pb2.Int64Array(data=pack_int64(ids)),
        labels=common_pb2.Int32Array(
            data=pack_int32(data.labels[ids] if labels is None else labels)
        ),
        num_classes=CLASSES,
    )


def select_request(data: Blobs, **fields: Any) -> proxy_pb2.SelectRequest:
    request = proxy_pb2.SelectRequest(
        pool=POOL,
        embedding_version=data.version,
        training=training(data),
        strategy="margin",
        k=20,
        seed=1,
    )
    for name, value in fields.items():
        if isinstance(value, bytes):
            getattr(request, name).data = value
        elif name in ("training", "classifier", "shard", "subsampling"):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


def boundary_gap(data: Blobs, ids: np.ndarray) -> float:
    """Mean distance gap between the nearest and second-nearest true class centers."""
    dist = np.linalg.norm(data.vectors[ids][:, None, :] - data.centers[None], axis=2)
    dist.sort(axis=1)
    return float((dist[:, 1] - dist[:, 0]).mean())


@pytest.mark.parametrize("strategy", ["random", "least_confidence", "margin", "entropy"])
def test_select_returns_k_distinct_unlabeled_ids(proxy: Proxy, data: Blobs, strategy: str) -> None:
    response = proxy.stub.Select(select_request(data, strategy=strategy, k=50))
    ids, scores = unpack_int64(response.ids.data), unpack_float32(response.scores.data)
    assert len(ids) == 50 and len(set(ids.tolist())) == 50
    assert ids.min() >= LABELED and ids.max() < N
    assert len(scores) == 50 and (np.diff(scores) <= 0).all()
    assert response.strategy == strategy and response.fallback_reason == ""
    assert response.candidates == N - LABELED
    assert response.timings.load_s >= 0 and response.timings.select_s >= 0


def test_an_empty_strategy_selects_by_margin(proxy: Proxy, data: Blobs) -> None:
    default = proxy.stub.Select(select_request(data, strategy="", k=30))
    margin = proxy.stub.Select(select_request(data, strategy="margin", k=30))
    assert default.strategy == "margin" and default.fallback_reason == ""
    assert default.ids.data == margin.ids.data


def test_uncertainty_strategies_pick_boundary_points(proxy: Proxy, data: Blobs) -> None:
    gaps = {}
    for strategy in ("random", "least_confidence", "margin", "entropy"):
        response = proxy.stub.Select(select_request(data, strategy=strategy, k=100))
        gaps[strategy] = boundary_gap(data, unpack_int64(response.ids.data))
    for strategy in ("least_confidence", "margin", "entropy"):
        assert gaps[strategy] < 0.6 * gaps["random"], gaps


def test_candidates_restrict_and_exclude_labeled(proxy: Proxy, data: Blobs) -> None:
    candidates = np.array([5, 5, 150, 151, 1999, 1999, 700], dtype=np.int64)
    response = proxy.stub.Select(select_request(data, candidate_ids=pack_int64(candidates), k=4))
    assert sorted(unpack_int64(response.ids.data).tolist()) == [150, 151, 700, 1999]
    assert response.candidates == 4


def test_select_is_deterministic_under_concurrency(proxy: Proxy, data: Blobs) -> None:
    request = select_request(data, strategy="entropy", seed=11, training=training(data, 60))
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: proxy.stub.Select(request), range(6)))
    assert len({r.ids.data for r in responses}) == 1


def test_predict_is_accurate_and_reuses_the_select_model(proxy: Proxy, data: Blobs) -> None:
    train = training(data, 200)
    picked = proxy.stub.Select(
        select_request(data, training=train, seed=5, strategy="least_confidence")
    )
    models = len(proxy.cache.models.keys())
    ids = np.arange(200, N)
    response = proxy.stub.Predict(
        proxy_pb2.PredictRequest(
            pool=POOL,
            embedding_version=data.version,
            training=train,
            seed=5,
            ids=common_pb2.Int64Array(data=pack_int64(ids)),
        )
    )
    assert len(proxy.cache.models.keys()) == models  # no refit
    labels = unpack_int32(response.labels.data)
    confidence = unpack_float32(response.confidence.data)
    assert len(labels) == len(confidence) == len(ids)
    assert (labels == data.labels[ids]).mean() > 0.9
    assert ((confidence >= 1 / CLASSES) & (confidence <= 1)).all()
    # the picks carry the same model's class and probability, in the order of the ids
    rows = unpack_int64(picked.ids.data) - 200
    np.testing.assert_array_equal(unpack_int32(picked.predicted_labels.data), labels[rows])
    np.testing.assert_allclose(
        unpack_float32(picked.predicted_probabilities.data), confidence[rows], atol=1e-6
    )


def test_single_class_labels_fall_back_to_random(proxy: Proxy, data: Blobs) -> None:
    one_class = training(data, 10, labels=np.full(10, 2))
    response = proxy.stub.Select(select_request(data, training=one_class, strategy="entropy"))
    assert response.strategy == "random"
    assert "entropy" in response.fallback_reason and "class 2" in response.fallback_reason
    assert len(unpack_int64(response.ids.data)) == 20
    assert not response.predicted_labels.data and not response.predicted_probabilities.data
    with pytest.raises(grpc.RpcError) as info:
        proxy.stub.Predict(
            proxy_pb2.PredictRequest(pool=POOL, embedding_version=data.version, training=one_class)
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_kmeans_initial_over_grpc(proxy: Proxy, data: Blobs) -> None:
    one_class = training(data, 10, labels=np.full(10, 2))
    request = select_request(data, training=one_class, initial="kmeans", class_balanced=True)
    response = proxy.stub.Select(request)
    assert response.strategy == "kmeans" and "instead" in response.fallback_reason
    assert len(set(unpack_int64(response.ids.data).tolist())) == 20


BAD_SELECTS: list[tuple[str, dict[str, Any], grpc.StatusCode, str]] = [
    ("unknown pool", {"pool": "nope"}, grpc.StatusCode.NOT_FOUND, "not found"),
    ("bad pool name", {"pool": "Bad/Pool"}, grpc.StatusCode.INVALID_ARGUMENT, "pool name"),
    ("unknown version", {"embedding_version": "v77"}, grpc.StatusCode.NOT_FOUND, "v77"),
    ("no version", {"embedding_version": ""}, grpc.StatusCode.INVALID_ARGUMENT, "ListVersions"),
    ("k zero", {"k": 0}, grpc.StatusCode.INVALID_ARGUMENT, "k must be"),
    ("k negative", {"k": -1}, grpc.StatusCode.INVALID_ARGUMENT, "k must be"),
    ("k too big", {"k": 5000}, grpc.StatusCode.INVALID_ARGUMENT, f"only {N - LABELED} candidates"),
    ("strategy", {"strategy": "bayes"}, grpc.StatusCode.INVALID_ARGUMENT, "valid strategies"),
    ("initial", {"initial": "dbscan"}, grpc.StatusCode.INVALID_ARGUMENT, "valid initial"),
    ("k over the limit", {"k": 10_001}, grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-k"),
    ("mc_samples", {"mc_samples": -1}, grpc.StatusCode.INVALID_ARGUMENT, "mc_samples must be"),
    ("long string", {"strategy": "x" * 513}, grpc.StatusCode.INVALID_ARGUMENT, "at most 512"),
    (  # (rows, classes) probabilities: 2^31 - 1 classes used to exhaust memory
        "classes over the limit",
        {"training": proxy_pb2.TrainingSet(num_classes=2**31 - 1)},
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "--max-classes",
    ),
    (
        "classifier",
        {"classifier": proxy_pb2.ClassifierSpec(kind="svm")},
        grpc.StatusCode.INVALID_ARGUMENT,
        "valid kinds",
    ),
    (
        "C",
        {"classifier": proxy_pb2.ClassifierSpec(c=-1)},
        grpc.StatusCode.INVALID_ARGUMENT,
        "C must",
    ),
    (
        "ids bytes",
        {"candidate_ids": b"\x01" * 9},
        grpc.StatusCode.INVALID_ARGUMENT,
        "candidate_ids",
    ),
    (
        "unknown candidates",
        {"candidate_ids": pack_int64([3000, 150])},
        grpc.StatusCode.NOT_FOUND,
        r"\[3000\]",
    ),
    (
        "shard outside the pool",
        {"shard": proxy_pb2.Shard(range=proxy_pb2.IdRange(start=10_000, end=20_000))},
        grpc.StatusCode.NOT_FOUND,
        r"holds no id.*0\.\.1999",
    ),
    (
        "inverted shard",
        {"shard": proxy_pb2.Shard(range=proxy_pb2.IdRange(start=9, end=3))},
        grpc.StatusCode.INVALID_ARGUMENT,
        "start < end",
    ),
    (
        "unknown shard ids",
        {"shard": proxy_pb2.Shard(ids=common_pb2.Int64Array(data=pack_int64([5, 99_999])))},
        grpc.StatusCode.NOT_FOUND,
        r"shard.ids.*\[99999\]",
    ),
    (
        "bald without mlp",
        {"strategy": "bald"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "kind to 'mlp'",
    ),
    (
        "ups gamma",
        {"subsampling": proxy_pb2.Subsampling(gamma=1.5, temperature=0.01)},
        grpc.StatusCode.INVALID_ARGUMENT,
        "gamma must be in",
    ),
    (
        "ups scores bytes",
        {
            "subsampling": proxy_pb2.Subsampling(
                gamma=0.1,
                temperature=0.01,
                previous_ids=common_pb2.Int64Array(data=pack_int64([1, 2])),
                previous_scores=common_pb2.Float32Array(data=b"\x00" * 7),
            )
        },
        grpc.StatusCode.INVALID_ARGUMENT,
        "previous_scores",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [case[1:] for case in BAD_SELECTS],
    ids=[case[0] for case in BAD_SELECTS],
)
def test_bad_select_gets_exact_status(
    proxy: Proxy, data: Blobs, overrides: dict[str, Any], code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        proxy.stub.Select(select_request(data, **overrides))
    assert info.value.code() == code
    assert re.search(message, info.value.details()), info.value.details()


def bad_training(data: Blobs, case: str) -> proxy_pb2.TrainingSet:
    train = training(data)
    if case == "labels out of range":
        train.labels.data = pack_int32(np.full(LABELED, CLASSES))
    elif case == "mismatched lengths":
        train.labels.data = pack_int32(data.labels[: LABELED - 1])
    elif case == "malformed ids":
        train.ids.data = train.ids.data[:-3]
    elif case == "malformed labels":
        train.labels.data = train.labels.data + b"\x00"
    elif case == "one class count":
        train.num_classes = 1
    return train


@pytest.mark.parametrize(
    "case",
    [
        "labels out of range",
        "mismatched lengths",
        "malformed ids",
        "malformed labels",
        "one class count",
    ],
)
@pytest.mark.parametrize("method", ["Select", "Predict"])
def test_bad_training_is_invalid_argument(
    proxy: Proxy, data: Blobs, case: str, method: str
) -> None:
    train = bad_training(data, case)
    with pytest.raises(grpc.RpcError) as info:
        if method == "Select":
            proxy.stub.Select(select_request(data, training=train))
        else:
            proxy.stub.Predict(
                proxy_pb2.PredictRequest(pool=POOL, embedding_version=data.version, training=train)
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_id_arrays_over_the_limit_are_resource_exhausted(proxy: Proxy, data: Blobs) -> None:
    servicer = ProxyServicer(proxy.cache, limits=RequestLimits(max_ids=10))
    eleven = pack_int64(np.arange(11))
    for overrides in ({"candidate_ids": eleven}, {"training": proxy_pb2.TrainingSet()}):
        request = select_request(data, **overrides)
        if "training" in overrides:
            request.training.labels.data = pack_int32(np.zeros(11))
        with pytest.raises(ResourceExhaustedError, match="over the server's limit of 10"):
            servicer.Select(request, context=None)
    predict = proxy_pb2.PredictRequest(ids=common_pb2.Int64Array(data=eleven))
    with pytest.raises(ResourceExhaustedError, match=r"ids holds 11 values.*--max-ids"):
        servicer.Predict(predict, context=None)


def test_incomplete_version_is_failed_precondition(proxy: Proxy, data: Blobs) -> None:
    with pytest.raises(grpc.RpcError) as info:
        proxy.stub.Select(select_request(data, embedding_version=data.incomplete))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "running" in info.value.details()


def test_server_stays_healthy_after_bad_input(proxy: Proxy, data: Blobs) -> None:
    for overrides in ({"k": 0}, {"pool": "nope"}, {"candidate_ids": b"\x00" * 3}):
        with pytest.raises(grpc.RpcError):
            proxy.stub.Select(select_request(data, **overrides))
    status = proxy.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME)).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert len(unpack_int64(proxy.stub.Select(select_request(data)).ids.data)) == 20


def test_shards_merge_to_the_unsharded_selection(proxy: Proxy, data: Blobs) -> None:
    whole = proxy.stub.Select(select_request(data, k=25))
    ids, scores = [], []
    for lo in range(0, N, 500):
        shard = proxy_pb2.Shard(range=proxy_pb2.IdRange(start=lo, end=lo + 500))
        part = proxy.stub.Select(select_request(data, k=25, shard=shard))
        ids.append(unpack_int64(part.ids.data))
        scores.append(unpack_float32(part.scores.data))
    all_ids, all_scores = np.concatenate(ids), np.concatenate(scores)
    merged = all_ids[top_k(all_scores, all_ids, 25, 1)]
    np.testing.assert_array_equal(merged, unpack_int64(whole.ids.data))


def test_ups_round_trip_over_grpc(proxy: Proxy, data: Blobs) -> None:
    full = proxy.stub.Select(select_request(data, return_scores=True))
    scored = unpack_int64(full.scored_ids.data)
    assert len(scored) == N - LABELED == full.candidates
    sub = proxy_pb2.Subsampling(
        gamma=0.1,
        temperature=0.01,
        previous_ids=full.scored_ids,
        previous_scores=full.scored_scores,
    )
    fast = proxy.stub.Select(select_request(data, subsampling=sub, seed=2))
    assert 0.05 * len(scored) < fast.candidates < 0.2 * len(scored)
    assert len(unpack_int64(fast.ids.data)) == 20


def test_deadlines_are_honoured_and_the_replica_keeps_serving(proxy: Proxy, data: Blobs) -> None:
    mlp = proxy_pb2.ClassifierSpec(kind="mlp", max_iter=2000)  # seconds of work
    with pytest.raises(grpc.RpcError) as info:
        proxy.stub.Select(select_request(data, classifier=mlp, seed=77), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(unpack_int64(proxy.stub.Select(select_request(data), timeout=30).ids.data)) == 20


@pytest.mark.parametrize("strategy", ["mahalanobis", "coreset", "badge"])
def test_diversity_and_density_strategies_over_grpc(
    proxy: Proxy, data: Blobs, strategy: str
) -> None:
    response = proxy.stub.Select(select_request(data, strategy=strategy))
    ids = unpack_int64(response.ids.data)
    assert response.strategy == strategy and len(set(ids.tolist())) == 20
    assert ids.min() >= LABELED


def test_bald_with_the_mlp_over_grpc(proxy: Proxy, data: Blobs) -> None:
    mlp = proxy_pb2.ClassifierSpec(kind="mlp", max_iter=30)
    response = proxy.stub.Select(
        select_request(data, strategy="bald", classifier=mlp, mc_samples=10)
    )
    assert response.strategy == "bald" and len(unpack_int64(response.ids.data)) == 20
    assert (np.diff(unpack_float32(response.scores.data)) <= 0).all()
