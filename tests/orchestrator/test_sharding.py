"""Sharded selection: 3 real proxy replicas on loopback behind one round-robin channel.

Every decomposable strategy's merged answer must equal one replica's unsharded Select;
core-set and BADGE run the two-stage rule; a replica killed mid-request costs a retry, not
the answer; client errors are not retried.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.common.v1 import common_pb2
from proxal.orchestrator_service.cli import main as cli
from proxal.orchestrator_service.rpc import sharding
from proxal.orchestrator_service.rpc.clients import (
    ProxyClient,
    Selection,
    TrainingSet,
    channel_target,
    select_request,
)
from proxal.orchestrator_service.rpc.processes import ServiceProcess, start_all, stop_all
from proxal.orchestrator_service.rpc.sharding import (
    IdRange,
    ReplicaSet,
    ShardedSelection,
    ShardedSelector,
    ShardReport,
    make_selector,
    merge_top_k,
    resolve,
    split_ids,
    split_range,
)
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.runtime.arrays import (
    pack_float32,
    pack_int64,
    unpack_float32,
    unpack_int32,
    unpack_int64,
)
from proxal.runtime.errors import InvalidArgumentError, UnavailableError
from proxal.runtime.ranking import top_k
from proxal.runtime.server import grpc_channel_options
from proxal.store import Store

from tests.conftest import add_blobs_version

POOL = "blobs"
N, DIM, CLASSES, LABELED = 6000, 32, 4, 200
MLP = proxy_pb2.ClassifierSpec(kind="mlp", max_iter=30)
REPLICA_ARGS = ["--score-threads", "1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str, TrainingSet]:
    """A store with one 6,000 x 32 version of 4 Gaussian blobs and 200 labels spread over it."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 0.6, size=(CLASSES, DIM))
    labels = rng.integers(0, CLASSES, size=N)
    vectors = (centers[labels] + rng.normal(size=(N, DIM))).astype(np.float32)
    store = Store(str(tmp_path_factory.mktemp("sharding") / "store"))
    version = add_blobs_version(store, POOL, vectors, labels)
    ids = np.sort(rng.choice(N, LABELED, replace=False)).astype(np.int64)
    return store, version, TrainingSet(ids, labels[ids].astype(np.int32), CLASSES)


def start_replicas(store: Store, log_dir: Path, n: int = 3) -> list[ServiceProcess]:
    return start_all(
        [
            ServiceProcess("proxy_service", store.uri, REPLICA_ARGS, log_dir / f"proxy{i}.log")
            for i in range(n)
        ]
    )


@pytest.fixture(scope="module")
def replicas(
    world: tuple[Store, str, TrainingSet], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    running = start_replicas(world[0], tmp_path_factory.mktemp("logs"))
    yield running
    stop_all(running)


@pytest.fixture(scope="module")
def selector(replicas: list[ServiceProcess]) -> Iterator[ShardedSelector]:
    # A generous deadline: under load an attempt past it is retried, which the tests count.
    with ShardedSelector([r.address for r in replicas], timeout=180.0) as sel:
        yield sel


@pytest.fixture(scope="module")
def single(replicas: list[ServiceProcess]) -> Iterator[proxy_pb2_grpc.ProxyServiceStub]:
    """The reference: one replica, addressed directly, answering unsharded."""
    with grpc.insecure_channel(replicas[0].address, options=grpc_channel_options()) as channel:
        yield proxy_pb2_grpc.ProxyServiceStub(channel)


def reference(
    stub: proxy_pb2_grpc.ProxyServiceStub,
    world: tuple[Store, str, TrainingSet],
    strategy: str,
    k: int,
    seed: int,
    classifier: proxy_pb2.ClassifierSpec | None = None,
    candidate_ids: np.ndarray | None = None,
) -> proxy_pb2.SelectResponse:
    _, version, training = world
    request = select_request(
        POOL,
        version,
        training,
        strategy,
        k,
        seed,
        candidate_ids=candidate_ids,
        classifier=classifier,
    )
    return stub.Select(request, timeout=180.0)


# --- pure units -----------------------------------------------------------------------------


def test_split_range_is_contiguous_and_balanced() -> None:
    parts = split_range(10, 31, 4)
    assert parts == [IdRange(10, 15), IdRange(15, 20), IdRange(20, 25), IdRange(25, 31)]
    assert split_range(0, 3, 10) == [IdRange(0, 1), IdRange(1, 2), IdRange(2, 3)]
    assert split_range(5, 6, 1) == [IdRange(5, 6)]
    with pytest.raises(InvalidArgumentError, match="start < end"):
        split_range(4, 4, 2)
    with pytest.raises(InvalidArgumentError, match="n must be"):
        split_range(0, 4, 0)


def test_split_ids_sorts_dedupes_and_covers() -> None:
    parts = split_ids([9, 3, 3, 7, 1, 5, 11], 3)
    assert [p.tolist() for p in parts] == [[1, 3], [5, 7], [9, 11]]
    assert all(p.dtype == np.int64 for p in parts)
    assert [p.tolist() for p in split_ids([4, 2], 5)] == [[2], [4]]
    with pytest.raises(InvalidArgumentError, match="no ids"):
        split_ids([], 2)


def test_channel_target_lists_replicas() -> None:
    assert channel_target(["127.0.0.1:5", "127.0.0.1:6"]) == "ipv4:127.0.0.1:5,127.0.0.1:6"
    assert channel_target(["[::1]:5", "[::1]:6"]) == "ipv6:[::1]:5,[::1]:6"
    assert channel_target(["dns:///proxy:50051"]) == "dns:///proxy:50051"
    with pytest.raises(InvalidArgumentError, match="not ip:port"):
        channel_target(["localhost:5", "localhost:6"])
    with pytest.raises(InvalidArgumentError, match="at least one"):
        channel_target([])


def test_merge_top_k_equals_top_k_of_the_whole() -> None:
    rng = np.random.default_rng(3)
    ids = rng.permutation(1000).astype(np.int64)
    scores = rng.integers(0, 20, size=1000).astype(np.float32)  # many ties: the hash decides
    scores[rng.choice(1000, 10, replace=False)] = np.nan
    whole = top_k(scores, ids, 50, seed=7)
    parts = np.array_split(np.arange(1000), 6)
    tops = [p[top_k(scores[p], ids[p], min(50, len(p)), seed=7)] for p in parts]
    merged_ids, merged_scores = merge_top_k(
        [ids[t] for t in tops], [scores[t] for t in tops], 50, seed=7
    )
    np.testing.assert_array_equal(merged_ids, ids[whole])
    np.testing.assert_array_equal(merged_scores, scores[whole])
    # An id reported by two overlapping shards counts once.
    again_ids, _ = merge_top_k([ids[tops[0]], ids[tops[0]]], [scores[tops[0]]] * 2, 5, seed=7)
    assert len(set(again_ids.tolist())) == 5
    with pytest.raises(InvalidArgumentError, match="only 3 candidates"):
        merge_top_k([np.array([1, 2]), np.array([2, 3])], [np.zeros(2, np.float32)] * 2, 4, 0)


# --- against real replicas ------------------------------------------------------------------


def assert_same_scores(got: np.ndarray, want: np.ndarray) -> None:
    """Bit for bit, for every strategy: random scores are a hash, and the others' picked
    scores are computed one row at a time (`PointwiseStrategy.settle`), so they do not
    depend on the chunk or shard a row was scored in, although OpenBLAS rounds a row's
    last bit by its place in a chunk."""
    np.testing.assert_array_equal(got, want)


DECOMPOSABLE = [
    ("random", None),
    ("least_confidence", None),
    ("margin", None),
    ("entropy", None),
    ("mahalanobis", None),
    ("bald", MLP),
]


def assert_same_predictions(
    got: ShardedSelection | Selection, want: proxy_pb2.SelectResponse
) -> None:
    """The merged picks carry the predictions one replica gives them (same fitted proxy)."""
    assert len(got.predicted_labels) == len(got.ids)
    np.testing.assert_array_equal(got.predicted_labels, unpack_int32(want.predicted_labels.data))
    np.testing.assert_allclose(
        got.predicted_probabilities, unpack_float32(want.predicted_probabilities.data), atol=1e-6
    )


@pytest.mark.parametrize(("strategy", "classifier"), DECOMPOSABLE, ids=[s for s, _ in DECOMPOSABLE])
def test_decomposable_range_shards_equal_one_replica(
    world: tuple[Store, str, TrainingSet],
    selector: ShardedSelector,
    single: proxy_pb2_grpc.ProxyServiceStub,
    strategy: str,
    classifier: proxy_pb2.ClassifierSpec | None,
) -> None:
    _, version, training = world
    k, seed = 40, 11
    shards = split_range(0, N, 7)
    result = selector.select_shards(
        POOL, version, training, strategy, k, seed, shards, classifier=classifier
    )
    expected = reference(single, world, strategy, k, seed, classifier)
    assert expected.strategy == strategy and not expected.fallback_reason
    assert result.strategy == strategy and not result.two_stage
    np.testing.assert_array_equal(result.ids, unpack_int64(expected.ids.data))
    assert_same_scores(result.scores, unpack_float32(expected.scores.data))
    assert_same_predictions(result, expected)
    assert len(result.shards) == 7 and result.candidates == N - LABELED
    assert all(r.returned == k and r.attempts == 1 for r in result.shards)


@pytest.mark.parametrize("strategy", ["margin", "mahalanobis", "random"])
def test_decomposable_id_list_shards_equal_one_replica(
    world: tuple[Store, str, TrainingSet],
    selector: ShardedSelector,
    single: proxy_pb2_grpc.ProxyServiceStub,
    strategy: str,
) -> None:
    """Interleaved id lists over two thirds of the pool (labeled ids included, then dropped)."""
    _, version, _ = world
    subset = np.flatnonzero(np.arange(N) % 3 != 0).astype(np.int64)
    shards = [subset[subset % 5 == r] for r in range(5)]  # non-contiguous parts
    k, seed = 30, 4
    result = selector.select_shards(POOL, version, world[2], strategy, k, seed, shards)
    expected = reference(single, world, strategy, k, seed, candidate_ids=subset)
    np.testing.assert_array_equal(result.ids, unpack_int64(expected.ids.data))
    assert_same_scores(result.scores, unpack_float32(expected.scores.data))
    assert result.candidates == expected.candidates
    # The split helper's sorted parts give the same answer.
    again = selector.select_shards(POOL, version, world[2], strategy, k, seed, split_ids(subset, 4))
    np.testing.assert_array_equal(again.ids, result.ids)


def test_k_above_the_shards_candidates_is_an_error(
    world: tuple[Store, str, TrainingSet], selector: ShardedSelector
) -> None:
    _, version, training = world
    labeled = set(training.ids.tolist())
    small = np.array([i for i in range(100) if i not in labeled][:6], dtype=np.int64)
    with pytest.raises(InvalidArgumentError, match="only 6 candidates"):
        selector.select_shards(POOL, version, training, "margin", 7, 0, split_ids(small, 3))
    with pytest.raises(InvalidArgumentError, match="only 6 candidates"):
        selector.select_shards(POOL, version, training, "coreset", 7, 0, split_ids(small, 3))
    result = selector.select_shards(POOL, version, training, "margin", 6, 0, split_ids(small, 3))
    assert sorted(result.ids.tolist()) == small.tolist()


@pytest.mark.parametrize("strategy", ["coreset", "badge"])
def test_non_decomposable_runs_two_stages(
    world: tuple[Store, str, TrainingSet], selector: ShardedSelector, strategy: str
) -> None:
    _, version, training = world
    k, shards = 25, split_range(0, N, 5)
    first = selector.select_shards(POOL, version, training, strategy, k, 2, shards)
    second = selector.select_shards(POOL, version, training, strategy, k, 2, shards)
    assert first.two_stage and first.strategy == strategy and not first.fallback_reason
    assert first.stage2 is not None and first.stage2.candidates == len(first.stage1_ids)
    assert len(first.stage1_ids) == 5 * k  # every shard picked k
    assert len(first.ids) == k and len(set(first.ids.tolist())) == k
    assert len(first.predicted_labels) == k  # stage 2's predictions for its picks
    assert set(first.predicted_labels.tolist()) <= set(range(CLASSES))
    assert set(first.ids.tolist()) <= set(first.stage1_ids.tolist())
    assert not set(first.ids.tolist()) & set(training.ids.tolist())
    np.testing.assert_array_equal(first.ids, second.ids)
    np.testing.assert_array_equal(first.scores, second.scores)
    assert first.attempts == 6 and first.retries == 0


def test_fallback_decides_the_merge(
    world: tuple[Store, str, TrainingSet], selector: ShardedSelector
) -> None:
    """BADGE with labels of one class falls back to core-set: still two stages, reason kept."""
    _, version, training = world
    one_class = TrainingSet(training.ids[:10], np.zeros(10, np.int32), CLASSES)
    result = selector.select_shards(POOL, version, one_class, "badge", 10, 1, split_range(0, N, 3))
    assert result.strategy == "coreset" and result.two_stage
    assert "selected with coreset instead" in result.fallback_reason
    # margin falls back to random, which merges exactly.
    margin = selector.select_shards(POOL, version, one_class, "margin", 10, 1, split_range(0, N, 3))
    assert margin.strategy == "random" and not margin.two_stage
    assert len(margin.predicted_labels) == 0  # nothing fitted on one class: no predictions
    plain = selector.select_shards(POOL, version, one_class, "random", 10, 1, [IdRange(0, N)])
    np.testing.assert_array_equal(margin.ids, plain.ids)


def test_kmeans_initial_and_class_balanced_pass_through_shards(
    world: tuple[Store, str, TrainingSet],
    selector: ShardedSelector,
    single: proxy_pb2_grpc.ProxyServiceStub,
) -> None:
    """k-means runs in two stages; class-balanced picks match one replica's."""
    _, version, training = world
    none = TrainingSet(np.zeros(0, np.int64), np.zeros(0, np.int32), CLASSES)
    shards = split_range(0, N, 3)
    kmeans = selector.select_shards(POOL, version, none, "margin", 12, 4, shards, initial="kmeans")
    assert kmeans.strategy == "kmeans" and kmeans.two_stage and len(kmeans.stage1_ids) == 36
    assert len(set(kmeans.ids.tolist())) == 12
    assert set(kmeans.ids.tolist()) <= set(kmeans.stage1_ids.tolist())
    balanced = selector.select_shards(
        POOL, version, training, "margin", 20, 4, shards, class_balanced=True
    )
    assert balanced.strategy == "margin" and balanced.two_stage
    request = select_request(POOL, version, training, "margin", 20, 4, class_balanced=True)
    one = single.Select(request, timeout=180.0)
    assert set(balanced.ids.tolist()) == set(unpack_int64(one.ids.data).tolist())


def test_client_errors_are_not_retried(
    world: tuple[Store, str, TrainingSet], selector: ShardedSelector
) -> None:
    _, version, training = world
    before = selector.calls
    with pytest.raises(grpc.RpcError) as info:
        selector.select_shards(POOL, version, training, "nope", 5, 0, [IdRange(0, N)])
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown strategy" in (info.value.details() or "")
    assert selector.calls - before == 1
    before = selector.calls
    with pytest.raises(grpc.RpcError) as info:  # a range holding no id of the version
        selector.select_shards(POOL, version, training, "margin", 5, 0, split_range(N, N + 40, 4))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert selector.calls - before <= 4


def test_a_call_fails_only_when_every_replica_failed_it(
    world: tuple[Store, str, TrainingSet],
) -> None:
    _, version, training = world
    with ShardedSelector(["127.0.0.1:1", "127.0.0.1:2"], timeout=5.0) as dead:
        with pytest.raises(UnavailableError) as info:
            dead.select_shards(POOL, version, training, "margin", 5, 0, [IdRange(0, N)])
        assert dead.calls == 2  # each replica once
        message = str(info.value)
        assert message.startswith("proxy service: every replica failed Select: 127.0.0.1:1 ")
        assert "; 127.0.0.1:2 UNAVAILABLE (" in message


def test_replica_killed_during_a_request_costs_a_retry(
    world: tuple[Store, str, TrainingSet], tmp_path: Path
) -> None:
    """Fresh replicas; the third is frozen (SIGSTOP) so the calls routed to it are surely in
    flight, then SIGKILLed as soon as the first shard answers: those calls fail UNAVAILABLE
    and are retried on the two live replicas."""
    store, version, training = world
    replicas = start_replicas(store, tmp_path)
    try:
        victim = replicas[2].process
        assert victim is not None
        shards = split_range(0, N, 12)
        with ShardedSelector([r.address for r in replicas], timeout=30.0) as sel:
            before = sel.select_shards(POOL, version, training, "margin", 30, 5, shards)
            assert before.retries == 0
            killed = threading.Event()

            def kill_once(report: ShardReport) -> None:
                if not killed.is_set():
                    killed.set()
                    victim.kill()

            os.kill(victim.pid, signal.SIGSTOP)
            after = sel.select_shards(
                POOL, version, training, "margin", 30, 5, shards, on_shard=kill_once
            )
        assert killed.is_set() and victim.wait(10) == -signal.SIGKILL
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.scores, before.scores)
        assert after.retries >= 1
        assert max(r.attempts for r in after.shards) >= 2
    finally:
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                os.kill(replica.process.pid, signal.SIGCONT)
        stop_all(replicas)


