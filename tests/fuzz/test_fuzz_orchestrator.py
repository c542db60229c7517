"""Hostile-input fuzzing of every OrchestratorService RPC against a real server and store.

Per RPC, 1,000 generated requests: mutants of valid requests, hostile messages and raw
bytes, over session "fz" on pool "blobs" (200 train items, 3 classes, a real proxy
subprocess). Every call must end OK or with a client-error status. Afterwards the server is
SERVING, every label an OK SubmitLabels or ImportLabels acknowledged is in the store, no
request id was committed twice, and a valid label round still works.
"""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from hypothesis import strategies as st
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.orchestrator_service.successor.jobs import JobRequest, JobRunner
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import Store

from tests.conftest import add_session_pool
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
    excluding,
    fuzz_rpc,
    hostile_text,
    ints,
    invoke,
    messages,
    names,
    one,
    parsed,
    requests_of,
    rpcs,
)

SERVICE = pb.DESCRIPTOR.services_by_name["OrchestratorService"]
RPCS = rpcs(SERVICE)
N_TRAIN, N_TEST, DIM = 200, 20, 8
CLASSES = ["alpha", "beta", "gamma"]
IDS = list(range(N_TRAIN + N_TEST))  # test-split ids are not labelable: NOT_FOUND
ANNOTATORS = ["ann", "bob", "c.d@e"]
BROKEN = Path(tempfile.mkdtemp(prefix="fuzz-broken-checkpoint-")) / "ckpt"
JOBS: list[str] = []  # the id of a job the fixture submitted, for WatchJob


