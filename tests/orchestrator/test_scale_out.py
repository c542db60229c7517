"""Scale-out on loopback: proxy replica processes sharing one LanceDB store on moto S3.

A local moto S3 server holds the store (``s3://.../scale``) with a 20,000 x 64 version of
4 Gaussian blobs; proxy replicas are real subprocesses configured by ``--store-option``
flags only. A short simulated active-learning loop (the oracle answers with the blobs'
classes) selects through `ShardedSelector` over 1, 2 and 3 replicas: every round's picks
must be the same whatever the replica count, and one replica SIGKILLed in the middle of a
round must cost retries, not the round. `ProxyClient` with a multi-replica target must
reach every replica (round-robin), where a plain host:port keeps pick_first.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from proxal.orchestrator_service.rpc.clients import ProxyClient, TrainingSet, proxy_target
from proxal.orchestrator_service.rpc.processes import ServiceProcess, start_all, stop_all
from proxal.orchestrator_service.rpc.sharding import ShardedSelector, ShardReport, split_range
from proxal.runtime.errors import InvalidArgumentError
from proxal.store import Store
from proxal.store.local_s3 import moto_s3

from tests.conftest import add_blobs_version

pytestmark = pytest.mark.timeout(300)

BUCKET = "proxal-scale"
POOL = "blobs"
N, DIM, CLASSES = 20_000, 64, 4
INITIAL, K, ROUNDS, SHARDS = 120, 25, 3, 6  # 6 shards: the same cut for 1, 2 and 3 replicas
STRATEGIES = ["margin", "least_confidence"]


@dataclass(frozen=True)
class World:
    """The S3 store, its flags for the services, one version and the oracle's labels (N,)."""

    store: Store
    flags: list[str]
    version: str
    labels: npt.NDArray[np.int64]
    initial: npt.NDArray[np.int64]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with moto_s3(BUCKET, log=tmp_path_factory.mktemp("moto") / "moto.log") as s3:
        store = Store(f"s3://{BUCKET}/scale", storage_options=s3.options)
        rng = np.random.default_rng(0)
        centers = rng.normal(0.0, 0.5, size=(CLASSES, DIM))
        labels = rng.integers(0, CLASSES, size=N)
        vectors = (centers[labels] + rng.normal(size=(N, DIM))).astype(np.float32)
        version = add_blobs_version(store, POOL, vectors, labels)
        initial = np.sort(rng.choice(N, INITIAL, replace=False)).astype(np.int64)
        yield World(
            store=store,
            flags=s3.store_flags(),
            version=version,
            labels=labels.astype(np.int64),
            initial=initial,
        )


def start_replicas(
    world: World, log_dir: Path, n: int, name: str = "proxy"
) -> list[ServiceProcess]:
    replicas = [
        ServiceProcess(
            "proxy_service",
            world.store.uri,
            ["--score-threads", "1", *world.flags],
            log_dir / f"{name}{i}.log",
        )
        for i in range(n)
    ]
    return start_all(replicas)


@pytest.fixture(scope="module")
def replicas(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    running = start_replicas(world, tmp_path_factory.mktemp("logs"), 3)
    yield running
    stop_all(running)


@dataclass(frozen=True)
class Loop:
    """Per round: the picks (K,) best first, their scores (K,), retries and Select calls."""

    ids: list[npt.NDArray[np.int64]]
    scores: list[npt.NDArray[np.float32]]
    retries: list[int]
    attempts: list[int]


def freeze_then_kill(
    victim: ServiceProcess, killed: threading.Event
) -> Callable[[ShardReport], None]:
    """Freeze the victim now (SIGSTOP); the callback SIGKILLs it at the first shard answer."""
    process = victim.process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)

    def kill_once(report: ShardReport) -> None:
        if not killed.is_set():
            killed.set()
            process.kill()

    return kill_once


def run_loop(
    world: World,
    addresses: list[str],
    strategy: str,
    sabotage: dict[int, tuple[ServiceProcess, threading.Event]] | None = None,
) -> Loop:
    """ROUNDS rounds of: select K over SHARDS id ranges, the oracle labels them, repeat.

    ``sabotage[r] = (victim, killed)``: before round r the victim is frozen (SIGSTOP), so the
    calls routed to it are certainly in flight, then SIGKILLed as the first shard answers.
    """
    labeled = world.initial.copy()
    loop = Loop([], [], [], [])
    with ShardedSelector(addresses, timeout=60.0) as selector:
        for round_ in range(ROUNDS):
            on_shard = None
            if sabotage and round_ in sabotage:
                on_shard = freeze_then_kill(*sabotage[round_])
            training = TrainingSet(labeled, world.labels[labeled].astype(np.int32), CLASSES)
            result = selector.select_shards(
                POOL,
                world.version,
                training,
                strategy,
                K,
                seed=round_,
                shards=split_range(0, N, SHARDS),
                on_shard=on_shard,
            )
            assert result.strategy == strategy and not result.two_stage
            assert len(set(result.ids.tolist())) == K
            assert not set(result.ids.tolist()) & set(labeled.tolist())
            loop.ids.append(result.ids)
            loop.scores.append(result.scores)
            loop.retries.append(result.retries)
            loop.attempts.append(result.attempts)
            labeled = np.concatenate([labeled, result.ids])  # the oracle answers
    return loop


@pytest.fixture(scope="module")
def one_replica_loops(world: World, replicas: list[ServiceProcess]) -> dict[str, Loop]:
    """The reference: every strategy's loop through a single replica."""
    return {s: run_loop(world, [replicas[0].address], s) for s in STRATEGIES}


