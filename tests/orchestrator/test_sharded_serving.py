"""Sharded serving: a real `proxal serve` over 3 real proxy replica processes.

A Lance store on tmp_path holds a 3,000-row synthetic pool; `--shard-above 1000` makes
every NextBatch fan out over the replicas (one shard each). The reference is the same
session configuration served with one replica. NextBatch must give the same picks, round
after round, and keep giving them when one replica is SIGKILLed while a round's shard is
in flight on it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.rpc.processes import ServiceProcess, start_all, stop_all
from proxal.orchestrator_service.rpc.session_client import SessionClient
from proxal.runtime.healthcheck import check
from proxal.store import Store

from tests.conftest import add_session_pool

POOL, N_TRAIN, SHARD_ABOVE, ROUNDS = "shards", 3000, 1000, 4
CLASSES = ["alpha", "beta", "gamma", "delta"]
SESSION = {"pool": POOL, "strategy": "margin", "batch_size": 10, "seed": 7}

World = tuple[Store, dict[int, str], list[ServiceProcess]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The store with the pool, and 3 proxy replicas serving it."""
    root = tmp_path_factory.mktemp("sharded-serving")
    store = Store(str(root / "store"))
    truth = dict(enumerate(add_session_pool(store, POOL, CLASSES, N_TRAIN)))
    replicas = start_all(
        [
            ServiceProcess("proxy_service", store.uri, ["--score-threads", "1"], root / f"p{i}.log")
            for i in range(3)
        ]
    )
    yield store, truth, replicas
    stop_all(replicas)


def serve(store: Store, proxy: str, log: Path, until_ready: bool = True) -> ServiceProcess:
    """`proxal serve --proxy PROXY --shard-above 1000` (use as a context manager: it starts
    and stops it); debug log to `log`."""
    flags = ["--proxy", proxy, "--shard-above", str(SHARD_ABOVE), "--log-level", "DEBUG"]
    return ServiceProcess(
        "orchestrator", store.uri, flags, log, command=("serve",), until_ready=until_ready
    )


def label_round(client: SessionClient, session: str, truth: dict[int, str]) -> list[int]:
    """One NextBatch, answered with the gold labels; the ids it handed out, in order."""
    ids = [item.id for item in client.next_batch(session).items]
    assert len(ids) == SESSION["batch_size"]
    assert client.submit(session, [(i, truth[i]) for i in ids]).accepted == len(ids)
    return ids


@pytest.fixture(scope="module")
def reference(world: World, tmp_path_factory: pytest.TempPathFactory) -> list[list[int]]:
    """The picks of ROUNDS rounds served by one replica."""
    store, truth, replicas = world
    log = tmp_path_factory.mktemp("reference") / "serve.log"
    with (
        serve(store, replicas[0].address, log) as orchestrator,
        SessionClient(orchestrator.address, "ann") as client,
    ):
        client.create(pb.CreateSessionRequest(session="one-replica", **SESSION))
        picks = [label_round(client, "one-replica", truth) for _ in range(ROUNDS)]
    assert " shards: " not in log.read_text()  # one replica never shards
    return picks


def test_three_replicas_give_the_same_picks_as_one(
    world: World, reference: list[list[int]], tmp_path: Path
) -> None:
    store, truth, replicas = world
    log = tmp_path / "serve.log"
    with (
        serve(store, ",".join(r.address for r in replicas), log) as orchestrator,
        SessionClient(orchestrator.address, "ann") as client,
    ):
        client.create(pb.CreateSessionRequest(session="three", **SESSION))
        picks = [label_round(client, "three", truth) for _ in range(ROUNDS)]
    assert picks == reference
    text = log.read_text()
    assert text.count(" in 3 shards: ") == ROUNDS  # every round fanned out
    assert all(r.address in text for r in replicas)


def test_a_replica_killed_mid_round_costs_nothing(
    world: World, reference: list[list[int]], tmp_path: Path
) -> None:
    """Replica 2 is frozen (SIGSTOP) so round 3's shard is surely in flight on it, then
    SIGKILLed: that shard is retried on a live replica and the round's picks do not change;
    round 4 runs on the two left."""
    store, truth, replicas = world
    victim = replicas[2].process
    assert victim is not None
    log = tmp_path / "serve.log"
    with (
        serve(store, ",".join(r.address for r in replicas), log) as orchestrator,
        SessionClient(orchestrator.address, "ann") as client,
    ):
        client.create(pb.CreateSessionRequest(session="killed", **SESSION))
        picks = [label_round(client, "killed", truth) for _ in range(2)]
        os.kill(victim.pid, signal.SIGSTOP)
        answer: list[list[int]] = []
        started = time.monotonic()
        worker = threading.Thread(
            target=lambda: answer.append(label_round(client, "killed", truth))
        )
        worker.start()
        time.sleep(1.0)  # the round waits on the frozen replica
        assert not answer, "the round did not wait for the frozen replica"
        victim.kill()
        worker.join(60)
        assert answer and time.monotonic() - started < 30
        picks += [answer[0], label_round(client, "killed", truth)]
    assert victim.wait(10) == -signal.SIGKILL
    assert picks == reference
    text = log.read_text()
    assert f"proxy replica {replicas[2].address} failed Select: UNAVAILABLE" in text
    assert text.count(" in 3 shards: 4 attempts on ") >= 1


def test_every_replica_down_is_unavailable_naming_each(world: World, tmp_path: Path) -> None:
    """NextBatch fails UNAVAILABLE, saying what each replica answered; nothing is leased."""
    store, _, _ = world
    dead = "127.0.0.1:1,127.0.0.1:2"
    with (
        serve(
            store, dead, tmp_path / "serve.log", until_ready=False
        ) as orchestrator,  # never ready
        SessionClient(orchestrator.address, "ann", retry_seconds=0) as client,
    ):
        # no proxy replica answers: health says NOT_SERVING, calls are still answered
        assert check(orchestrator.address) == (False, "NOT_SERVING")
        client.create(pb.CreateSessionRequest(session="dead", **SESSION))
        with pytest.raises(grpc.RpcError) as info:
            client.next_batch("dead")
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        details = info.value.details() or ""
        # in round-robin order, which depends on the calls before this one
        assert details.startswith("proxy service: every replica failed Select: 127.0.0.1:")
        assert "127.0.0.1:1 UNAVAILABLE (" in details and "127.0.0.1:2 UNAVAILABLE (" in details
        assert client.status("dead").leased == 0
