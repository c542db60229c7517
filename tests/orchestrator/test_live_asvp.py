"""ASVP in a live session: real encoder (MiniLM) and proxy processes, the orchestrator on
port 0, two annotators labelling from threads while a background check fine-tunes, refreshes
the pool and switches the session to the new version; and a check whose encoder is
unreachable, recorded as failed while labelling goes on."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.engine.feature_checks import AsvpRuntime
from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import Store
from proxal.store.labels import LABEL

from tests.conftest import BANKING77, read_jsonl

POOL = "live"
# A tiny fine-tune: the whole check takes seconds on a CPU.
TINY = {"finetune_method": "full", "finetune_epochs": 3, "max_length": 24}


@dataclass
class Services:
    store: Store
    encoder: str
    proxy: ProxyClient
    root: Path
    version: str


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Three Banking77 intents (real text), 240 train rows, embedded by MiniLM-L6."""
    tmp = tmp_path_factory.mktemp("live-asvp")
    rows = read_jsonl(BANKING77 / "train.jsonl")
    keep = [c for c, _ in Counter(r["label"] for r in rows).most_common(3)]
    chosen = [r for r in rows if r["label"] in keep]
    picked = [chosen[i] for i in np.random.default_rng(1).permutation(len(chosen))[:240]]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in picked))
    root = tmp / "checkpoints"
    root.mkdir()
    store_uri = str(tmp / "store")
    with (
        ServiceProcess("encoder_service", store_uri, ["--checkpoint-root", str(root)]) as enc,
        ServiceProcess("proxy_service", store_uri) as prx,
    ):
        encoder = EncoderClient(enc.address)
        encoder.ingest_file(POOL, "train", tmp / "train.jsonl")
        version = encoder.embed(POOL, max_length=24).version
        encoder.close()
        proxy = ProxyClient(prx.address)
        yield Services(Store(store_uri), enc.address, proxy, root, version)
        proxy.close()


@dataclass
class Orchestrator:
    stub: pb_grpc.OrchestratorServiceStub
    sessions: Sessions


@contextlib.contextmanager
def orchestrator(services: Services, encoder: str) -> Iterator[Orchestrator]:
    sessions = Sessions(
        services.store, services.proxy, asvp=AsvpRuntime(EncoderClient(encoder), services.root)
    )
    servicer = OrchestratorServicer(sessions)
    running = start_server(
        ServerSettings(port=0),
        lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
        ["proxal.orchestrator.v1.OrchestratorService"],
    )
    with grpc.insecure_channel(running.address) as channel:
        yield Orchestrator(pb_grpc.OrchestratorServiceStub(channel), sessions)
    running.stop(0)
    sessions.close()