# --- the drop-in selector: policy, failover, replica sets --------------------------------


def _subset() -> np.ndarray:
    """4,000 candidate ids (labeled ones among them), as a session would send."""
    return np.flatnonzero(np.arange(N) % 3 != 1).astype(np.int64)


def _same_selection(got: Selection, want: Selection) -> None:
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.predicted_labels, want.predicted_labels)
    np.testing.assert_allclose(got.predicted_probabilities, want.predicted_probabilities, atol=1e-6)
    assert len(got.predicted_labels) == len(got.ids)
    assert (got.strategy, got.fallback_reason, got.candidates) == (
        want.strategy,
        want.fallback_reason,
        want.candidates,
    )


def test_select_above_shard_above_fans_out_with_the_same_picks(
    world: tuple[Store, str, TrainingSet], replicas: list[ServiceProcess]
) -> None:
    """ProxyClient's select, UPS and return_scores included: sharded over 3 replicas above
    the threshold, one call below it, the same Selection as one replica either way."""
    _, version, training = world
    one = ProxyClient(replicas[0].address)
    candidates = _subset()
    try:
        want = one.select(POOL, version, training, "entropy", 25, 9, candidates, return_scores=True)
        ups = proxy_pb2.Subsampling(
            gamma=0.2,
            temperature=0.01,
            previous_ids=common_pb2.Int64Array(data=pack_int64(want.scored_ids)),
            previous_scores=common_pb2.Float32Array(data=pack_float32(want.scored_scores)),
        )
        want_ups = one.select(
            POOL, version, training, "margin", 25, 10, candidates, subsampling=ups
        )
    finally:
        one.close()
    for shard_above, calls in ((1000, 3), (len(candidates), 1)):
        with ShardedSelector([r.address for r in replicas], shard_above=shard_above) as sel:
            got = sel.select(
                POOL, version, training, "entropy", 25, 9, candidates, return_scores=True
            )
            assert sel.calls == calls
            _same_selection(got, want)
            assert sorted(got.scored_ids.tolist()) == sorted(want.scored_ids.tolist())
            got_ups = sel.select(
                POOL, version, training, "margin", 25, 10, candidates, subsampling=ups
            )
            _same_selection(got_ups, want_ups)
            assert got_ups.candidates < len(candidates) - LABELED  # UPS kept a part


