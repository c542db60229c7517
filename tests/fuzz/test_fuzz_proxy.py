"""Hostile-input fuzzing of every ProxyService RPC against a real server and store.

Per RPC, 1,000 generated requests (or bidirectional streams): mutants of valid requests,
hostile messages and raw bytes, over pool "blobs" (see `ProxyWorld`). Every call must end
OK or with a client-error status; successful selections must be well formed; afterwards
the server is SERVING, a valid Select still works and the store's versions are unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import strategies as st
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.classifiers import KINDS
from proxal.proxy_service.servicer import ProxyServicer
from proxal.proxy_service.strategies import STRATEGIES
from proxal.runtime.arrays import pack_int32, pack_int64, unpack_float32, unpack_int64
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import Store

from tests.fuzz.conftest import PROXY_ROWS, STOP_WAIT_S, ProxyWorld
from tests.fuzz.fuzzing import (
    INT32,
    INT64,
    UINT64,
    Outcome,
    Request,
    Strategy,
    assert_serving,
    choices,
    doubles,
    float32_arrays,
    fuzz_rpc,
    hostile_text,
    int32_arrays,
    int64_arrays,
    ints,
    ints_outside,
    invoke,
    messages,
    mutants,
    names,
    one,
    or_raw,
    parsed,
    requests_of,
    rpcs,
    sometimes,
)

# Fits of 1 to 20 iterations stop before converging, on purpose (they stay cheap).
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SERVICE = proxy_pb2.DESCRIPTOR.services_by_name["ProxyService"]
RPCS = rpcs(SERVICE)
IDS = list(range(PROXY_ROWS))
CLASSES = [2, 3, 4]
# Fits stay cheap: a few to 20 iterations (0 is the kind's default: 100 to 200).
MAX_ITERS = [0, 1, 5, 20]

TRAINING_FIELDS = {
    "ids.data": int64_arrays(IDS),
    "labels.data": int32_arrays([0, 1, 2, 3]),
    "num_classes": ints(INT32, CLASSES),
}
CLASSIFIER_FIELDS = {
    "kind": choices(KINDS, hostile_text()),
    "c": doubles([0.0, 1.0, 0.01]),
    "max_iter": ints_outside(INT32, 1, 10_000, MAX_ITERS),
}
SELECT_FIELDS: dict[str, Strategy] = {
    "pool": names(["blobs", "bare"]),
    "embedding_version": names(["v1", "v2"]),
    **{f"training.{k}": v for k, v in TRAINING_FIELDS.items()},
    **{f"classifier.{k}": v for k, v in CLASSIFIER_FIELDS.items()},
    "strategy": choices(list(STRATEGIES), hostile_text()),
    "k": ints(INT32, [1, 5, 20]),
    "seed": ints(UINT64),
    "candidate_ids.data": int64_arrays(IDS),
    "shard.range.start": ints(INT64, [0, 100]),
    "shard.range.end": ints(INT64, [200, PROXY_ROWS]),
    "shard.ids.data": int64_arrays(IDS),
    "subsampling.gamma": doubles([0.5, 1.0]),
    "subsampling.temperature": doubles([0.01, 1.0]),
    "subsampling.previous_ids.data": int64_arrays(IDS),
    "subsampling.previous_scores.data": float32_arrays(),
    "mc_samples": ints(INT32, [0, 2, 5]),
    "shard.part.index": ints(INT32, [0, 1, 3]),
    "shard.part.count": ints(INT32, [1, 2, 4]),
    "precision": choices(["", "float32", "float16"], hostile_text()),
    "adopt": st.booleans(),
}
PREDICT_FIELDS: dict[str, Strategy] = {
    "pool": SELECT_FIELDS["pool"],
    "embedding_version": SELECT_FIELDS["embedding_version"],
    **{f"training.{k}": v for k, v in TRAINING_FIELDS.items()},
    **{f"classifier.{k}": v for k, v in CLASSIFIER_FIELDS.items()},
    "seed": ints(UINT64),
    "ids.data": int64_arrays(IDS),
}


def ids_message(ids: Sequence[int]) -> common_pb2.Int64Array:
    return common_pb2.Int64Array(data=pack_int64(np.asarray(ids, dtype=np.int64)))


@st.composite
def trainings(draw: st.DrawFn) -> proxy_pb2.TrainingSet:
    """Up to 40 distinct labeled ids of the pool, labels in range."""
    ids = draw(st.lists(st.sampled_from(IDS), max_size=40, unique=True))
    num_classes = draw(st.sampled_from(CLASSES))
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=len(ids), max_size=len(ids)))
    return proxy_pb2.TrainingSet(
        ids=ids_message(ids),
        labels=common_pb2.Int32Array(data=pack_int32(np.asarray(labels, dtype=np.int32))),
        num_classes=num_classes,
    )


CLASSIFIERS = st.builds(
    proxy_pb2.ClassifierSpec,
    kind=st.sampled_from(["", *KINDS]),
    max_iter=st.sampled_from(MAX_ITERS),
    balanced=st.booleans(),
)
SHARDS = st.one_of(
    st.none(),
    st.builds(
        lambda a, b: proxy_pb2.Shard(range=proxy_pb2.IdRange(start=min(a, b), end=max(a, b) + 1)),
        st.integers(0, PROXY_ROWS - 1),
        st.integers(0, PROXY_ROWS - 1),
    ),
    st.lists(st.sampled_from(IDS), min_size=1, max_size=30).map(
        lambda ids: proxy_pb2.Shard(ids=ids_message(ids))
    ),
)
SUBSAMPLINGS = st.one_of(
    st.none(),
    st.builds(
        lambda ids, gamma: proxy_pb2.Subsampling(
            gamma=gamma,
            temperature=0.01,
            previous_ids=ids_message(ids),
            previous_scores=common_pb2.Float32Array(
                data=np.linspace(0, 1, len(ids), dtype="<f4").tobytes()
            ),
        ),
        st.lists(st.sampled_from(IDS), max_size=60, unique=True),
        st.sampled_from([0.25, 1.0]),
    ),
)


@st.composite
def valid_selects(draw: st.DrawFn) -> proxy_pb2.SelectRequest:
    """Well-formed selections on pool "blobs" v1 (a strategy may still fall back)."""
    request = proxy_pb2.SelectRequest(
        pool="blobs",
        embedding_version="v1",
        training=draw(trainings()),
        classifier=draw(CLASSIFIERS),
        strategy=draw(st.sampled_from(["", *STRATEGIES])),
        k=draw(st.sampled_from([1, 5, 20])),
        seed=draw(ints(UINT64)),
        return_scores=draw(st.booleans()),
        mc_samples=draw(st.sampled_from([0, 2, 5])),
    )
    if draw(st.booleans()):
        request.candidate_ids.CopyFrom(ids_message(draw(st.lists(st.sampled_from(IDS)))))
    if (shard := draw(SHARDS)) is not None:
        request.shard.CopyFrom(shard)
    if (subsampling := draw(SUBSAMPLINGS)) is not None:
        request.subsampling.CopyFrom(subsampling)
    return request


@st.composite
def valid_predicts(draw: st.DrawFn) -> proxy_pb2.PredictRequest:
    return proxy_pb2.PredictRequest(
        pool="blobs",
        embedding_version="v1",
        training=draw(trainings()),
        classifier=draw(CLASSIFIERS),
        seed=draw(ints(UINT64)),
        ids=ids_message(draw(st.lists(st.sampled_from(IDS), max_size=50))),
    )


def select_requests() -> Strategy:
    return requests_of(proxy_pb2.SelectRequest, valid_selects(), SELECT_FIELDS)


@st.composite
def valid_streams(draw: st.DrawFn) -> list[Request]:
    """`start`, then labels for up to 6 distinct unlabeled ids, as a labeler answers."""
    start = draw(valid_selects())
    labeled = set(unpack_int64(start.training.ids.data).tolist())
    free = [i for i in IDS if i not in labeled]
    ids = draw(st.lists(st.sampled_from(free), max_size=6, unique=True))
    classes = start.training.num_classes
    stream: list[Request] = [proxy_pb2.SequentialRequest(start=start)]
    for i in ids:
        label = proxy_pb2.Label(id=i, label=draw(st.integers(0, classes - 1)))
        stream.append(proxy_pb2.SequentialRequest(label=label))
    return stream


def sequential_streams() -> Strategy:
    """Valid streams (one in four: each label refits), and streams of up to 5 hostile
    steps (a start, labels, empty steps)."""
    step = st.one_of(
        mutants(valid_selects(), proxy_pb2.SelectRequest, SELECT_FIELDS).map(
            lambda start: proxy_pb2.SequentialRequest(start=start)
        ),
        messages(proxy_pb2.Label, {"id": ints(INT64, IDS[:5]), "label": ints(INT32, [0, 1])}).map(
            lambda label: proxy_pb2.SequentialRequest(label=label)
        ),
        st.just(proxy_pb2.SequentialRequest()),
    )
    return sometimes(valid_streams(), st.lists(or_raw(step), max_size=5), 4)


REQUESTS: dict[str, Callable[[], Strategy]] = {
    "Select": lambda: one(select_requests()),
    "Predict": lambda: one(requests_of(proxy_pb2.PredictRequest, valid_predicts(), PREDICT_FIELDS)),
    "SelectSequential": sequential_streams,
    "Describe": lambda: one(or_raw(st.just(proxy_pb2.DescribeRequest()))),
}


def test_every_rpc_is_fuzzed() -> None:
    assert set(REQUESTS) == set(RPCS)


def _check_selection(requests: Sequence[Request], outcome: Outcome) -> None:
    """A successful Select returns at most k distinct unlabeled ids of the pool."""
    request = parsed(requests[0], proxy_pb2.SelectRequest)
    response = outcome.responses[0]
    ids, scores = unpack_int64(response.ids.data), unpack_float32(response.scores.data)
    labeled = set(unpack_int64(request.training.ids.data).tolist())
    assert len(ids) == len(scores) <= request.k
    assert len(set(ids.tolist())) == len(ids)
    assert set(ids.tolist()) <= set(IDS) - labeled


def _check_predictions(requests: Sequence[Request], outcome: Outcome) -> None:
    request = parsed(requests[0], proxy_pb2.PredictRequest)
    response = outcome.responses[0]
    assert len(response.labels.data) // 4 == len(request.ids.data) // 8


def _check_description(requests: Sequence[Request], outcome: Outcome) -> None:
    """A replica started without --shard describes itself as owning no part."""
    response = outcome.responses[0]
    assert not response.HasField("shard")
    assert response.precision in {"auto", "float32", "float16"}


CHECKS: dict[str, Callable[[Sequence[Request], Outcome], None] | None] = {
    "Select": _check_selection,
    "Predict": _check_predictions,
    "SelectSequential": None,
    "Describe": _check_description,
}


@pytest.mark.parametrize("rpc", list(REQUESTS))
def test_hostile_requests_get_client_errors(proxy_world: ProxyWorld, rpc: str) -> None:
    ledger = fuzz_rpc(proxy_world.channel, RPCS[rpc], REQUESTS[rpc](), CHECKS[rpc])
    ledger.check()
    assert_serving(proxy_world.channel, ["", SERVICE.full_name])
    store = proxy_world.store
    assert store.list_versions("blobs", include_incomplete=True) == proxy_world.versions
    # A valid request still works.
    training = proxy_pb2.TrainingSet(
        ids=ids_message(range(20)),
        labels=common_pb2.Int32Array(data=pack_int32(proxy_world.labels[:20])),
        num_classes=4,
    )
    valid = proxy_pb2.SelectRequest(
        pool="blobs", embedding_version="v1", training=training, strategy="margin", k=10
    )
    outcome = invoke(proxy_world.channel, RPCS["Select"], [valid])
    assert outcome.code is grpc.StatusCode.OK, outcome
    _check_selection([valid], outcome)


@pytest.mark.parametrize("rpc", ["Select", "SelectSequential"])
def test_an_unparsable_message_is_invalid_argument_and_shutdown_does_not_wait(
    tmp_path: Path, rpc: str
) -> None:
    servicer = ProxyServicer(VersionCache(Store(str(tmp_path / "store")), 1, 1))
    running = start_server(
        ServerSettings(port=0, max_workers=2),
        lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
        [SERVICE.full_name],
    )
    with grpc.insecure_channel(running.address) as channel:
        outcome = invoke(channel, RPCS[rpc], [b"\xff"], timeout=600)
    stopped = threading.Thread(target=lambda: running.server.stop(0).wait(), daemon=True)
    stopped.start()
    stopped.join(STOP_WAIT_S)
    assert not stopped.is_alive(), "the server still waits for the call to finish"
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome
