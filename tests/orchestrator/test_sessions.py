"""Labeling sessions through a real OrchestratorService, backed by a real proxy subprocess.

Leases, request-id idempotency, skip, undo, relabel, import and export, listing and
deleting sessions, and sessions written by the simulator, all over gRPC against a real
LanceDB store. Lease expiry uses a clock the test moves (no sleeping).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.engine.simulation import LoopConfig, PoolData, run_simulation
from proxal.orchestrator_service.rpc import servicer as servicer_module
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.rpc.session_client import SessionClient
from proxal.orchestrator_service.sessions.label_files import (
    CSV,
    HF,
    JSONL,
    LABEL_STUDIO,
    PARQUET,
    FileLabel,
    hf_members,
    parse_labels,
)
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.runtime.server import ServerSettings, start_server
from proxal.runtime.strategies import CLASSIFIERS, STRATEGIES
from proxal.store import EncoderInfo, SessionRecord, Store

from tests.conftest import add_session_pool

N_TRAIN, N_TEST, DIM = 300, 60, 16
CLASSES = ["alpha", "beta", "gamma"]


class Clock:
    """Wall time plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Stack:
    stub: pb_grpc.OrchestratorServiceStub
    store: Store
    address: str
    clock: Clock
    proxy_address: str


def rid() -> str:
    return uuid.uuid4().hex


def submit(
    stack: Stack, session: str, pairs: list[tuple[int, str]], who: str = "ann", **kw: object
) -> pb.SubmitLabelsResponse:
    return stack.stub.SubmitLabels(
        pb.SubmitLabelsRequest(
            session=session,
            labels=[pb.Label(id=i, label=lab) for i, lab in pairs],
            request_id=str(kw.pop("request_id", rid())),
            annotator=who,
            **kw,  # type: ignore[arg-type]
        )
    )


def gold(store: Store) -> dict[int, str]:
    labels = store.pool_rows("blobs", split="train").column("label").to_pylist()
    return dict(enumerate(labels))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("sessions")
    store = Store(str(root / "store"))
    add_session_pool(store, "blobs", CLASSES, N_TRAIN, N_TEST, DIM)
    with ServiceProcess("proxy_service", store.uri, log_path=root / "proxy.log") as proxy:
        clock = Clock()
        sessions = Sessions(store, ProxyClient(proxy.address), clock=clock)
        servicer = OrchestratorServicer(sessions)
        running = start_server(
            ServerSettings(port=0),
            lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
            ["proxal.orchestrator.v1.OrchestratorService"],
        )
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.OrchestratorServiceStub(channel)
            yield Stack(stub, store, running.address, clock, proxy.address)
        running.stop(0)


def test_label_loop_over_grpc(stack: Stack) -> None:
    session = stack.stub.CreateSession(
        pb.CreateSessionRequest(
            session="loop", pool="blobs", strategy="margin", batch_size=8, seed=1
        )
    )
    assert session.embedding_version == "v1" and list(session.classes) == CLASSES
    assert session.lease_seconds == 600
    truth = gold(stack.store)
    seen: set[int] = set()
    strategies = []
    for _ in range(3):
        batch = stack.stub.NextBatch(pb.NextBatchRequest(session="loop", annotator="ann"))
        ids = [item.id for item in batch.items]
        assert len(ids) == 8 and len(set(ids)) == 8 and batch.lease_id and not batch.resumed
        assert batch.lease_expires_at > time.time() + 500
        assert not seen & set(ids), "a batch must never contain an already-labeled id"
        assert all(0 <= i < N_TRAIN for i in ids), "only ids of the session's split"
        seen.update(ids)
        strategies.append((batch.strategy, batch.fallback_reason))
        reply = submit(stack, "loop", [(i, truth[i]) for i in ids])
        assert reply.accepted == 8 and reply.total_labels == len(seen) and not reply.replayed
    # the cold start (no labels) falls back to random and says why; later rounds use margin
    assert strategies[0][0] == "random" and strategies[0][1]
    assert strategies[-1] == ("margin", "")
    session = stack.stub.GetSession(pb.GetSessionRequest(session="loop"))
    assert session.labels == 24 and session.rounds == 3
    # acknowledged labels are in the store, read back by a fresh Store on the same directory
    stored, labels = Store(stack.store.uri).read_labels("loop")
    assert sorted(stored.tolist()) == sorted(seen)
    assert all(truth[i] == lab for i, lab in zip(stored.tolist(), labels, strict=True))


