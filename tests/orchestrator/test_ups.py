"""UPS from the orchestrator's side: the schedule, the score table, and a simulated loop
against a real in-process proxy server over a real store."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from proxal.orchestrator_service.engine.simulation import LoopConfig, PoolData, run_simulation
from proxal.orchestrator_service.engine.ups import ScoreTable, UpsSchedule
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.proxy.v1 import proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import EncoderInfo, Store
from threadpoolctl import threadpool_limits

POOL, N_TRAIN, N_TEST, DIM, CLASSES = "ups", 3000, 300, 16, 4


def test_schedule_rescores_first_rounds_then_every_nth() -> None:
    schedule = UpsSchedule(full_rounds=2, full_every=3)
    assert [schedule.is_full(r) for r in range(9)] == [1, 1, 0, 0, 1, 0, 0, 1, 0]
    assert not any(UpsSchedule(full_rounds=1, full_every=0).is_full(r) for r in range(1, 20))


@pytest.mark.parametrize(
    "schedule",
    [
        UpsSchedule(gamma=0.0),
        UpsSchedule(gamma=1.5),
        UpsSchedule(temperature=0.0),
        UpsSchedule(full_rounds=0),
        UpsSchedule(full_every=-1),
    ],
)
def test_bad_schedules_are_rejected(schedule: UpsSchedule) -> None:
    with pytest.raises(InvalidArgumentError, match="UPS"):
        schedule.validate()


def test_score_table_keeps_the_latest_score_and_forgets_labeled_ids() -> None:
    table = ScoreTable()
    table.update(np.array([1, 2, 3]), np.array([0.1, 0.2, 0.3], np.float32))
    table.update(np.array([2]), np.array([0.9], np.float32))
    table.drop([3])
    message = table.subsampling(UpsSchedule(gamma=0.2, temperature=0.05))
    ids, scores = message.previous_ids, message.previous_scores
    assert ids.tolist() == [1, 2]
    np.testing.assert_allclose(scores, [0.1, 0.9], rtol=1e-6)
    assert message.gamma == pytest.approx(0.2) and message.temperature == pytest.approx(0.05)


@pytest.fixture(scope="module")
def proxy_and_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyClient, Store]]:
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_TEST
    centers = rng.normal(0.0, 0.8, size=(CLASSES, DIM))
    gold = rng.integers(0, CLASSES, size=n)
    vectors = (centers[gold] + rng.normal(size=(n, DIM))).astype(np.float32)
    store = Store(str(tmp_path_factory.mktemp("ups") / "store"))
    names = [f"c{c}" for c in gold]
    store.add_pool_rows(POOL, "train", [f"t{i}" for i in range(N_TRAIN)], names[:N_TRAIN])
    store.add_pool_rows(POOL, "test", [f"t{i}" for i in range(N_TRAIN, n)], names[N_TRAIN:])
    ids = store.pool_rows(POOL, columns=["id"]).column("id").to_numpy()
    assert sorted(ids.tolist()) == list(range(n))  # rows get ids in the order added
    writer = store.begin_embedding(POOL, EncoderInfo("synthetic", "none", DIM, 16))
    writer.write(np.arange(n), vectors)
    writer.commit()
    servicer = ProxyServicer(VersionCache(store, 2, 8), score_threads=1)
    running = start_server(
        ServerSettings(port=0, max_workers=4),
        lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
    )
    client = ProxyClient(running.address)
    with threadpool_limits(limits=1, user_api="blas"):
        yield client, store
    client.close()
    running.stop(0)


def test_simulated_loop_with_ups_rescores_a_fraction(
    proxy_and_data: tuple[ProxyClient, Store],
) -> None:
    proxy, store = proxy_and_data
    data = PoolData.from_store(store, POOL, "v1")
    schedule = UpsSchedule(gamma=0.1, temperature=0.01, full_rounds=1, full_every=3)
    config = LoopConfig(
        strategies=("entropy",), seeds=(0,), initial_size=40, batch_size=20, rounds=5, ups=schedule
    )
    result = run_simulation(store, proxy, data, config, "ups-run")
    rounds = store.read_rounds("ups-run-entropy-s0")
    subsampled = [r.proxy_spec["ups"]["subsampled"] for r in rounds[:-1]]
    assert subsampled == [False, True, True, False, True]
    scored = [r.proxy_spec["ups"]["scored"] for r in rounds[:-1]]
    for rnd, count in enumerate(scored):
        unlabeled = N_TRAIN - 40 - 20 * rnd
        if subsampled[rnd]:
            assert 0.05 * unlabeled < count < 0.25 * unlabeled
        else:
            assert count == unlabeled
    labeled = [i for r in rounds for i in r.selected_ids]
    assert len(labeled) == len(set(labeled)) == 5 * 20
    assert result.points[-1].accuracy > 0.6
