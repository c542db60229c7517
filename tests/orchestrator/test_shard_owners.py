"""The sharded selector over shard-owning replicas (`--shard I/R`): real gRPC servers on
port 0 over a real store. Parts route to their owners and merge to one whole replica's
picks; a stopped owner's part, or a part no replica owns, is adopted by another replica
(same picks, reported); replicas that disagree on the count are refused by name."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.orchestrator_service.rpc.clients import TrainingSet, select_request
from proxal.orchestrator_service.rpc.processes import ServiceProcess, start_all, stop_all
from proxal.orchestrator_service.rpc.sharding import ShardedSelector, ShardMap
from proxal.proxy.v1 import proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.proxy_service.shards import ShardOwner, ShardPart
from proxal.runtime.errors import FailedPreconditionError
from proxal.runtime.server import RunningServer, ServerSettings, start_server
from proxal.store import Store

from tests.conftest import add_blobs_version

POOL = "owners"
N, DIM, CLASSES, LABELED, K = 1203, 16, 3, 120, 25


@dataclass
class Replica:
    server: RunningServer
    owner: ShardOwner | None

    @property
    def address(self) -> str:
        return self.server.address


def start(store: Store, part: ShardPart | None) -> Replica:
    owner = None if part is None else ShardOwner(store, part, 2, spare_rows=256)
    servicer = ProxyServicer(VersionCache(store, 2, 8), shards=owner)
    server = start_server(
        ServerSettings(port=0, max_workers=4),
        lambda s: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, s),
        [SERVICE_NAME],
    )
    return Replica(server, owner)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str, TrainingSet]:
    rng = np.random.default_rng(11)
    labels = rng.integers(0, CLASSES, size=N)
    centers = rng.normal(0.0, 0.7, size=(CLASSES, DIM))
    vectors = (centers[labels] + rng.normal(size=(N, DIM))).astype(np.float32)
    store = Store(str(tmp_path_factory.mktemp("owners") / "store"))
    version = add_blobs_version(store, POOL, vectors, labels)
    ids = np.sort(rng.choice(N, LABELED, replace=False)).astype(np.int64)
    return store, version, TrainingSet(ids, labels[ids].astype(np.int32), CLASSES)


@pytest.fixture(scope="module")
def whole(world: tuple[Store, str, TrainingSet]) -> Iterator[Replica]:
    replica = start(world[0], None)
    yield replica
    replica.server.stop(0)


@pytest.fixture
def started() -> Iterator[list[Replica]]:
    """Replicas a test starts; all stopped after it."""
    replicas: list[Replica] = []
    yield replicas
    for replica in replicas:
        replica.server.stop(0)


def owners(store: Store, indexes: list[int], count: int, into: list[Replica]) -> list[str]:
    into.extend(start(store, ShardPart(i, count)) for i in indexes)
    return [r.address for r in into]


def one_replica(
    whole: Replica, world: tuple[Store, str, TrainingSet], strategy: str
) -> tuple[np.ndarray, np.ndarray]:
    _, version, training = world
    with ShardedSelector([whole.address]) as selector:
        picked = selector.select(POOL, version, training, strategy, K, 3)
    return picked.ids, picked.scores


@pytest.mark.parametrize("count", [2, 4])
def test_parts_through_the_selector_pick_what_one_whole_replica_picks(
    world: tuple[Store, str, TrainingSet],
    whole: Replica,
    started: list[Replica],
    count: int,
) -> None:
    store, version, training = world
    addresses = owners(store, list(range(count)), count, started)
    with ShardedSelector(addresses) as selector:
        assert selector.shard_map().count == count
        for strategy in ("least_confidence", "margin", "entropy"):
            ids, scores = one_replica(whole, world, strategy)
            picked = selector.select(POOL, version, training, strategy, K, 3)
            np.testing.assert_array_equal(picked.ids, ids)
            np.testing.assert_allclose(picked.scores, scores, rtol=1e-5)
        coreset = selector.select(POOL, version, training, "coreset", K, 3)
        few = np.setdiff1d(np.arange(10, 10 + 3 * K), training.ids)  # all in part 0
        with ShardedSelector([whole.address]) as one:
            want = one.select(POOL, version, training, "margin", K, 3, candidate_ids=few)
        got = selector.select(POOL, version, training, "margin", K, 3, candidate_ids=few)
        np.testing.assert_array_equal(got.ids, want.ids)
    assert len(np.unique(coreset.ids)) == K
    assert not np.isin(coreset.ids, training.ids).any()
    for replica in started:  # each replica loaded only its part
        assert replica.owner is not None
        (loaded,) = replica.owner.own.values()
        assert loaded.owned in (N // count, N // count + 1)


def test_a_stopped_owner_is_adopted_with_the_same_picks(
    world: tuple[Store, str, TrainingSet], whole: Replica, started: list[Replica]
) -> None:
    store, version, training = world
    addresses = owners(store, [0, 1, 2], 3, started)
    request = select_request(POOL, version, training, "margin", K, 3)
    with ShardedSelector(addresses) as selector:
        before = selector.select_parts(request, selector.shard_map())
        started[1].server.stop(0)
        after = selector.select_parts(request, selector.shard_map())
        again = selector.select_parts(request, selector.shard_map(fresh=True))
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(again.ids, before.ids)
    np.testing.assert_array_equal(before.ids, one_replica(whole, world, "margin")[0])
    adopted = [r for r in after.shards if r.adopted]
    assert [r.index for r in adopted] == [1] and adopted[0].replica != addresses[1]
    assert after.retries == 1  # the stopped owner was tried first
    assert [r.index for r in again.shards if r.adopted] == [1]  # no owner in the new map
    assert sum(r.owner.adoptions for r in started if r.owner is not None) == 1


def test_a_part_no_replica_owns_is_adopted(
    world: tuple[Store, str, TrainingSet], whole: Replica, started: list[Replica]
) -> None:
    store, version, training = world
    addresses = owners(store, [0, 1, 3], 4, started)
    with ShardedSelector(addresses) as selector:
        shard_map = selector.shard_map()
        assert (shard_map.count, sorted(shard_map.owners)) == (4, [0, 1, 3])
        request = select_request(POOL, version, training, "entropy", K, 3)
        result = selector.select_parts(request, shard_map)
    np.testing.assert_array_equal(result.ids, one_replica(whole, world, "entropy")[0])
    assert [(r.index, r.adopted) for r in result.shards] == [
        (0, False),
        (1, False),
        (2, True),
        (3, False),
    ]


def test_replicas_that_disagree_on_the_count_are_named(
    world: tuple[Store, str, TrainingSet], started: list[Replica]
) -> None:
    store, version, training = world
    owners(store, [0], 2, started)
    owners(store, [1], 3, started)
    with (
        ShardedSelector([r.address for r in started]) as selector,
        pytest.raises(FailedPreconditionError) as refused,
    ):
        selector.select(POOL, version, training, "margin", K, 3)
    message = str(refused.value)
    assert f"{started[0].address} owns 0/2" in message
    assert f"{started[1].address} owns 1/3" in message


def test_whole_replicas_keep_the_id_range_policy(whole: Replica) -> None:
    with ShardedSelector([whole.address]) as selector:
        assert selector.shard_map() == ShardMap(0, {}, [whole.address])


def test_a_non_owner_asked_directly_refuses_without_adopt(
    world: tuple[Store, str, TrainingSet], started: list[Replica]
) -> None:
    store, version, training = world
    (address,) = owners(store, [0], 2, started)
    request = select_request(POOL, version, training, "margin", K, 3)
    request.shard.part.index, request.shard.part.count = 1, 2
    with grpc.insecure_channel(address) as channel:
        stub = proxy_pb2_grpc.ProxyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Select(request)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        request.adopt = True
        assert len(stub.Select(request).ids.data) == 8 * K


@pytest.mark.slow
def test_a_sigkilled_owner_process_is_adopted(
    world: tuple[Store, str, TrainingSet], whole: Replica, tmp_path: Path
) -> None:
    """Real `python -m proxal.proxy_service --shard i/3` processes; part 2's is SIGKILLed."""
    store, version, training = world
    processes = start_all(
        [
            ServiceProcess(
                "proxy_service",
                store.uri,
                ["--score-threads", "1", "--shard", f"{i}/3"],
                tmp_path / f"p{i}.log",
            )
            for i in range(3)
        ]
    )
    try:
        with ShardedSelector([p.address for p in processes]) as selector:
            assert selector.shard_map().owners == {i: [p.address] for i, p in enumerate(processes)}
            request = select_request(POOL, version, training, "margin", K, 3)
            before = selector.select_parts(request, selector.shard_map())
            assert processes[2].process is not None
            processes[2].process.send_signal(signal.SIGKILL)
            processes[2].process.wait()
            after = selector.select_parts(request, selector.shard_map())
    finally:
        stop_all(processes)
    np.testing.assert_array_equal(before.ids, one_replica(whole, world, "margin")[0])
    np.testing.assert_array_equal(after.ids, before.ids)
    assert [r.index for r in after.shards if r.adopted] == [2]
