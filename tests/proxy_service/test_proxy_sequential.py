"""Sequential selection: the domain session, the warm-started refit and the gRPC stream."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.cache import LoadedVersion, OnceLRU
from proxal.proxy_service.classifiers import ClassifierSpec, LogisticRegressionProxy, refit
from proxal.proxy_service.selection import Query, TrainingSet, select
from proxal.proxy_service.sequential import SequentialSession, Step
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime.arrays import pack_int32, pack_int64
from proxal.runtime.errors import InvalidArgumentError, NotFoundError
from proxal.runtime.server import RunningServer, ServerSettings, grpc_channel_options, start_server
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import Store

from tests.conftest import add_blobs_version

POOL = "blobs"
N, DIM, CLASSES, LABELED = 2000, 32, 4, 20


@dataclass
class Blobs:
    """The synthetic pool: true classes and vectors (ids 0..N-1 in the store, 1000 + row in
    the in-memory version of the domain tests)."""

    labels: np.ndarray
    vectors: np.ndarray


@pytest.fixture(scope="module")
def blobs() -> Blobs:
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 0.6, size=(CLASSES, DIM))
    labels = rng.integers(0, CLASSES, size=N)
    vectors = (centers[labels] + rng.normal(size=(N, DIM))).astype(np.float32)
    return Blobs(labels, vectors)


@pytest.fixture(scope="module")
def version(blobs: Blobs) -> LoadedVersion:
    ids = np.arange(1000, 1000 + N, dtype=np.int64)  # ids != rows: catches mix-ups
    return LoadedVersion(EmbeddingVersion("blobs", "v1"), ids, blobs.vectors)


def truth(blobs: Blobs, item_id: int) -> int:
    return int(blobs.labels[item_id - 1000])


def query(
    blobs: Blobs, n: int = LABELED, strategy: str = "margin", seed: int = 3, **kw: object
) -> Query:
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    training = TrainingSet(ids, blobs.labels[:n].astype(np.int32), CLASSES)
    return Query(training=training, strategy=strategy, k=0, seed=seed, **kw)  # type: ignore[arg-type]


def run(session: SequentialSession, first: Step, blobs: Blobs, steps: int) -> list[Step]:
    out = [first]
    for _ in range(steps):
        step = session.label(out[-1].id, truth(blobs, out[-1].id))
        assert step is not None
        out.append(step)
    return out


# --- the warm-started refit -------------------------------------------------------------


def test_warm_refit_is_close_to_a_cold_fit(blobs: Blobs) -> None:
    X, y = blobs.vectors, blobs.labels
    previous = LogisticRegressionProxy(seed=1).fit(X[:40], y[:40], CLASSES)
    warm = LogisticRegressionProxy(seed=1).fit(X[:41], y[:41], CLASSES, warm_start_from=previous)
    cold = LogisticRegressionProxy(seed=1).fit(X[:41], y[:41], CLASSES)
    assert warm.warm_started_ and not cold.warm_started_
    p_warm, p_cold = warm.predict_proba(X[100:]), cold.predict_proba(X[100:])
    assert np.abs(p_warm - p_cold).max() < 0.1
    assert (p_warm.argmax(axis=1) == p_cold.argmax(axis=1)).mean() > 0.97
    again = LogisticRegressionProxy(seed=1).fit(X[:41], y[:41], CLASSES, warm_start_from=previous)
    np.testing.assert_array_equal(again.coef_, warm.coef_)  # deterministic
    assert previous.coef_.shape == (CLASSES, DIM)  # the previous model is left as it was


def test_warm_refit_goes_cold_when_the_classes_change(blobs: Blobs) -> None:
    X, y = blobs.vectors, blobs.labels
    two = np.flatnonzero(y < 2)[:30]
    previous = LogisticRegressionProxy().fit(X[two], y[two], CLASSES)
    binary = refit(previous, ClassifierSpec(), 0, X[two[:25]], y[two[:25]], CLASSES)
    assert isinstance(binary, LogisticRegressionProxy) and binary.warm_started_
    model = refit(previous, ClassifierSpec(), 0, X[:40], y[:40], CLASSES)
    assert isinstance(model, LogisticRegressionProxy) and not model.warm_started_
    assert model.predict_proba(X[:5]).shape == (5, CLASSES)


# --- the domain session -----------------------------------------------------------------


def test_labeled_ids_are_never_returned_again(blobs: Blobs, version: LoadedVersion) -> None:
    session, first = SequentialSession.start(lambda: version, query(blobs))
    steps = run(session, first, blobs, 25)
    ids = [s.id for s in steps]
    assert len(set(ids)) == len(ids)
    assert min(ids) >= 1000 + LABELED
    assert [s.labels for s in steps] == list(range(LABELED, LABELED + 26))
    assert all(s.strategy_used == "margin" and not s.fallback_reason for s in steps)
    assert [s.warm_started for s in steps] == [False] + [True] * 25
    assert first.timings.load_s > 0 and all(s.latency_s > 0 for s in steps)
    assert session.remaining == N - LABELED - 25


def test_deterministic_given_the_seed(blobs: Blobs, version: LoadedVersion) -> None:
    def ids(seed: int, strategy: str) -> list[int]:
        session, first = SequentialSession.start(
            lambda: version, query(blobs, strategy=strategy, seed=seed)
        )
        return [s.id for s in run(session, first, blobs, 8)]

    assert ids(3, "margin") == ids(3, "margin")
    assert ids(3, "random") == ids(3, "random")
    assert ids(3, "random") != ids(4, "random")


def test_cold_refits_pick_what_select_picks(blobs: Blobs, version: LoadedVersion) -> None:
    """Without warm starts, each step is exactly a Select with k = 1 on the same labels."""
    q = query(blobs, strategy="entropy")
    session, step = SequentialSession.start(lambda: version, q, warm_start=False)
    for _ in range(5):
        labeled = session.labeled_ids
        training = TrainingSet(labeled, blobs.labels[labeled - 1000].astype(np.int32), CLASSES)
        expected = select(
            lambda: version,
            OnceLRU(4),
            Query(training=training, strategy="entropy", k=1, seed=q.seed),
        )
        assert step.id == int(expected.ids[0]) and not step.warm_started
        assert step.score == pytest.approx(float(expected.scores[0]))
        next_step = session.label(step.id, truth(blobs, step.id))
        assert next_step is not None
        step = next_step


def test_cold_start_falls_back_until_two_classes(blobs: Blobs, version: LoadedVersion) -> None:
    session, first = SequentialSession.start(lambda: version, query(blobs, n=0))
    assert first.strategy_used == "random" and first.labels == 0
    assert "no labels yet" in first.fallback_reason and "random instead" in first.fallback_reason
    zeros = 1000 + np.flatnonzero(blobs.labels == 0)[:2]
    step = session.label(int(zeros[0]), 0)
    assert step is not None and step.strategy_used == "random"
    assert "all labels are class 0" in step.fallback_reason
    one = 1000 + int(np.flatnonzero(blobs.labels == 1)[0])
    step = session.label(one, 1)
    assert step is not None and step.strategy_used == "margin" and step.fallback_reason == ""
    assert step.labels == 2 and not step.warm_started  # the first fit is cold
    step = session.label(step.id, truth(blobs, step.id))
    assert step is not None and step.warm_started


def test_cold_start_with_kmeans_initial(blobs: Blobs, version: LoadedVersion) -> None:
    session, first = SequentialSession.start(lambda: version, query(blobs, n=0, initial="kmeans"))
    assert first.strategy_used == "kmeans" and "kmeans instead" in first.fallback_reason
    step = session.label(first.id, truth(blobs, first.id))
    assert step is not None and step.strategy_used == "kmeans" and step.id != first.id


def test_label_errors_and_the_end_of_the_candidates(blobs: Blobs, version: LoadedVersion) -> None:
    candidates = np.array([1500, 1501, 1502], dtype=np.int64)
    session, first = SequentialSession.start(
        lambda: version, query(blobs, candidate_ids=candidates)
    )
    assert first.id in candidates.tolist()
    with pytest.raises(InvalidArgumentError, match=r"must be in \[0, 4\)"):
        session.label(first.id, CLASSES)
    with pytest.raises(NotFoundError, match=r"label\.id"):
        session.label(999_999, 0)
    with pytest.raises(InvalidArgumentError, match="labeled already"):
        session.label(1000, 0)  # in the initial training set
    seen = {first.id}
    step: Step | None = first
    while step is not None:
        step = session.label(step.id, truth(blobs, step.id))
        if step is not None:
            assert step.id not in seen
            seen.add(step.id)
    assert seen == set(candidates.tolist()) and session.remaining == 0
    with pytest.raises(InvalidArgumentError, match="no candidates"):
        SequentialSession.start(
            lambda: version, query(blobs, candidate_ids=np.array([1000], dtype=np.int64))
        )


# --- the gRPC stream --------------------------------------------------------------------


@dataclass
class Proxy:
    server: RunningServer
    stub: proxy_pb2_grpc.ProxyServiceStub
    health: health_pb2_grpc.HealthStub
    version: str


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, blobs: Blobs) -> Iterator[Proxy]:
    from proxal.proxy_service.cache import VersionCache

    store = Store(str(tmp_path_factory.mktemp("proxy") / "store"))
    version = add_blobs_version(store, POOL, blobs.vectors, blobs.labels)
    servicer = ProxyServicer(VersionCache(store, max_versions=2, max_models=8), score_threads=2)
    running = start_server(
        ServerSettings(port=0, max_workers=8),
        lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
    )
    channel = grpc.insecure_channel(running.address, options=grpc_channel_options())
    yield Proxy(
        running,
        proxy_pb2_grpc.ProxyServiceStub(channel),
        health_pb2_grpc.HealthStub(channel),
        version,
    )
    channel.close()
    running.stop(0)


class Stream:
    """A client stream fed one message at a time, so each label can follow a response."""

    def __init__(self, stub: proxy_pb2_grpc.ProxyServiceStub, first: proxy_pb2.SequentialRequest):
        self._queue: queue.Queue[proxy_pb2.SequentialRequest | None] = queue.Queue()
        self._queue.put(first)
        self.responses = stub.SelectSequential(iter(self._queue.get, None), timeout=30)

    def label(self, item_id: int, label: int) -> proxy_pb2.SequentialResponse:
        self._queue.put(proxy_pb2.SequentialRequest(label=proxy_pb2.Label(id=item_id, label=label)))
        return next(self.responses)

    def close(self) -> None:
        self._queue.put(None)


def start_request(proxy: Proxy, blobs: Blobs, **fields: object) -> proxy_pb2.SequentialRequest:
    ids = np.arange(LABELED)
    values: dict[str, object] = {
        "pool": POOL,
        "embedding_version": proxy.version,
        "training": proxy_pb2.TrainingSet(
            ids=common_pb2.Int64Array(data=pack_int64(ids)),
            labels=common_pb2.Int32Array(data=pack_int32(blobs.labels[ids].astype(np.int32))),
            num_classes=CLASSES,
        ),
        "strategy": "least_confidence",
        "k": 7,  # ignored
        "seed": 5,
    }
    values.update(fields)
    return proxy_pb2.SequentialRequest(start=proxy_pb2.SelectRequest(**values))  # type: ignore[arg-type]


def test_stream_returns_distinct_items_as_labels_arrive(proxy: Proxy, blobs: Blobs) -> None:
    stream = Stream(proxy.stub, start_request(proxy, blobs))
    response = next(stream.responses)
    responses = [response]
    for _ in range(6):
        response = stream.label(response.id, int(blobs.labels[response.id]))
        responses.append(response)
    stream.close()
    assert list(stream.responses) == []  # the server ends the stream when the client does
    ids = [r.id for r in responses]
    assert len(set(ids)) == len(ids) and min(ids) >= LABELED
    assert [r.labels for r in responses] == list(range(LABELED, LABELED + 7))
    assert all(r.latency_s > 0 and r.strategy == "least_confidence" for r in responses)
    assert responses[0].timings.load_s > 0 and responses[1].timings.fit_s > 0


def test_stream_ends_when_no_candidate_is_left(proxy: Proxy, blobs: Blobs) -> None:
    candidates = common_pb2.Int64Array(data=pack_int64(np.array([500, 501])))
    stream = Stream(proxy.stub, start_request(proxy, blobs, candidate_ids=candidates))
    first = next(stream.responses)
    second = stream.label(first.id, int(blobs.labels[first.id]))
    assert {first.id, second.id} == {500, 501}
    with pytest.raises(StopIteration):
        stream.label(second.id, int(blobs.labels[second.id]))
    stream.close()


def stream_error(
    proxy: Proxy, first: proxy_pb2.SequentialRequest, label: tuple[int, int] | None
) -> grpc.RpcError:
    stream = Stream(proxy.stub, first)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            response = next(stream.responses)
            assert label is not None, "the start alone should have failed"
            stream.label(response.id if label[0] < 0 else label[0], label[1])
    finally:
        stream.close()
    return caught.value


@pytest.mark.parametrize(
    ("label", "code", "message"),
    [
        ((-1, CLASSES), grpc.StatusCode.INVALID_ARGUMENT, "must be in"),
        ((-1, -1), grpc.StatusCode.INVALID_ARGUMENT, "must be in"),
        ((123_456, 0), grpc.StatusCode.NOT_FOUND, "label.id"),
        ((3, 0), grpc.StatusCode.INVALID_ARGUMENT, "labeled already"),
    ],
)
def test_bad_labels_end_the_stream_with_their_status(
    proxy: Proxy, blobs: Blobs, label: tuple[int, int], code: grpc.StatusCode, message: str
) -> None:
    error = stream_error(proxy, start_request(proxy, blobs), label)
    assert error.code() is code and message in error.details()
    health = proxy.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_stream_must_begin_with_start(proxy: Proxy, blobs: Blobs) -> None:
    first = proxy_pb2.SequentialRequest(label=proxy_pb2.Label(id=30, label=0))
    error = stream_error(proxy, first, None)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "must be `start`" in error.details()
    again = stream_error(proxy, start_request(proxy, blobs, strategy="nope"), None)
    assert (
        again.code() is grpc.StatusCode.INVALID_ARGUMENT and "unknown strategy" in again.details()
    )
    # the replica keeps serving
    stream = Stream(proxy.stub, start_request(proxy, blobs))
    assert next(stream.responses).id >= LABELED
    stream.close()
