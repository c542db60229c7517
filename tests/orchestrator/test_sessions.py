"""Labeling sessions through a real OrchestratorService, backed by a real proxy subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc

from orchestrator.clients import ProxyClient
from orchestrator.processes import ServiceProcess
from orchestrator.servicer import OrchestratorServicer
from orchestrator.sessions import Sessions
from proxal_runtime.server import ServerSettings, start_server
from proxal_store import EncoderInfo, Store

N_TRAIN, N_TEST, DIM = 300, 60, 16
CLASSES = ["alpha", "beta", "gamma"]


def _blobs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    centres = rng.normal(scale=4.0, size=(len(CLASSES), DIM))
    y = rng.integers(0, len(CLASSES), size=n)
    return (centres[y] + rng.normal(size=(n, DIM))).astype(np.float32), [CLASSES[i] for i in y]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[pb_grpc.OrchestratorServiceStub, Store]]:
    root = tmp_path_factory.mktemp("sessions")
    store = Store(str(root / "store"))
    rng = np.random.default_rng(0)
    x, y = _blobs(N_TRAIN + N_TEST, rng)
    store.add_pool_rows("blobs", "train", [f"train text {i}" for i in range(N_TRAIN)], y[:N_TRAIN])
    store.add_pool_rows("blobs", "test", [f"test text {i}" for i in range(N_TEST)], y[N_TRAIN:])
    with store.begin_embedding("blobs", EncoderInfo("synthetic", "none", DIM, 0)) as writer:
        writer.write(np.arange(N_TRAIN + N_TEST), x)
        writer.commit()
    with ServiceProcess("proxy_service", store.uri, log_path=root / "proxy.log") as proxy:
        sessions = Sessions(store, ProxyClient(proxy.address))
        servicer = OrchestratorServicer(sessions)
        running = start_server(
            ServerSettings(port=0),
            lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
            ["proxal.orchestrator.v1.OrchestratorService"],
        )
        with grpc.insecure_channel(running.address) as channel:
            yield pb_grpc.OrchestratorServiceStub(channel), store
        running.stop(0)


def test_label_loop_over_grpc(stack) -> None:  # type: ignore[no-untyped-def]
    stub, store = stack
    session = stub.CreateSession(
        pb.CreateSessionRequest(
            session="loop", pool="blobs", strategy="margin", batch_size=8, seed=1
        )
    )
    assert session.embedding_version == "v1" and list(session.classes) == CLASSES
    gold = dict(
        zip(
            range(N_TRAIN),
            store.pool_rows("blobs", split="train").column("label").to_pylist(),
            strict=True,
        )
    )
    seen: set[int] = set()
    strategies = []
    for _ in range(3):
        batch = stub.NextBatch(pb.NextBatchRequest(session="loop"))
        ids = [item.id for item in batch.items]
        assert len(ids) == 8 and len(set(ids)) == 8
        assert not seen & set(ids), "a batch must never contain an already-labeled id"
        assert all(0 <= i < N_TRAIN for i in ids), "only ids of the session's split"
        seen.update(ids)
        strategies.append((batch.strategy, batch.fallback_reason))
        reply = stub.SubmitLabels(
            pb.SubmitLabelsRequest(
                session="loop", labels=[pb.Label(id=i, label=gold[i]) for i in ids]
            )
        )
        assert reply.accepted == 8 and reply.total_labels == len(seen)
    # the cold start (no labels) falls back to random and says why; later rounds use margin
    assert strategies[0][0] == "random" and strategies[0][1]
    assert strategies[-1] == ("margin", "")
    status = stub.GetSession(pb.GetSessionRequest(session="loop"))
    assert status.labels == 24 and status.rounds == 3
    # acknowledged labels are in the store, read back by a fresh Store on the same directory
    ids, labels = Store(store.uri).read_labels("loop")
    assert sorted(ids.tolist()) == sorted(seen)
    assert all(gold[i] == lab for i, lab in zip(ids.tolist(), labels, strict=True))


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (pb.CreateSessionRequest(session="x", pool="nope"), grpc.StatusCode.NOT_FOUND, "pool"),
        (
            pb.CreateSessionRequest(session="Bad Name", pool="blobs"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "session name",
        ),
        (
            pb.CreateSessionRequest(session="x", pool="blobs", embedding_version="v7"),
            grpc.StatusCode.NOT_FOUND,
            "v7",
        ),
        (
            pb.CreateSessionRequest(session="x", pool="blobs", split="dev"),
            grpc.StatusCode.NOT_FOUND,
            "split",
        ),
        (
            pb.CreateSessionRequest(session="x", pool="blobs", batch_size=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "batch_size",
        ),
    ],
)
def test_create_session_bad_input(stack, request_, code, fragment) -> None:  # type: ignore[no-untyped-def]
    stub, _ = stack
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateSession(request_)
    assert info.value.code() == code
    assert fragment in info.value.details()


def test_bad_labels_are_rejected_and_nothing_is_written(stack) -> None:  # type: ignore[no-untyped-def]
    stub, store = stack
    stub.CreateSession(pb.CreateSessionRequest(session="bad", pool="blobs"))
    cases = [
        (
            [pb.Label(id=1, label="alpha"), pb.Label(id=N_TRAIN + 5, label="beta")],
            grpc.StatusCode.NOT_FOUND,
            "not in split",
        ),  # a test-split id
        ([pb.Label(id=10**9, label="alpha")], grpc.StatusCode.NOT_FOUND, "not in split"),
        ([pb.Label(id=1, label="delta")], grpc.StatusCode.INVALID_ARGUMENT, "unknown label"),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "no labels"),
    ]
    for labels, code, fragment in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitLabels(pb.SubmitLabelsRequest(session="bad", labels=labels))
        assert info.value.code() == code and fragment in info.value.details()
    assert store.read_labels("bad")[0].size == 0
    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitLabels(
            pb.SubmitLabelsRequest(session="ghost", labels=[pb.Label(id=1, label="a")])
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_proxy_errors_keep_their_status(stack) -> None:  # type: ignore[no-untyped-def]
    stub, _ = stack
    stub.CreateSession(pb.CreateSessionRequest(session="weird", pool="blobs", strategy="telepathy"))
    stub.SubmitLabels(
        pb.SubmitLabelsRequest(
            session="weird", labels=[pb.Label(id=0, label="alpha"), pb.Label(id=1, label="beta")]
        )
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.NextBatch(pb.NextBatchRequest(session="weird"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "proxy service" in info.value.details() and "telepathy" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.NextBatch(
            pb.NextBatchRequest(session="weird", k=N_TRAIN)
        )  # more than the unlabeled candidates
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sessions_survive_a_new_orchestrator(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stub, store = stack
    stub.CreateSession(pb.CreateSessionRequest(session="durable", pool="blobs", batch_size=4))
    batch = stub.NextBatch(pb.NextBatchRequest(session="durable"))
    stub.SubmitLabels(
        pb.SubmitLabelsRequest(
            session="durable", labels=[pb.Label(id=item.id, label="alpha") for item in batch.items]
        )
    )
    # a second orchestrator over the same store (as after a restart) sees the same session
    fresh = Sessions(Store(store.uri), ProxyClient("127.0.0.1:1"))
    status = fresh.status("durable")
    assert status.labels == 4 and status.rounds == 1 and status.record.batch_size == 4