def test_status_counts_and_estimates_accuracy(stack: Stack) -> None:
    stack.stub.CreateSession(pb.CreateSessionRequest(session="stat", pool="blobs"))
    early = stack.stub.Status(pb.StatusRequest(session="stat"))
    assert early.labels == 0 and early.remaining == N_TRAIN and early.latest_version == "v1"
    assert np.isnan(early.estimated_accuracy) and "two classes" in early.accuracy_note
    truth = gold(stack.store)
    submit(stack, "stat", [(i, truth[i]) for i in range(60)])
    stack.stub.Skip(pb.SkipRequest(session="stat", ids=[60, 61], request_id=rid(), annotator="b"))
    batch = stack.stub.NextBatch(pb.NextBatchRequest(session="stat", k=5, annotator="c"))
    status = stack.stub.Status(pb.StatusRequest(session="stat"))
    assert (status.labels, status.skipped, status.leased) == (60, 2, 5)
    assert status.remaining == N_TRAIN - 67 and status.rounds == 1 and status.annotators == 1
    assert status.embedding_version == "v1" and status.session.session == "stat"
    counts = Counter(truth[i] for i in range(60))
    assert {c.label: c.count for c in status.class_counts} == counts
    # well-separated blobs: the proxy's cross-validated accuracy must be high, and honest
    assert 0.8 <= status.estimated_accuracy <= 1.0 and "5-fold" in status.accuracy_note
    assert "covers all 3 of the session's classes" in status.accuracy_note
    assert (status.labeled_classes, status.accuracy_classes) == (3, 3)
    assert len(batch.items) == 5


def test_two_annotators_never_share_an_item_and_leases_expire(stack: Stack) -> None:
    stack.stub.CreateSession(
        pb.CreateSessionRequest(session="lease", pool="blobs", batch_size=20, lease_seconds=60)
    )
    a = stack.stub.NextBatch(pb.NextBatchRequest(session="lease", annotator="alice"))
    b = stack.stub.NextBatch(pb.NextBatchRequest(session="lease", annotator="bob"))
    a_ids, b_ids = [x.id for x in a.items], [x.id for x in b.items]
    assert len(a_ids) == len(b_ids) == 20 and not set(a_ids) & set(b_ids)
    # alice asks again (her client restarted): she gets her open lease back, not new items
    again = stack.stub.NextBatch(pb.NextBatchRequest(session="lease", annotator="alice"))
    assert again.resumed and again.lease_id == a.lease_id and [x.id for x in again.items] == a_ids
    # bob may not label alice's items while her lease holds
    with pytest.raises(grpc.RpcError) as info:
        submit(stack, "lease", [(a_ids[0], "alpha")], who="bob")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "leased to annotator 'alice'" in info.value.details()
    submit(stack, "lease", [(i, "alpha") for i in a_ids[:5]], who="alice")
    # the lease now covers only the 15 items alice has not labelled
    left = stack.stub.NextBatch(pb.NextBatchRequest(session="lease", annotator="alice"))
    assert [x.id for x in left.items] == a_ids[5:]
    # after expiry, alice's 15 unlabelled items go back to the pool: carol can get them
    stack.clock.offset += 61
    try:
        carol = stack.stub.NextBatch(
            pb.NextBatchRequest(session="lease", annotator="carol", k=N_TRAIN - 5)
        )
        carol_ids = {x.id for x in carol.items}
        assert set(a_ids[5:]) <= carol_ids and set(b_ids) <= carol_ids
        assert not set(a_ids[:5]) & carol_ids  # labelled items never come back
    finally:
        stack.clock.offset -= 61
    nothing = stack.stub.NextBatch(pb.NextBatchRequest(session="lease", annotator="dave"))
    assert not nothing.items and nothing.fallback_reason == "nothing left to label"