@dataclass
class Annotator:
    """Labels its own batches with the gold labels until told to stop."""

    name: str
    stub: pb_grpc.OrchestratorServiceStub
    session: str
    gold: dict[int, str]
    handed: list[int] = field(default_factory=list)
    acknowledged: dict[int, str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    pause: float = 0.7  # seconds between batches, as a person would take

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                batch = self.stub.NextBatch(
                    pb.NextBatchRequest(session=self.session, annotator=self.name, k=3)
                )
                if not batch.items:
                    return
                ids = [item.id for item in batch.items]
                if not batch.resumed:
                    self.handed.extend(ids)
                labels = [pb.Label(id=i, label=self.gold[i]) for i in ids]
                reply = self.stub.SubmitLabels(
                    pb.SubmitLabelsRequest(
                        session=self.session,
                        labels=labels,
                        request_id=uuid.uuid4().hex,
                        annotator=self.name,
                    )
                )
                assert reply.accepted == len(ids)
                self.acknowledged.update((i, self.gold[i]) for i in ids)
                time.sleep(self.pause)
        except BaseException as exc:
            self.errors.append(exc)


def _gold(store: Store) -> dict[int, str]:
    rows = store.pool_rows(POOL, split="train", columns=["id", "label"])
    return dict(zip(rows.column("id").to_pylist(), rows.column("label").to_pylist(), strict=True))


def _rounds_on(store: Store, session: str, version: str) -> int:
    return sum(r.embedding_version == version for r in store.read_rounds(session))


def _label_through_a_switch(
    orch: Orchestrator, services: Services, session: str
) -> tuple[pb.SessionStatus, list[Annotator]]:
    """Two annotator threads label until the session has run two rounds on a refreshed
    version (or 240 s pass) -> the last Status and the annotators."""
    orch.stub.CreateSession(
        pb.CreateSessionRequest(
            session=session,
            pool=POOL,
            strategy="margin",
            batch_size=3,
            asvp=pb.AsvpSettings(every_rounds=6, threshold=0.0, **TINY),  # type: ignore[arg-type]
        )
    )
    gold = _gold(services.store)
    stop = threading.Event()
    annotators = [Annotator(n, orch.stub, session, gold) for n in ("ann-a", "ann-b")]
    threads = [threading.Thread(target=a.run, args=(stop,)) for a in annotators]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 240
    status = orch.stub.Status(pb.StatusRequest(session=session))
    seen_running = False
    while time.monotonic() < deadline and all(t.is_alive() for t in threads):
        status = orch.stub.Status(pb.StatusRequest(session=session))
        seen_running |= status.asvp.running
        if len(status.lineage) == 2 and _rounds_on(services.store, session, status.lineage[1]) >= 2:
            break
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not [e for a in annotators for e in a.errors], [a.errors for a in annotators]
    assert seen_running, "Status never showed the check running"
    return status, annotators


@pytest.mark.slow  # about 2 minutes on 2 CPU cores: a fine-tune and a re-embedding
def test_session_moves_to_a_refreshed_version_while_two_annotators_label(
    services: Services,
) -> None:
    with orchestrator(services, services.encoder) as orch:
        status, annotators = _label_through_a_switch(orch, services, "switch")
    session = "switch"
    # the story: v1 -> v2, the last check refreshed, and rounds ran on v2 afterwards
    check = status.asvp.last_check
    assert list(status.lineage) == [services.version, check.version_after], status
    assert check.action == "refresh" and check.gap > check.threshold and check.seconds > 0
    assert status.embedding_version == check.version_after == status.session.embedding_version
    assert status.asvp.enabled and status.asvp.checks >= 1
    assert status.asvp.next_due
    assert _rounds_on(services.store, session, check.version_after) >= 2
    refreshed = services.store.get_version(POOL, check.version_after)
    assert refreshed.source == "checkpoint" and refreshed.label_count == check.labels

    # every acknowledged label exactly once; no item handed out twice
    acknowledged = {i: lab for a in annotators for i, lab in a.acknowledged.items()}
    events = [e for e in services.store.read_label_events(session) if e.kind == LABEL]
    assert Counter(e.id for e in events) == Counter(list(acknowledged))
    assert {e.id: e.label for e in events} == acknowledged
    handed = [i for a in annotators for i in a.handed]
    assert len(handed) == len(set(handed)), "an item was handed out twice"
    assert len(acknowledged) >= 2 * 3 * 6  # labelling went on through the switch

    # the switch survives a restart: a new orchestrator on the same store selects on v2
    restarted = Sessions(services.store, services.proxy)
    state = restarted.get(session)
    assert state.record.embedding_version == check.version_after
    assert restarted.status(session).asvp.lineage == tuple(status.lineage)  # type: ignore[union-attr]
    restarted.close()


def test_a_check_whose_encoder_is_unreachable_fails_and_labelling_goes_on(
    services: Services,
) -> None:
    with orchestrator(services, "127.0.0.1:9") as orch:  # nothing listens there
        session = "dead-encoder"
        created = orch.stub.CreateSession(
            pb.CreateSessionRequest(
                session=session,
                pool=POOL,
                strategy="margin",
                batch_size=4,
                asvp=pb.AsvpSettings(every_rounds=3, threshold=0.0, **TINY),  # type: ignore[arg-type]
            )
        )
        gold = _gold(services.store)
        status = orch.stub.Status(pb.StatusRequest(session=session))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and status.asvp.failed_checks == 0:
            batch = orch.stub.NextBatch(pb.NextBatchRequest(session=session, annotator="solo"))
            orch.stub.SubmitLabels(
                pb.SubmitLabelsRequest(
                    session=session,
                    labels=[pb.Label(id=i.id, label=gold[i.id]) for i in batch.items],
                    request_id=uuid.uuid4().hex,
                    annotator="solo",
                )
            )
            status = orch.stub.Status(pb.StatusRequest(session=session))
            time.sleep(0.2)
        check = status.asvp.last_check
        assert check.action == "failed" and "UNAVAILABLE" in check.reason, check
        assert list(status.lineage) == [created.embedding_version]
        # labelling goes on, on the current version
        batch = orch.stub.NextBatch(pb.NextBatchRequest(session=session, annotator="solo"))
        assert len(batch.items) == 4
        assert (
            services.store.read_rounds(session)[-1].embedding_version == created.embedding_version
        )