def test_proxy_target_picks_the_policy() -> None:
    assert proxy_target("127.0.0.1:50052") == ("127.0.0.1:50052", False)
    assert proxy_target("proxy:50052") == ("proxy:50052", False)
    assert proxy_target("dns:///proxy:50052") == ("dns:///proxy:50052", True)
    assert proxy_target("ipv4:10.0.0.1:5,10.0.0.2:5") == ("ipv4:10.0.0.1:5,10.0.0.2:5", True)
    assert proxy_target("10.0.0.1:5, 10.0.0.2:5") == ("ipv4:10.0.0.1:5,10.0.0.2:5", True)
    with pytest.raises(InvalidArgumentError, match="not ip:port"):
        proxy_target("a:5,b:5")
    client = ProxyClient("dns:///proxy:50052")  # channels connect lazily: nothing is dialled
    assert (client.target, client.load_balancing) == ("dns:///proxy:50052", "round_robin")
    client.close()
    client = ProxyClient("127.0.0.1:1")
    assert (client.target, client.load_balancing) == ("127.0.0.1:1", "pick_first")
    client.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rounds_are_identical_across_replica_counts(
    world: World,
    replicas: list[ServiceProcess],
    one_replica_loops: dict[str, Loop],
    strategy: str,
) -> None:
    reference = one_replica_loops[strategy]
    assert reference.retries == [0] * ROUNDS
    for count in (2, 3):
        loop = run_loop(world, [r.address for r in replicas[:count]], strategy)
        for round_ in range(ROUNDS):
            np.testing.assert_array_equal(loop.ids[round_], reference.ids[round_])
            # The same shards are scored by whichever replica: bit-identical scores.
            np.testing.assert_array_equal(loop.scores[round_], reference.scores[round_])
        assert loop.retries == [0] * ROUNDS
    # The sharded first round is one replica's unsharded answer over the whole pool.
    client = ProxyClient(replicas[0].address)
    try:
        training = TrainingSet(world.initial, world.labels[world.initial].astype(np.int32), CLASSES)
        whole = client.select(POOL, world.version, training, strategy, K, seed=0)
    finally:
        client.close()
    np.testing.assert_array_equal(whole.ids, reference.ids[0])
    # Bit for bit: picked scores are computed one row at a time, whatever the sharding.
    np.testing.assert_array_equal(whole.scores, reference.scores[0])


def test_proxy_client_spreads_calls_over_replicas(
    world: World, replicas: list[ServiceProcess]
) -> None:
    """A fresh pool on the shared store: a replica reads it on its first Select (load_s of
    a read from S3, tens of ms) and serves it from memory afterwards (load_s ~ 0). After
    six Selects through a round-robin ProxyClient over two replicas, each replica answers
    a direct Select from memory, so each had already received one; with pick_first the
    other one would have to read the version now."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, CLASSES, size=2000)
    version = add_blobs_version(
        world.store, "rr", rng.normal(size=(2000, 16)).astype(np.float32), labels
    )
    ids = np.arange(0, 2000, 20, dtype=np.int64)
    training = TrainingSet(ids, labels[ids].astype(np.int32), CLASSES)
    a, b = (r.address for r in replicas[:2])
    spread = ProxyClient(f"{a},{b}")
    assert spread.load_balancing == "round_robin" and spread.target == f"ipv4:{a},{b}"
    try:
        loads = [
            spread.select("rr", version, training, "margin", 5, seed=0).timings["load_s"]
            for _ in range(6)
        ]
    finally:
        spread.close()
    assert sum(load > 0.01 for load in loads) >= 2, loads  # each replica read it once
    for address in (a, b):
        direct = ProxyClient(address)
        try:
            probe = direct.select("rr", version, training, "margin", 5, seed=0)
        finally:
            direct.close()
        assert probe.timings["load_s"] < 0.01, (address, probe.timings)


def test_replica_killed_mid_round_does_not_fail_the_round(
    world: World,
    replicas: list[ServiceProcess],
    one_replica_loops: dict[str, Loop],
    tmp_path: Path,
) -> None:
    """Three replicas (two shared, a fresh victim); in round 1 the victim is frozen, then
    SIGKILLed once the first shard answers: its shards fail UNAVAILABLE and are retried on
    the two live replicas. Every round completes with the one-replica picks, and the round
    after the kill runs on the survivors."""
    (victim,) = start_replicas(world, tmp_path, 1, name="victim")
    killed = threading.Event()
    try:
        addresses = [replicas[0].address, replicas[1].address, victim.address]
        started = time.monotonic()
        loop = run_loop(world, addresses, "margin", sabotage={1: (victim, killed)})
        elapsed = time.monotonic() - started
        assert victim.process is not None
        assert killed.is_set() and victim.process.wait(10) == -signal.SIGKILL
    finally:
        stop_all([victim])
    reference = one_replica_loops["margin"]
    for round_ in range(ROUNDS):
        np.testing.assert_array_equal(loop.ids[round_], reference.ids[round_])
        np.testing.assert_array_equal(loop.scores[round_], reference.scores[round_])
    assert loop.retries[0] == 0 and loop.retries[2] == 0
    assert loop.retries[1] >= 1  # the victim's shards, sent again
    assert loop.attempts[1] == SHARDS + loop.retries[1]
    assert elapsed < 60  # no attempt waited for its deadline