def test_release_returns_items_at_once(stack: Stack) -> None:
    stack.stub.CreateSession(pb.CreateSessionRequest(session="rel", pool="blobs", batch_size=6))
    a = stack.stub.NextBatch(pb.NextBatchRequest(session="rel", annotator="alice"))
    submit(stack, "rel", [(a.items[0].id, "beta")], who="alice")
    released = stack.stub.ReleaseLease(pb.ReleaseLeaseRequest(session="rel", annotator="alice"))
    assert released.released == 5
    submit(stack, "rel", [(a.items[1].id, "gamma")], who="bob")  # no longer leased
    assert stack.stub.Status(pb.StatusRequest(session="rel")).leased == 0


def test_concurrent_annotators_get_disjoint_batches(stack: Stack) -> None:
    stack.stub.CreateSession(pb.CreateSessionRequest(session="crowd", pool="blobs", batch_size=10))
    batches: dict[str, list[int]] = {}

    def work(name: str) -> None:
        reply = stack.stub.NextBatch(pb.NextBatchRequest(session="crowd", annotator=name))
        batches[name] = [x.id for x in reply.items]

    threads = [threading.Thread(target=work, args=(f"a{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [i for ids in batches.values() for i in ids]
    assert len(batches) == 6 and len(every) == 60 and len(set(every)) == 60


def test_retries_never_double_count(stack: Stack) -> None:
    stack.stub.CreateSession(pb.CreateSessionRequest(session="idem", pool="blobs"))
    key = rid()
    first = submit(stack, "idem", [(1, "alpha"), (2, "beta")], request_id=key)
    retry = submit(stack, "idem", [(1, "alpha"), (2, "beta")], request_id=key)
    assert (first.accepted, first.total_labels, first.replayed) == (2, 2, False)
    assert (retry.accepted, retry.total_labels, retry.replayed) == (2, 2, True)
    with pytest.raises(grpc.RpcError) as info:
        submit(stack, "idem", [(3, "alpha")], request_id=key)  # same id, other request
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already used for a different request" in info.value.details()
    skip_id = rid()
    for _ in range(2):
        stack.stub.Skip(
            pb.SkipRequest(session="idem", ids=[7], request_id=skip_id, annotator="ann")
        )
    undo_id = rid()
    undone = [
        stack.stub.Undo(pb.UndoRequest(session="idem", request_id=undo_id, annotator="ann"))
        for _ in range(2)
    ]
    assert [u.undone_request_id for u in undone] == [skip_id, skip_id]
    assert [u.replayed for u in undone] == [False, True]
    events = stack.store.read_label_events("idem")
    assert Counter((e.kind, e.id) for e in events) == {
        ("label", 1): 1,
        ("label", 2): 1,
        ("skip", 7): 1,
        ("undo", 7): 1,
    }


def test_skip_undo_and_relabel(stack: Stack) -> None:
    stack.stub.CreateSession(pb.CreateSessionRequest(session="edit", pool="blobs", batch_size=3))
    batch = stack.stub.NextBatch(pb.NextBatchRequest(session="edit", annotator="ann"))
    x, y, z = [i.id for i in batch.items]
    submit(stack, "edit", [(x, "alpha")])
    stack.stub.Skip(pb.SkipRequest(session="edit", ids=[y], request_id=rid(), annotator="ann"))
    # a skipped item is not handed out again
    more = stack.stub.NextBatch(pb.NextBatchRequest(session="edit", annotator="ann"))
    assert [i.id for i in more.items] == [z]
    # undo takes back the skip: y is leased back to the same annotator, with its text
    undo = stack.stub.Undo(pb.UndoRequest(session="edit", request_id=rid(), annotator="ann"))
    assert [(i.id, i.label) for i in undo.items] == [(y, "")] and undo.items[0].text
    assert undo.lease_id and undo.total_labels == 1
    resumed = stack.stub.NextBatch(pb.NextBatchRequest(session="edit", annotator="ann"))
    assert {i.id for i in resumed.items} >= {y}
    # changing a label needs `relabel`
    with pytest.raises(grpc.RpcError) as info:
        submit(stack, "edit", [(x, "beta")])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "set relabel" in info.value.details()
    submit(stack, "edit", [(x, "beta")], relabel=True)
    assert stack.store.read_labels("edit")[1] == ["beta"]
    # undo the relabel: the earlier label comes back
    undo = stack.stub.Undo(pb.UndoRequest(session="edit", request_id=rid(), annotator="ann"))
    assert [(i.id, i.label) for i in undo.items] == [(x, "beta")]
    assert stack.store.read_labels("edit")[1] == ["alpha"]
    # undo the first label: nothing left, and a further undo says so
    stack.stub.Undo(pb.UndoRequest(session="edit", request_id=rid(), annotator="ann"))
    assert stack.store.read_labels("edit")[0].size == 0
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.Undo(pb.UndoRequest(session="edit", request_id=rid(), annotator="ann"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nothing to undo" in info.value.details()
    # an item with a label cannot be skipped
    submit(stack, "edit", [(x, "gamma")])
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.Skip(pb.SkipRequest(session="edit", ids=[x], request_id=rid(), annotator="ann"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_import_then_export_in_every_format(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.stub.CreateSession(pb.CreateSessionRequest(session="io", pool="blobs"))
    submit(stack, "io", [(5, "gamma")], who="ann")
    client = SessionClient(stack.address, annotator="importer")
    truth = gold(stack.store)
    pairs = [(i, truth[i]) for i in range(40)]
    # id 5 keeps the human label unless overwrite is set, and the reply says why
    done = client.import_labels("io", [FileLabel(i, lab) for i, lab in pairs])
    assert (done.written, done.already_labeled) == (39, 1)
    assert done.notes == ("1 already labelled; pass --overwrite to replace their labels",)
    assert dict(zip(*stack.store.read_labels("io"), strict=True))[5] == "gamma"
    again = client.import_labels("io", [FileLabel(5, truth[5])], overwrite=True)
    assert (again.written, again.already_labeled, again.notes) == (1, 0, ())
    monkeypatch.setattr(servicer_module, "EXPORT_CHUNK_BYTES", 256)  # force many chunks
    expected = sorted((i, lab, "importer") for i, lab in pairs)
    for fmt in (JSONL, CSV, LABEL_STUDIO, PARQUET, HF):
        data = client.export("io", fmt)
        assert sorted(parse_labels(data, fmt)) == expected, fmt
    card = hf_members(client.export("io", HF))["README.md"].decode()
    assert "'0': alpha" in card and "'2': gamma" in card  # the session's classes, in order
    lines = client.export("io", JSONL).decode().splitlines()
    assert '"text": "train text' in lines[0] and '"annotator": "importer"' in lines[0]
    client.close()


@pytest.mark.parametrize("fmt", [JSONL, CSV, LABEL_STUDIO])
def test_reimport_keeps_who_labelled_what(stack: Stack, fmt: str) -> None:
    session = f"who-{fmt}"
    stack.stub.CreateSession(pb.CreateSessionRequest(session=session, pool="blobs"))
    truth = gold(stack.store)
    submit(stack, session, [(i, truth[i]) for i in range(3)], who="ann")
    submit(stack, session, [(i, truth[i]) for i in range(3, 5)], who="bob@example.org")
    with SessionClient(stack.address, annotator="importer") as client:
        exported = parse_labels(client.export(session, fmt), fmt)
        # export, then import --overwrite: every label keeps its annotator
        done = client.import_labels(session, exported, overwrite=True)
        assert (done.written, done.already_labeled) == (5, 0)
        # without --overwrite nothing is written, and the reply says why
        skipped = client.import_labels(session, exported)
    assert (skipped.written, skipped.already_labeled) == (0, 5)
    assert skipped.notes == ("5 already labelled; pass --overwrite to replace their labels",)
    log = stack.store.read_label_log(session)
    assert log.annotator_of == {
        0: "ann",
        1: "ann",
        2: "ann",
        3: "bob@example.org",
        4: "bob@example.org",
    }
    assert [e.kind for e in stack.store.read_label_events(session)].count("import") == 5


BAD_WRITES = [
    (dict(labels=[(1, "alpha")], request_id=""), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    (
        dict(labels=[(1, "alpha")], annotator="no spaces"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "annotator",
    ),
    (dict(labels=[(1, "alpha"), (1, "beta")]), grpc.StatusCode.INVALID_ARGUMENT, "more than once"),
    (
        dict(labels=[(i, "alpha") for i in range(1001)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 1000",
    ),
    (
        dict(labels=[(1, "alpha"), (N_TRAIN + 5, "beta")]),  # a test-split id
        grpc.StatusCode.NOT_FOUND,
        "not in split",
    ),
    (dict(labels=[(10**9, "alpha")]), grpc.StatusCode.NOT_FOUND, "not in split"),
    (dict(labels=[(1, "delta")]), grpc.StatusCode.INVALID_ARGUMENT, "unknown label"),
    (dict(labels=[]), grpc.StatusCode.INVALID_ARGUMENT, "no labels"),
]


@pytest.mark.parametrize(("kw", "code", "fragment"), BAD_WRITES)
def test_bad_labels_are_rejected_and_nothing_is_written(
    stack: Stack, kw: dict[str, object], code: grpc.StatusCode, fragment: str
) -> None:
    session = f"bad-{BAD_WRITES.index((kw, code, fragment))}"
    stack.stub.CreateSession(pb.CreateSessionRequest(session=session, pool="blobs"))
    labels = kw.pop("labels")
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.SubmitLabels(
            pb.SubmitLabelsRequest(
                session=session,
                labels=[pb.Label(id=i, label=lab) for i, lab in labels],  # type: ignore[attr-defined]
                request_id=str(kw.get("request_id", rid())),
                annotator=str(kw.get("annotator", "ann")),
            )
        )
    assert info.value.code() == code and fragment in info.value.details()
    assert stack.store.read_label_events(session) == []


def test_writes_to_an_unknown_session_are_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as info:
        submit(stack, "ghost", [(1, "a")])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        list(stack.stub.ExportLabels(pb.ExportLabelsRequest(session="ghost")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    stack.stub.CreateSession(pb.CreateSessionRequest(session="fmt", pool="blobs"))
    with pytest.raises(grpc.RpcError) as info:
        list(stack.stub.ExportLabels(pb.ExportLabelsRequest(session="fmt", format=42)))  # type: ignore[arg-type]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


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
        (
            pb.CreateSessionRequest(session="x", pool="blobs", lease_seconds=float("nan")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "lease_seconds",
        ),
        (
            pb.CreateSessionRequest(session="x", pool="blobs", classes=["a", "a"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "two distinct classes",
        ),
        (  # refused at creation, not at the first NextBatch, with the valid names
            pb.CreateSessionRequest(session="x", pool="blobs", strategy="margn"),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown strategy 'margn'; valid strategies: {', '.join(STRATEGIES)}",
        ),
        (
            pb.CreateSessionRequest(session="x", pool="blobs", classifier="svm"),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown classifier 'svm'; valid classifiers: {', '.join(CLASSIFIERS)}",
        ),
        (
            pb.CreateSessionRequest(session="x", pool="blobs", initial_batch="dbscan"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown initial batch 'dbscan'; valid initial batches: random, kmeans",
        ),
    ],
)
def test_create_session_bad_input(
    stack: Stack, request_: pb.CreateSessionRequest, code: grpc.StatusCode, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.CreateSession(request_)
    assert info.value.code() == code
    assert fragment in info.value.details()


def test_create_defaults_to_margin_and_logreg(stack: Stack) -> None:
    created = stack.stub.CreateSession(pb.CreateSessionRequest(session="dflt", pool="blobs"))
    assert (created.strategy, created.classifier) == ("margin", "logreg")
    got = stack.stub.GetSession(pb.GetSessionRequest(session="dflt"))
    assert (got.strategy, got.classifier) == ("margin", "logreg")
    mlp = stack.stub.CreateSession(
        pb.CreateSessionRequest(session="mlp", pool="blobs", strategy="entropy", classifier="mlp")
    )
    assert (mlp.strategy, mlp.classifier) == ("entropy", "mlp")


def test_create_stores_and_echoes_initial_batch_and_class_balance(stack: Stack) -> None:
    created = stack.stub.CreateSession(
        pb.CreateSessionRequest(
            session="cold", pool="blobs", batch_size=6, initial_batch="kmeans", class_balanced=True
        )
    )
    assert (created.initial_batch, created.class_balanced) == ("kmeans", True)
    got = stack.stub.GetSession(pb.GetSessionRequest(session="cold"))
    assert (got.initial_batch, got.class_balanced) == ("kmeans", True)
    assert stack.store.get_session("cold").config["initial_batch"] == "kmeans"
    batch = stack.stub.NextBatch(pb.NextBatchRequest(session="cold", annotator="ann"))
    assert batch.strategy == "kmeans" and len({item.id for item in batch.items}) == 6
    plain = stack.stub.CreateSession(pb.CreateSessionRequest(session="warm", pool="blobs"))
    assert (plain.initial_batch, plain.class_balanced) == ("random", False)


def test_proxy_errors_keep_their_status(stack: Stack) -> None:
    # a record pinned to an embedding version the proxy cannot find (e.g. deleted since)
    stack.store.create_session(
        SessionRecord("pinned", "blobs", "v9", "margin", 10, 0, config={"classes": CLASSES})
    )
    submit(stack, "pinned", [(0, "alpha"), (1, "beta")])
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.NextBatch(pb.NextBatchRequest(session="pinned"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "proxy service" in info.value.details() and "v9" in info.value.details()
    # a failed selection leases nothing
    assert stack.stub.Status(pb.StatusRequest(session="pinned")).leased == 0


def test_a_session_the_simulator_wrote_is_served(stack: Stack) -> None:
    proxy = ProxyClient(stack.proxy_address)
    data = PoolData.from_store(stack.store, "blobs", "v1")
    config = LoopConfig(strategies=("margin",), seeds=(0,), initial_size=10, batch_size=5, rounds=1)
    result = run_simulation(stack.store, proxy, data, config, "simrun")
    proxy.close()
    name = result.sessions[0].session
    session = stack.stub.GetSession(pb.GetSessionRequest(session=name))
    assert list(session.classes) == CLASSES and session.labels == 15 and session.rounds == 2
    status = stack.stub.Status(pb.StatusRequest(session=name))
    assert status.labels == 15 and status.remaining == N_TRAIN - 15
    batch = stack.stub.NextBatch(pb.NextBatchRequest(session=name, annotator="ann"))
    assert len(batch.items) == 5 and batch.strategy == "margin"
    submit(stack, name, [(batch.items[0].id, "alpha")])


@pytest.mark.parametrize(
    ("config", "strategy", "fragment"),
    [  # records no proxal path writes any more, or damaged ones: never INTERNAL
        ({"simulated": True}, "margin", "has no classes in its record (written by a simulation)"),
        ({}, "margin", "has no classes in its record"),
        ({"classes": "alpha,beta"}, "margin", "its record's classes are unusable"),
        ({"classes": ["alpha"]}, "margin", "its record's classes are unusable"),
    ],
)
def test_a_record_the_service_cannot_serve_is_failed_precondition(
    stack: Stack, config: dict[str, object], strategy: str, fragment: str
) -> None:
    name = f"odd-{uuid.uuid4().hex[:8]}"
    stack.store.create_session(SessionRecord(name, "blobs", "v1", strategy, 10, 0, config=config))
    stack.store.append_labels(name, "blobs", [0, 1], ["alpha", "beta"], source="oracle")
    calls = [
        lambda: stack.stub.GetSession(pb.GetSessionRequest(session=name)),
        lambda: stack.stub.Status(pb.StatusRequest(session=name)),
        lambda: stack.stub.NextBatch(pb.NextBatchRequest(session=name)),
        lambda: submit(stack, name, [(2, "alpha")]),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert fragment in info.value.details()
    # it is listed, with its problem, and can be deleted
    listed = stack.stub.ListSessions(pb.ListSessionsRequest(pool="blobs"))
    (row,) = [x for x in listed.sessions if x.session == name]
    assert fragment in row.problem and row.labels == 2
    stack.stub.DeleteSession(pb.DeleteSessionRequest(session=name, force=True))


def test_a_record_with_an_unknown_strategy_is_failed_precondition(stack: Stack) -> None:
    stack.store.create_session(
        SessionRecord("telepathy", "blobs", "v1", "telepathy", 10, 0, config={"classes": CLASSES})
    )
    assert stack.stub.Status(pb.StatusRequest(session="telepathy")).labels == 0
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.NextBatch(pb.NextBatchRequest(session="telepathy"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unknown strategy 'telepathy'" in info.value.details()


def _unlabeled_pool(store: Store, pool: str) -> None:
    """Train rows without labels, a test split with gold labels of 4 classes."""
    rng = np.random.default_rng(3)
    store.add_pool_rows(pool, "train", [f"raw {i}" for i in range(20)], [None] * 20)
    store.add_pool_rows(pool, "test", [f"gold {i}" for i in range(8)], ["w", "x", "y", "z"] * 2)
    with store.begin_embedding(pool, EncoderInfo("synthetic", "none", DIM, 0)) as writer:
        writer.write(np.arange(28), rng.normal(size=(28, DIM)).astype(np.float32))
        writer.commit()


def test_classes_come_from_the_labelled_split_only(stack: Stack) -> None:
    _unlabeled_pool(stack.store, "raw")
    with pytest.raises(grpc.RpcError) as info:  # the test split's classes must not leak in
        stack.stub.CreateSession(pb.CreateSessionRequest(session="leak", pool="raw"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "split 'train' of pool 'raw' has no gold labels to take the session's classes from: "
        "pass the classes (--classes a,b,c on the CLI)"
    )
    with pytest.raises(grpc.RpcError):
        stack.stub.GetSession(pb.GetSessionRequest(session="leak"))  # nothing was created
    made = stack.stub.CreateSession(
        pb.CreateSessionRequest(session="leak", pool="raw", classes=["spam", "ham"])
    )
    assert list(made.classes) == ["spam", "ham"]
    # the test split labels its own gold classes
    own = stack.stub.CreateSession(pb.CreateSessionRequest(session="own", pool="raw", split="test"))
    assert list(own.classes) == ["w", "x", "y", "z"]


def test_status_reports_class_coverage(stack: Stack) -> None:
    many = [*CLASSES, *(f"extra-{n}" for n in range(8))]  # 11 classes
    stack.stub.CreateSession(pb.CreateSessionRequest(session="cover", pool="blobs", classes=many))
    truth = gold(stack.store)
    two = [i for i in range(N_TRAIN) if truth[i] in ("alpha", "beta")][:12]
    submit(stack, "cover", [(i, truth[i]) for i in two])
    status = stack.stub.Status(pb.StatusRequest(session="cover"))
    assert (status.labeled_classes, status.accuracy_classes, len(status.session.classes)) == (
        2,
        2,
        11,
    )
    assert status.estimated_accuracy >= 0.8
    assert "covers only these 2 of the session's 11 classes" in status.accuracy_note


def test_list_and_delete_sessions(stack: Stack) -> None:
    for name in ("del-a", "del-b"):
        stack.stub.CreateSession(pb.CreateSessionRequest(session=name, pool="blobs"))
    submit(stack, "del-a", [(0, "alpha"), (1, "beta")])
    stack.stub.Skip(pb.SkipRequest(session="del-a", ids=[2], request_id=rid(), annotator="ann"))
    stack.stub.NextBatch(pb.NextBatchRequest(session="del-a", annotator="ann", k=3))
    listed = {x.session: x for x in stack.stub.ListSessions(pb.ListSessionsRequest()).sessions}
    assert {"del-a", "del-b"} <= set(listed)
    assert (listed["del-a"].labels, listed["del-a"].rounds, listed["del-a"].pool) == (2, 1, "blobs")
    assert list(listed["del-b"].classes) == CLASSES and not listed["del-b"].problem
    assert not stack.stub.ListSessions(pb.ListSessionsRequest(pool="raw-nope")).sessions
    # a session with labels is refused without force, and keeps everything
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.DeleteSession(pb.DeleteSessionRequest(session="del-a"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == (
        "session 'del-a' has 2 label(s); deleting it deletes them: export them first "
        "(proxal labels export del-a -o FILE), then delete with force (--force)"
    )
    assert stack.stub.GetSession(pb.GetSessionRequest(session="del-a")).labels == 2
    gone = stack.stub.DeleteSession(pb.DeleteSessionRequest(session="del-a", force=True))
    assert (gone.session, gone.labels, gone.skipped, gone.label_events) == ("del-a", 2, 1, 3)
    assert (gone.lease_events, gone.rounds) == (1, 1)
    for call in (
        lambda: stack.stub.GetSession(pb.GetSessionRequest(session="del-a")),
        lambda: stack.stub.DeleteSession(pb.DeleteSessionRequest(session="del-a", force=True)),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    fresh = Store(stack.store.uri)  # the log, leases and rounds went with it
    assert fresh.read_label_events("del-a") == [] and fresh.read_rounds("del-a") == []
    assert fresh.read_lease_events("del-a") == []
    # a session without labels needs no force; its name can be used again
    assert stack.stub.DeleteSession(pb.DeleteSessionRequest(session="del-b")).labels == 0
    again = stack.stub.CreateSession(pb.CreateSessionRequest(session="del-a", pool="blobs"))
    assert again.labels == 0 and again.rounds == 0
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.ListSessions(pb.ListSessionsRequest(pool="Bad Pool"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sessions_survive_a_new_orchestrator(stack: Stack) -> None:
    stack.stub.CreateSession(pb.CreateSessionRequest(session="durable", pool="blobs", batch_size=4))
    batch = stack.stub.NextBatch(pb.NextBatchRequest(session="durable", annotator="ann"))
    submit(stack, "durable", [(batch.items[0].id, "alpha")])
    # a second orchestrator over the same store (as after a restart) carries on: same labels,
    # rounds and leases, and the annotator gets the rest of the open lease back
    fresh = Sessions(Store(stack.store.uri), ProxyClient(stack.proxy_address))
    state = fresh.get("durable")
    assert state.labels == 1 and state.rounds == 1 and state.record.batch_size == 4
    resumed = fresh.next_batch("durable", annotator="ann")
    assert resumed.resumed and [i for i, _ in resumed.items] == [x.id for x in batch.items[1:]]


def test_batch_items_carry_the_proxy_suggestion(stack: Stack) -> None:
    """Cold start: no suggestion; once labels cover two classes every item has one, with a
    session class, a probability in (0, 1] and the Select score; a resumed lease has none."""
    stack.stub.CreateSession(
        pb.CreateSessionRequest(session="hints", pool="blobs", strategy="margin", batch_size=6)
    )
    cold = stack.stub.NextBatch(pb.NextBatchRequest(session="hints", annotator="ann"))
    assert len(cold.items) == 6 and not any(x.HasField("suggestion") for x in cold.items)
    truth = gold(stack.store)
    submit(stack, "hints", [(x.id, truth[x.id]) for x in cold.items])
    labelled = {x.id for x in cold.items}
    more = [i for i in range(N_TRAIN) if i not in labelled and truth[i] not in {"alpha"}][:2]
    more += [i for i in range(N_TRAIN) if i not in labelled and truth[i] == "alpha"][:2]
    assert stack.stub.ImportLabels(
        pb.ImportLabelsRequest(
            session="hints", labels=[pb.Label(id=i, label=truth[i]) for i in more], request_id=rid()
        )
    ).accepted
    batch = stack.stub.NextBatch(pb.NextBatchRequest(session="hints", annotator="ann"))
    assert batch.strategy == "margin" and len(batch.items) == 6
    hints = [x.suggestion for x in batch.items]
    assert all(x.HasField("suggestion") for x in batch.items)
    assert {h.label for h in hints} <= set(CLASSES)
    assert all(0 < h.probability <= 1 for h in hints)
    round_ = stack.store.read_rounds("hints")[-1]
    scores = [h.score for h in hints]
    assert scores == sorted(scores, reverse=True)  # best first, as the proxy ranked them
    assert max(scores) == pytest.approx(round_.scores_summary["max"], rel=1e-6)
    assert min(scores) == pytest.approx(round_.scores_summary["min"], rel=1e-6)
    # most suggestions on these well-separated blobs are right
    assert sum(h.label == truth[x.id] for h, x in zip(hints, batch.items, strict=True)) >= 4
    again = stack.stub.NextBatch(pb.NextBatchRequest(session="hints", annotator="ann"))
    assert again.resumed and [x.id for x in again.items] == [x.id for x in batch.items]
    assert not any(x.HasField("suggestion") for x in again.items)