@dataclass
class OrchestratorWorld:
    channel: grpc.Channel
    store: Store
    acknowledged: dict[str, set[tuple[int, str]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorWorld]:
    root: Path = tmp_path_factory.mktemp("fuzz-orchestrator")
    store = Store(str(root / "store"))
    add_session_pool(store, "blobs", CLASSES, N_TRAIN, N_TEST, DIM)
    with ServiceProcess("proxy_service", store.uri, log_path=root / "proxy.log") as proxy:
        sessions = Sessions(store, ProxyClient(proxy.address, timeout=30))
        sessions.create("fz", "blobs", batch_size=5, lease_seconds=5)
        # TrainSuccessor's session; valid requests name a checkpoint that fails to load, so
        # their jobs end FAILED at once; at most 2 wait (then RESOURCE_EXHAUSTED), and
        # closing the runner cancels whatever a mutant request started
        sessions.create("fz-jobs", "blobs")
        store.append_labels("fz-jobs", "blobs", [0, 1, 2, 3], ["alpha", "beta"] * 2)
        BROKEN.mkdir()
        (BROKEN / "config.json").write_text("{}")
        (BROKEN / "model.safetensors").write_bytes(b"not safetensors")
        runner = JobRunner(store, max_queued=2)
        servicer = OrchestratorServicer(sessions, runner)
        job, _ = runner.submit(JobRequest("fz-jobs", model_path=str(BROKEN)))
        JOBS.append(job.id)
        running = start_server(
            ServerSettings(port=0, max_message_bytes=4 * 1024 * 1024),
            lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
            [SERVICE.full_name],
        )
        with grpc.insecure_channel(running.address) as channel:
            yield OrchestratorWorld(channel, store)
        runner.close()
        running.stop(0)


def request_ids() -> Strategy:
    """Fresh ids mostly, a few reused ones (retries, or reuse for another request), and
    invalid ones."""
    fresh = st.builds(lambda: uuid.uuid4().hex)
    return st.one_of(fresh, fresh, st.sampled_from(["r1", "r2", "r3"]), hostile_text())


LABEL_FIELDS = {"id": ints(INT64, IDS), "label": choices(CLASSES, hostile_text())}
SESSION = names(["fz", "nosuch"])
ANNOTATOR = choices(ANNOTATORS, hostile_text())
pairs = st.lists(
    st.tuples(st.sampled_from(IDS[:N_TRAIN]), st.sampled_from(CLASSES)),
    min_size=1,
    max_size=6,
    unique_by=lambda p: p[0],
)


def _labels(items: list[tuple[int, str]]) -> list[pb.Label]:
    return [pb.Label(id=i, label=lab) for i, lab in items]


VALID: dict[str, Strategy] = {
    "CreateSession": st.builds(
        lambda n, k, lease, strategy, classifier: pb.CreateSessionRequest(
            session=f"s-{n}",
            pool="blobs",
            batch_size=k,
            lease_seconds=lease,
            strategy=strategy,
            classifier=classifier,
        ),
        st.integers(0, 10**9),
        st.sampled_from([0, 1, 10]),
        st.sampled_from([0.0, 1.0, 60.0]),
        st.sampled_from(["", "margin", "random", "entropy"]),
        st.sampled_from(["", "logreg", "mlp", "lightgbm"]),
    ),
    "GetSession": st.just(pb.GetSessionRequest(session="fz")),
    "ListSessions": st.builds(
        lambda pool: pb.ListSessionsRequest(pool=pool), st.sampled_from(["", "blobs", "nope"])
    ),
    # never "fz", which the other RPCs' fuzzing works on: sessions CreateSession made
    "DeleteSession": st.builds(
        lambda n, force: pb.DeleteSessionRequest(session=f"s-{n}", force=force),
        st.integers(0, 10**9),
        st.booleans(),
    ),
    "Status": st.just(pb.StatusRequest(session="fz")),
    "NextBatch": st.builds(
        lambda k, who: pb.NextBatchRequest(session="fz", k=k, annotator=who),
        st.sampled_from([0, 1, 3]),
        st.sampled_from(ANNOTATORS),
    ),
    "SubmitLabels": st.builds(  # relabel: valid whether or not an item has a label yet
        lambda items, who: pb.SubmitLabelsRequest(
            session="fz",
            labels=_labels(items),
            request_id=uuid.uuid4().hex,
            annotator=who,
            relabel=True,
        ),
        pairs,
        st.sampled_from(ANNOTATORS),
    ),
    "Skip": st.builds(
        lambda items, who: pb.SkipRequest(
            session="fz", ids=[i for i, _ in items], request_id=uuid.uuid4().hex, annotator=who
        ),
        pairs,
        st.sampled_from(ANNOTATORS),
    ),
    "Undo": st.builds(
        lambda who: pb.UndoRequest(session="fz", request_id=uuid.uuid4().hex, annotator=who),
        st.sampled_from(ANNOTATORS),
    ),
    "ReleaseLease": st.builds(
        lambda who: pb.ReleaseLeaseRequest(session="fz", annotator=who),
        st.sampled_from(ANNOTATORS),
    ),
    "ImportLabels": st.builds(
        lambda items, overwrite: pb.ImportLabelsRequest(
            session="fz", labels=_labels(items), request_id=uuid.uuid4().hex, overwrite=overwrite
        ),
        pairs,
        st.booleans(),
    ),
    "ExportLabels": st.builds(
        lambda fmt: pb.ExportLabelsRequest(session="fz", format=fmt),
        st.sampled_from(list(pb.ExportFormat.values())),
    ),
    "TrainSuccessor": st.builds(
        lambda method: pb.TrainSuccessorRequest(
            session="fz-jobs",
            method=method,
            epochs=1,
            max_length=8,
            device="cpu",
            skip_onnx=True,
            time_budget_s=1.0,
            model=str(BROKEN),
        ),
        st.sampled_from(["", "full", "lp_ft", "lora", "bottleneck"]),
    ),
    "WatchJob": st.builds(lambda: pb.WatchJobRequest(job_id=JOBS[0])),
    "ListModels": st.builds(
        lambda s: pb.ListModelsRequest(session=s), st.sampled_from(["", "fz", "fz-jobs"])
    ),
    "Predict": st.builds(
        lambda ids: pb.PredictRequest(session="fz", ids=ids),
        st.lists(st.sampled_from(IDS[:N_TRAIN]), min_size=1, max_size=5),
    ),
    "LookupItems": st.builds(
        lambda texts: pb.LookupItemsRequest(session="fz", texts=texts),
        st.lists(st.sampled_from(["train text 1", "test text 1", "nope", ""]), max_size=4),
    ),
    "RemoveLabels": st.builds(
        lambda items, who: pb.RemoveLabelsRequest(
            session="fz", ids=[i for i, _ in items], request_id=uuid.uuid4().hex, annotator=who
        ),
        pairs,
        st.sampled_from(ANNOTATORS),
    ),
}
OVERRIDES: dict[str, dict[str, Strategy]] = {
    "CreateSession": {
        "session": names(["fz"]),
        "pool": names(["blobs"]),
        "embedding_version": names(["v1", "v9"]),
        "strategy": choices(["margin", "random"], hostile_text()),
        "batch_size": ints(INT32, [1, 10, 1000, 1001]),
        "seed": ints(UINT64),
        "split": names(["train", "test"]),
        "classes": choices(CLASSES, hostile_text()),  # repeated fields: the element
        "lease_seconds": doubles([1.0, 60.0]),
        "classifier": choices(["logreg", "mlp"], hostile_text()),
    },
    "GetSession": {"session": SESSION},
    "ListSessions": {"pool": names(["blobs"])},
    "DeleteSession": {"session": excluding(names(["nosuch"]), ["fz"])},
    "Status": {"session": SESSION},
    "NextBatch": {"session": SESSION, "k": ints(INT32, [1, 5, 1000]), "annotator": ANNOTATOR},
    "SubmitLabels": {
        "session": SESSION,
        "labels": messages(pb.Label, LABEL_FIELDS),
        "request_id": request_ids(),
        "annotator": ANNOTATOR,
    },
    "Skip": {
        "session": SESSION,
        "ids": ints(INT64, IDS),
        "request_id": request_ids(),
        "annotator": ANNOTATOR,
    },
    "Undo": {"session": SESSION, "request_id": request_ids(), "annotator": ANNOTATOR},
    "ReleaseLease": {"session": SESSION, "annotator": ANNOTATOR},
    "ImportLabels": {
        "session": SESSION,
        "labels": messages(pb.Label, {**LABEL_FIELDS, "annotator": ANNOTATOR}),
        "request_id": request_ids(),
        "annotator": ANNOTATOR,
    },
    "ExportLabels": {"session": SESSION, "format": ints(INT32, [0, 1, 2, 3, 4, 5])},
    "TrainSuccessor": {
        "session": excluding(names(["fz-jobs", "nosuch"]), ["fz"]),
        "method": choices(["full", "auto", "lora"], hostile_text()),
        "device": choices(["cpu", "auto", "cuda:7"], hostile_text()),
        "test_split": names(["test", "train"]),
        "model": choices([str(BROKEN), "/nowhere"], hostile_text()),
    },
    "WatchJob": {"job_id": choices(["job-000000000000"], hostile_text())},
    "ListModels": {"session": SESSION},
    "Predict": {"session": SESSION, "ids": ints(INT64, IDS)},
    "LookupItems": {"session": SESSION, "texts": choices(["train text 1"], hostile_text())},
    "RemoveLabels": {
        "session": SESSION,
        "ids": ints(INT64, IDS),
        "request_id": request_ids(),
        "annotator": ANNOTATOR,
    },
}


def test_every_rpc_is_fuzzed() -> None:
    assert set(VALID) == set(OVERRIDES) == set(RPCS)


def _checker(world: OrchestratorWorld, rpc: str) -> Callable[[Sequence[Request], Outcome], None]:
    """Records what an OK write acknowledged; checks OK answers are well formed."""

    def check(requests: Sequence[Request], outcome: Outcome) -> None:
        if rpc in ("SubmitLabels", "ImportLabels"):
            cls = pb.SubmitLabelsRequest if rpc == "SubmitLabels" else pb.ImportLabelsRequest
            request = parsed(requests[0], cls)
            if request.session == "fz" and outcome.responses[0].accepted == len(request.labels):
                acked = world.acknowledged.setdefault(request.request_id, set())
                acked.update((x.id, x.label) for x in request.labels)
        elif rpc == "NextBatch":
            ids = [item.id for item in outcome.responses[0].items]
            assert len(set(ids)) == len(ids) and set(ids) <= set(IDS[:N_TRAIN])

    return check


@pytest.mark.parametrize("rpc", list(VALID))
def test_hostile_requests_get_client_errors(world: OrchestratorWorld, rpc: str) -> None:
    stub = pb_grpc.OrchestratorServiceStub(world.channel)
    # leases left by an earlier RPC's fuzzing (NextBatch gets generated annotator names too)
    # would block valid writes: release every holder's
    holders = {e.annotator for e in world.store.read_lease_events("fz")} | set(ANNOTATORS)
    for who in sorted(holders):
        stub.ReleaseLease(pb.ReleaseLeaseRequest(session="fz", annotator=who), timeout=30)
    cls = RPCS[rpc].request_class
    requests = one(requests_of(cls, VALID[rpc], OVERRIDES[rpc]))
    ledger = fuzz_rpc(world.channel, RPCS[rpc], requests, _checker(world, rpc))
    ledger.check()
    assert_serving(world.channel, ["", SERVICE.full_name])
    # the log replays, and a request id is never committed twice
    events = world.store.read_label_events("fz")
    log = world.store.read_label_log("fz")
    per_request = Counter((e.request_id, e.kind, e.id) for e in events if e.request_id)
    assert max(per_request.values(), default=1) == 1
    for request_id, labels in world.acknowledged.items():
        committed = {(e.id, e.label) for e in log.requests[request_id].events}
        assert labels <= committed, request_id
    # a valid round still works
    batch = stub.NextBatch(pb.NextBatchRequest(session="fz", annotator="final"), timeout=30)
    if batch.items:
        reply = stub.SubmitLabels(
            pb.SubmitLabelsRequest(
                session="fz",
                labels=[pb.Label(id=batch.items[0].id, label="alpha")],
                request_id=uuid.uuid4().hex,
                annotator="final",
            ),
            timeout=30,
        )
        assert reply.accepted == 1
    assert invoke(world.channel, RPCS["Status"], [pb.StatusRequest(session="fz")]).code is (
        grpc.StatusCode.OK
    )
