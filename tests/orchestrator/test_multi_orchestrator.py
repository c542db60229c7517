"""Several orchestrators on one PostgreSQL database and one LanceDB store.

3 real `proxal serve` processes share a real PostgreSQL server; 6 annotators work at once,
each request going to the next orchestrator in turn, 20 rounds of NextBatch + SubmitLabels
each. No item may be handed to two annotators, no acknowledged label may be missing or
doubled, and no request may fail with anything but UNAVAILABLE from a killed process (which
the client retries, with the same request id, on the next orchestrator). The second test
SIGKILLs one orchestrator in the middle and restarts it.

Before the session state moved to SQL, two orchestrators on one store leased 20 of 25
items to two or more annotators (issue 17).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.rpc.processes import ServiceProcess, start_all, stop_all
from proxal.store import Store

from tests.conftest import add_session_pool
from tests.orchestrator.test_session_crash import _free_port

ORCHESTRATORS, ANNOTATORS, ROUNDS, BATCH = 3, 6, 20, 3
CLASSES = ["alpha", "beta", "gamma", "delta"]
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class World:
    """What the annotators saw: items handed out, labels acknowledged, error codes."""

    def __init__(self, truth: list[str]) -> None:
        self.truth = truth
        self.lock = threading.Lock()
        self.handed: dict[int, set[str]] = defaultdict(set)
        self.acked: dict[int, str] = {}
        self.codes: Counter[str] = Counter()
        self.rounds: Counter[str] = Counter()
        self.failures: list[BaseException] = []


class Annotator(threading.Thread):
    """NextBatch + SubmitLabels for ROUNDS rounds; request r goes to orchestrator (i + r)."""

    def __init__(self, index: int, addresses: list[str], world: World) -> None:
        super().__init__(daemon=True)
        self.index, self.name, self.world = index, f"ann{index}", world
        self.stubs = [pb_grpc.OrchestratorServiceStub(grpc.insecure_channel(a)) for a in addresses]

    def run(self) -> None:
        try:
            for rnd in range(ROUNDS):
                self.round(rnd)
        except BaseException as exc:
            self.world.failures.append(exc)

    def round(self, rnd: int) -> None:
        start = self.index + rnd
        batch = self.call("NextBatch", pb.NextBatchRequest(session="s", annotator=self.name), start)
        assert batch.items, f"{self.name} got an empty batch in round {rnd}"
        with self.world.lock:
            for item in batch.items:
                self.world.handed[item.id].add(self.name)
        labels = [pb.Label(id=i.id, label=self.world.truth[i.id]) for i in batch.items]
        request = pb.SubmitLabelsRequest(
            session="s", labels=labels, request_id=f"{self.name}-{rnd}", annotator=self.name
        )
        reply = self.call("SubmitLabels", request, start + 1)
        assert reply.accepted == len(labels)
        with self.world.lock:
            self.world.acked.update((x.id, x.label) for x in labels)
            self.world.rounds[self.name] += 1

    def call(self, method: str, request: Any, start: int) -> Any:
        """The call on orchestrator `start`, retried on the next ones while unavailable."""
        deadline = time.monotonic() + 90
        attempt = 0
        while True:
            stub = self.stubs[(start + attempt) % len(self.stubs)]
            try:
                return getattr(stub, method)(request, timeout=30)
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                with self.world.lock:
                    self.world.codes[code.name] += 1
                if code not in RETRYABLE or time.monotonic() > deadline:
                    raise
            attempt += 1
            time.sleep(0.05)


def _run(tmp_path: Path, db: str, kill: bool) -> tuple[World, Store]:
    store = Store(str(tmp_path / "store"), db=db)
    truth = add_session_pool(store, "multi", CLASSES, 2 * ANNOTATORS * ROUNDS * BATCH, dim=16)
    world = World(truth)
    with ServiceProcess("proxy_service", store.uri, log_path=tmp_path / "proxy.log") as proxy:
        servers = [
            ServiceProcess(
                "orchestrator", store.uri, ["--proxy", proxy.address, "--db", db],
                log_path=tmp_path / f"orchestrator{i}.log", command=("serve",), port=_free_port(),
            )
            for i in range(ORCHESTRATORS)
        ]  # fmt: skip
        start_all(servers)
        try:
            addresses = [s.address for s in servers]
            stub = pb_grpc.OrchestratorServiceStub(grpc.insecure_channel(addresses[0]))
            stub.CreateSession(pb.CreateSessionRequest(session="s", pool="multi", batch_size=BATCH))
            annotators = [Annotator(i, addresses, world) for i in range(ANNOTATORS)]
            for annotator in annotators:
                annotator.start()
            if kill:
                _kill_and_restart(servers[1], world)
            for annotator in annotators:
                annotator.join(timeout=240)
        finally:
            stop_all(servers)
    return world, store


def _kill_and_restart(server: ServiceProcess, world: World) -> None:
    """SIGKILL `server` once a third of the labels are in, restart it on its port."""
    while len(world.acked) < ANNOTATORS * ROUNDS * BATCH // 3 and not world.failures:
        time.sleep(0.01)
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    time.sleep(0.5)
    server.start()


def _check(world: World, store: Store) -> None:
    assert not world.failures, world.failures[:3]
    assert set(world.rounds.values()) == {ROUNDS}, world.rounds
    doubled = {i: sorted(a) for i, a in world.handed.items() if len(a) > 1}
    assert not doubled, f"{len(doubled)} item(s) handed to two annotators: {list(doubled)[:5]}"
    assert set(world.codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, world.codes
    events = Store(store.uri, db=store.db_url).read_label_events("s")
    per_id = Counter(e.id for e in events)
    assert not [i for i in world.acked if per_id[i] == 0], "acknowledged labels lost"
    assert not [i for i, n in per_id.items() if n > 1], "labels committed twice"
    assert len(events) == len(world.acked) == ANNOTATORS * ROUNDS * BATCH
    assert all(e.label == world.truth[e.id] for e in events)


def test_three_orchestrators_share_one_postgresql(tmp_path: Path, postgres_url: str) -> None:
    world, store = _run(tmp_path, postgres_url, kill=False)
    _check(world, store)
    assert not world.codes  # nobody was down: not even a retry


@pytest.mark.slow
def test_one_orchestrator_killed_and_restarted_mid_run(tmp_path: Path, postgres_url: str) -> None:
    world, store = _run(tmp_path, postgres_url, kill=True)
    _check(world, store)
    assert world.codes["UNAVAILABLE"] > 0  # the kill was felt, and retried elsewhere