def test_dead_replica_is_failed_over_for_select_and_predict(
    world: tuple[Store, str, TrainingSet], replicas: list[ServiceProcess]
) -> None:
    _, version, training = world
    one = ProxyClient(replicas[0].address)
    candidates, ids = _subset(), np.arange(0, N, 7, dtype=np.int64)
    try:
        want = one.select(POOL, version, training, "margin", 20, 3, candidates)
        predicted = one.predict(POOL, version, training, ids, 3)
    finally:
        one.close()
    live = [r.address for r in replicas[:2]]
    with ShardedSelector(["127.0.0.1:1", *live], shard_above=1000) as sel:
        _same_selection(sel.select(POOL, version, training, "margin", 20, 3, candidates), want)
        assert sel.calls == 4  # the dead replica's shard was sent again
        sel.shard_above = N  # one replica per call, round-robin: every third hits the dead one
        for _ in range(3):
            got = sel.select(POOL, version, training, "margin", 20, 3, candidates)
            _same_selection(got, want)
            np.testing.assert_array_equal(sel.predict(POOL, version, training, ids, 3), predicted)


def test_a_dns_set_picks_up_new_replicas_after_a_failure(
    world: tuple[Store, str, TrainingSet],
    replicas: list[ServiceProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name first resolves to a dead address only; once it fails, it is resolved
    again and the replica that appeared answers."""
    _, version, training = world
    monkeypatch.setattr(sharding, "REFRESH_S", 0.0)
    answers = [["127.0.0.1:1"], ["127.0.0.1:1", replicas[1].address]]
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return answers[min(len(asked), len(answers)) - 1]

    replica_set = ReplicaSet.parse("dns:///proxy.test:50052", resolver)
    assert replica_set.addresses() == ["127.0.0.1:1"] and asked == [("proxy.test", 50052)]
    with ShardedSelector(replica_set) as sel:
        got = sel.select(POOL, version, training, "margin", 5, 0, _subset())
    assert len(got.ids) == 5 and sel.calls == 2 and len(asked) == 2
    assert replica_set.addresses() == answers[1]


def test_replica_set_parses_what_users_write() -> None:
    assert ReplicaSet.parse(" 10.0.0.1:5 ").addresses() == ["10.0.0.1:5"]
    assert ReplicaSet.parse("a:1, b:2,[::1]:3").addresses() == ["a:1", "b:2", "[::1]:3"]
    assert ReplicaSet.parse("ipv4:10.0.0.1:5,10.0.0.2:5").addresses() == [
        "10.0.0.1:5",
        "10.0.0.2:5",
    ]
    local = ReplicaSet.parse("dns:///localhost:7")
    assert "127.0.0.1:7" in local.addresses() and local.spec == "dns:///localhost:7"
    assert local.authority == "localhost"
    assert ReplicaSet.parse("dns:localhost:7").addresses() == local.addresses()
    assert resolve("no-such-host.invalid", 7) == []
    bad = {
        "": "proxy address is empty",
        " , ": "has an empty entry",
        "a:1,": "has an empty entry",
        "a:1,a:1": "names a replica twice",
        "a:1,dns:///b:2": "inside a list",
        "host": "is not host:port",
        "a:99999": "is not host:port",
        "dns:///name": "is not dns:///name:port",
        "dns://10.0.0.53/name:5": "name no DNS server",
    }
    for value, message in bad.items():
        with pytest.raises(InvalidArgumentError, match=message):
            ReplicaSet.parse(value)
    with pytest.raises(InvalidArgumentError, match="--shard-above must be a number >= 1"):
        make_selector("a:1", 0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--proxy", ""], "proxal: the proxy address is empty; write host:port, a list"),
        (["--proxy", "a:1,,b:2"], "proxal: proxy address list 'a:1,,b:2' has an empty entry"),
        (["--proxy", "dns:///x"], "proxal: proxy address 'dns:///x' is not dns:///name:port"),
        (
            ["--proxy", "a:1", "--shard-above", "0"],
            "proxal serve: argument --shard-above: must be a whole number >= 1",
        ),
    ],
)
def test_serve_refuses_a_bad_proxy_or_shard_above_in_one_line(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code: object = cli.main(["serve", "--store", str(tmp_path), *flags])
    except SystemExit as exc:  # a usage error, from argparse
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
