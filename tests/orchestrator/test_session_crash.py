"""Crash consistency of labeling sessions: the orchestrator is SIGKILLed while annotators work.

A real `proxal serve` subprocess (and a real proxy subprocess) over a real LanceDB store,
with its session database on SQLite (a file in the store) or on a real PostgreSQL server.
One client submits 200 labels, one SubmitLabels request each, through `SessionClient`
(which retries an unanswered request with the same request id). At seeded random moments
the orchestrator is SIGKILLed mid-work and restarted on the same port. Right after every
kill, and at the end, every acknowledged label must be in the store exactly once.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.orchestrator_service.rpc.session_client import SessionClient
from proxal.store import Store

from tests.conftest import add_session_pool

N_TRAIN, DIM, SUBMISSIONS = 400, 16, 200
CLASSES = ["alpha", "beta", "gamma", "delta"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pool(store: Store) -> dict[int, str]:
    return dict(enumerate(add_session_pool(store, "crash", CLASSES, N_TRAIN, dim=DIM)))


def _reader(store: Store) -> Store:
    """A fresh reader of the same store and database (as another process would open it)."""
    return Store(store.uri, db=store.db_url)


def _assert_exactly_once(store: Store, session: str, acked: dict[int, str]) -> None:
    """Every acknowledged label is committed, once, and is the session's current label."""
    events = _reader(store).read_label_events(session)
    per_id = Counter(e.id for e in events if e.kind == "label")
    missing = [i for i in acked if per_id[i] == 0]
    doubled = [i for i, n in per_id.items() if n > 1]
    assert not missing, f"acknowledged labels lost: {missing[:10]}"
    assert not doubled, f"labels committed more than once: {doubled[:10]}"
    current = dict(zip(*_reader(store).read_labels(session), strict=True))
    assert all(current[i] == lab for i, lab in acked.items())


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_acknowledged_labels_survive_sigkill(
    tmp_path: Path, seed: int, database: str, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("postgres_url") if database == "postgresql" else ""
    store = Store(str(tmp_path / "store"), db=db)
    truth = _pool(store)
    rng = random.Random(seed)
    kill_after = sorted(rng.sample(range(10, SUBMISSIONS - 10), 4))
    port = _free_port()
    log = tmp_path / "orchestrator.log"

    with ServiceProcess("proxy_service", store.uri, log_path=tmp_path / "proxy.log") as proxy:
        orchestrator = ServiceProcess(
            "orchestrator",
            store.uri,
            ["--proxy", proxy.address, *(["--db", db] if db else [])],
            log_path=log,
            command=("serve",),
            port=port,
        ).start()
        acked: dict[int, str] = {}
        done = threading.Event()
        failure: list[BaseException] = []

        def annotate() -> None:
            try:
                with SessionClient(orchestrator.address, "ann", retry_seconds=90) as client:
                    client.create(pb.CreateSessionRequest(session="s", pool="crash", batch_size=8))
                    while len(acked) < SUBMISSIONS:
                        batch = client.next_batch("s")
                        assert batch.items, "the pool ran out before 200 labels"
                        for item in batch.items[: SUBMISSIONS - len(acked)]:
                            reply = client.submit("s", [(item.id, truth[item.id])])
                            assert reply.accepted == 1
                            acked[item.id] = truth[item.id]
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=annotate, daemon=True)
        worker.start()
        kills = 0
        try:
            for target in kill_after:
                while len(acked) < target and not done.is_set():
                    time.sleep(0.005)
                if done.is_set():
                    break
                time.sleep(rng.uniform(0.0, 0.05))  # land somewhere inside a request
                assert orchestrator.process is not None
                orchestrator.process.kill()
                orchestrator.process.wait()
                kills += 1
                snapshot = dict(acked)  # acknowledged before the kill: must be on disk now
                _assert_exactly_once(store, "s", snapshot)
                orchestrator.start()  # same port: the client's retries reconnect
            assert done.wait(240), "the annotator did not finish"
        finally:
            orchestrator.stop()
        assert not failure, failure
    assert kills == 4 and len(acked) == SUBMISSIONS
    _assert_exactly_once(store, "s", acked)
    events = _reader(store).read_label_events("s")
    assert len(events) == SUBMISSIONS  # nothing committed that was not acknowledged
