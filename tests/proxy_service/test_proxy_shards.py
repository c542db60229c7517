"""Shard-owning replicas (`--shard I/R`): the part read, the part's view, what a replica
serves and refuses, over real in-process gRPC servers on a real store on tmp_path."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.proxy_service.settings import build_parser, from_args
from proxal.proxy_service.shards import LoadedPart, ShardOwner, ShardPart
from proxal.runtime.arrays import pack_int32, pack_int64, unpack_float32, unpack_int64
from proxal.runtime.errors import NotFoundError
from proxal.runtime.server import RunningServer, ServerSettings, grpc_channel_options, start_server
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import EncoderInfo, Store

from tests.conftest import add_blobs_version

POOL = "parts"
N, DIM, CLASSES, LABELED, SPARE = 1001, 16, 3, 90, 64


@dataclass
class Replica:
    server: RunningServer
    servicer: ProxyServicer
    stub: proxy_pb2_grpc.ProxyServiceStub
    channel: grpc.Channel


def start_replica(store: Store, part: ShardPart | None) -> Replica:
    """A proxy replica on port 0 owning `part` (None: whole versions)."""
    cache = VersionCache(store, max_versions=2, max_models=8)
    owner = None if part is None else ShardOwner(store, part, 2, spare_rows=SPARE)
    servicer = ProxyServicer(cache, shards=owner)
    server = start_server(
        ServerSettings(port=0, max_workers=4),
        lambda s: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, s),
        [SERVICE_NAME],
    )
    channel = grpc.insecure_channel(server.address, options=grpc_channel_options())
    return Replica(server, servicer, proxy_pb2_grpc.ProxyServiceStub(channel), channel)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str, np.ndarray]:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, CLASSES, size=N)
    centers = rng.normal(0.0, 0.8, size=(CLASSES, DIM))
    vectors = (centers[labels] + rng.normal(size=(N, DIM))).astype(np.float32)
    store = Store(str(tmp_path_factory.mktemp("parts") / "store"))
    return store, add_blobs_version(store, POOL, vectors, labels), labels


@pytest.fixture(scope="module")
def replicas(world: tuple[Store, str, np.ndarray]) -> Iterator[dict[str, Replica]]:
    store = world[0]
    started = {"whole": start_replica(store, None), "p1": start_replica(store, ShardPart(1, 4))}
    yield started
    for replica in started.values():
        replica.channel.close()
        replica.server.stop(0)


def request(
    world: tuple[Store, str, np.ndarray], part: tuple[int, int] | None = None, **fields: object
) -> proxy_pb2.SelectRequest:
    _, version, labels = world
    ids = np.arange(0, N, N // LABELED)[:LABELED]  # labelled rows spread over every part
    message = proxy_pb2.SelectRequest(
        pool=POOL,
        embedding_version=version,
        training=proxy_pb2.TrainingSet(
            ids=common_pb2.Int64Array(data=pack_int64(ids)),
            labels=common_pb2.Int32Array(data=pack_int32(labels[ids].astype(np.int32))),
            num_classes=CLASSES,
        ),
        strategy="margin",
        k=15,
        seed=5,
    )
    if part is not None:
        message.shard.part.CopyFrom(proxy_pb2.ShardPart(index=part[0], count=part[1]))
    for name, value in fields.items():
        if isinstance(value, common_pb2.Int64Array):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def test_read_part_reads_only_the_parts_rows(world: tuple[Store, str, np.ndarray]) -> None:
    store, version, _ = world
    all_ids, all_vectors = store.read_embeddings(POOL, version)
    for index in range(3):
        ids, vectors = store.read_part(POOL, version, index, 3, spare_rows=5)
        lo, hi = index * N // 3, (index + 1) * N // 3
        assert vectors.shape == (hi - lo + 5, DIM)
        np.testing.assert_array_equal(ids, all_ids[lo:hi])
        np.testing.assert_array_equal(vectors[: hi - lo], all_vectors[lo:hi])


def test_read_part_of_a_version_written_out_of_id_order(tmp_path: object) -> None:
    store = Store(str(tmp_path) + "/store")
    store.add_pool_rows("shuffled", "train", [f"t{i}" for i in range(40)], ["a"] * 40)
    writer = store.begin_embedding("shuffled", EncoderInfo("m", "none", 4, 8))
    order = np.random.default_rng(0).permutation(40)
    vectors = np.arange(160, dtype=np.float32).reshape(40, 4)
    writer.write(order.tolist()[:20], vectors[order[:20]])
    writer.write(order.tolist()[20:], vectors[order[20:]])
    version = str(writer.commit().version)
    ids, part = store.read_part("shuffled", version, 2, 4)
    np.testing.assert_array_equal(ids, np.arange(20, 30))
    np.testing.assert_array_equal(part, vectors[20:30])


def test_a_part_replica_picks_what_a_whole_replica_picks_in_that_part(
    world: tuple[Store, str, np.ndarray], replicas: dict[str, Replica]
) -> None:
    """Same model (fitted on fetched labelled rows), same candidates, same picks."""
    for strategy in ("margin", "entropy", "coreset"):
        ask = request(world, (1, 4), strategy=strategy, return_scores=True)
        part = replicas["p1"].stub.Select(ask)
        whole = replicas["whole"].stub.Select(ask)
        assert part.candidates == whole.candidates > 0
        np.testing.assert_array_equal(unpack_int64(part.ids.data), unpack_int64(whole.ids.data))
        np.testing.assert_allclose(
            unpack_float32(part.scores.data), unpack_float32(whole.scores.data), rtol=1e-5
        )
        np.testing.assert_allclose(
            unpack_float32(part.predicted_probabilities.data),
            unpack_float32(whole.predicted_probabilities.data),
            rtol=1e-5,
        )
        picked = unpack_int64(part.ids.data)
        assert ((picked >= N // 4) & (picked < 2 * N // 4)).all()


def test_a_part_replica_holds_only_its_rows(
    world: tuple[Store, str, np.ndarray], replicas: dict[str, Replica]
) -> None:
    replicas["p1"].stub.Select(request(world, (1, 4)))
    owner = replicas["p1"].servicer.shards
    assert owner is not None
    (loaded,) = owner.own.values()
    owned = 2 * N // 4 - N // 4
    assert loaded.owned == owned
    assert loaded.buffer.shape == (owned + SPARE, DIM)
    assert loaded.ids.shape == (owned + SPARE,)
    assert not replicas["p1"].servicer.cache.versions.keys()  # no whole version loaded


def test_predict_on_a_part_replica_fetches_other_ids(
    world: tuple[Store, str, np.ndarray], replicas: dict[str, Replica]
) -> None:
    ask = request(world)
    predict = proxy_pb2.PredictRequest(
        pool=POOL,
        embedding_version=ask.embedding_version,
        training=ask.training,
        ids=common_pb2.Int64Array(data=pack_int64(np.array([3, 400, 999, 260]))),
        seed=5,
    )
    part, whole = replicas["p1"].stub.Predict(predict), replicas["whole"].stub.Predict(predict)
    assert part.labels.data == whole.labels.data
    np.testing.assert_allclose(
        unpack_float32(part.confidence.data), unpack_float32(whole.confidence.data), rtol=1e-5
    )


def test_stage_two_candidates_without_a_shard_run_on_fetched_rows(
    world: tuple[Store, str, np.ndarray], replicas: dict[str, Replica]
) -> None:
    candidates = common_pb2.Int64Array(data=pack_int64(np.array([5, 17, 301, 640, 877, 999])))
    ask = request(world, k=3, strategy="coreset", candidate_ids=candidates)
    part, whole = replicas["p1"].stub.Select(ask), replicas["whole"].stub.Select(ask)
    assert part.ids.data == whole.ids.data


@pytest.mark.parametrize(
    ("part", "adopt", "extra", "code", "says"),
    [
        ((2, 4), False, {}, grpc.StatusCode.FAILED_PRECONDITION, "owns part 1/4"),
        (None, False, {}, grpc.StatusCode.FAILED_PRECONDITION, "send shard.part 1/4"),
        ((4, 4), False, {}, grpc.StatusCode.INVALID_ARGUMENT, "0 <= index < count"),
        ((0, 0), True, {}, grpc.StatusCode.INVALID_ARGUMENT, "count >= 1"),
        ((1, 3), True, {}, grpc.StatusCode.INVALID_ARGUMENT, "splits versions into 4 parts"),
        ((1, 4), False, {"k": 0}, grpc.StatusCode.INVALID_ARGUMENT, "k must be >= 1"),
    ],
)
def test_bad_shards_get_their_status_and_the_replica_keeps_serving(
    world: tuple[Store, str, np.ndarray],
    replicas: dict[str, Replica],
    part: tuple[int, int] | None,
    adopt: bool,
    extra: dict[str, object],
    code: grpc.StatusCode,
    says: str,
) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        replicas["p1"].stub.Select(request(world, part, adopt=adopt, **extra))
    assert failed.value.code() == code
    assert says in failed.value.details()
    assert replicas["p1"].stub.Select(request(world, (1, 4))).ids.data


def test_an_id_range_is_refused_by_a_part_replica(
    world: tuple[Store, str, np.ndarray], replicas: dict[str, Replica]
) -> None:
    ask = request(world)
    ask.shard.range.CopyFrom(proxy_pb2.IdRange(start=0, end=100))
    with pytest.raises(grpc.RpcError) as failed:
        replicas["p1"].stub.Select(ask)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "id range" in failed.value.details()


def test_adopting_another_part_loads_it_and_counts(
    world: tuple[Store, str, np.ndarray], replicas: dict[str, Replica]
) -> None:
    owner = replicas["p1"].servicer.shards
    assert owner is not None
    before = owner.adoptions
    ask = request(world, (3, 4), adopt=True)
    adopted, whole = replicas["p1"].stub.Select(ask), replicas["whole"].stub.Select(ask)
    assert adopted.ids.data == whole.ids.data
    assert owner.adoptions == before + 1
    replicas["p1"].stub.Select(ask)  # held now: no second load
    assert owner.adoptions == before + 1


def test_describe_says_which_part_a_replica_owns(replicas: dict[str, Replica]) -> None:
    described = replicas["p1"].stub.Describe(proxy_pb2.DescribeRequest())
    assert (described.shard.index, described.shard.count) == (1, 4)
    assert not replicas["whole"].stub.Describe(proxy_pb2.DescribeRequest()).HasField("shard")


def test_shard_flag_and_auto_ordinal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ShardPart.parse("auto/4", "proxy-3") == ShardPart(3, 4)
    assert ShardPart.parse("2/5", "anything") == ShardPart(2, 5)
    bad_flags = [("4/4", "h"), ("auto/4", "proxy"), ("x/2", "h"), ("1", "h"), ("auto/2", "p-7")]
    for bad, host in bad_flags:
        with pytest.raises(ValueError, match="--shard"):
            ShardPart.parse(bad, host)
    monkeypatch.setenv("HOSTNAME", "proxy-1")
    parser = build_parser({"PROXAL_PROXY_SHARD": "auto/2", "PROXAL_PROXY_STORE": "/s"})
    assert from_args(parser.parse_args([])).shard == ShardPart(1, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--shard", "5/2"])


def test_sequential_on_a_part_picks_what_a_whole_replica_picks(
    world: tuple[Store, str, np.ndarray], replicas: dict[str, Replica]
) -> None:
    labels = world[2]

    def stream(stub: proxy_pb2_grpc.ProxyServiceStub, steps: int = 4) -> list[int]:
        answers: queue.Queue[int] = queue.Queue()

        def messages() -> Iterator[proxy_pb2.SequentialRequest]:
            yield proxy_pb2.SequentialRequest(start=request(world, (1, 4), strategy="entropy"))
            for _ in range(steps - 1):
                item = answers.get(timeout=30)
                label = proxy_pb2.Label(id=item, label=int(labels[item]))
                yield proxy_pb2.SequentialRequest(label=label)

        picked: list[int] = []
        for step in stub.SelectSequential(messages(), timeout=60):
            picked.append(step.id)
            if len(picked) == steps:
                break
            answers.put(step.id)
        return picked

    part = stream(replicas["p1"].stub)
    assert part == stream(replicas["whole"].stub)
    assert all(N // 4 <= i < 2 * N // 4 for i in part)


def test_labelled_rows_go_to_the_headroom_once_and_a_full_headroom_copies() -> None:
    name = EmbeddingVersion("p", "v1")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 4)).astype(np.float32)  # a version of ids 0..39
    buffer = np.zeros((10 + 3, 4), np.float32)
    buffer[:10] = vectors[10:20]
    part = LoadedPart(name, ShardPart(1, 4), np.arange(10, 20), buffer)
    fetched: list[list[int]] = []

    def fetch(_: EmbeddingVersion, ids: np.ndarray) -> np.ndarray:
        fetched.append(ids.tolist())
        return vectors[ids]

    first = part.view(np.array([3, 12, 30]), fetch)
    second = part.view(np.array([30, 3, 5]), fetch)
    assert fetched == [[3, 30], [5]]  # in-part 12 never fetched, 3 and 30 only once
    assert first.vectors.base is not None and second.vectors.shape == (13, 4)
    np.testing.assert_array_equal(
        second.vectors[second.rows(np.array([5, 30, 12]), "t")], vectors[[5, 30, 12]]
    )
    full = part.view(np.array([0, 1, 2]), fetch)  # headroom full: a copy, still right
    assert full.vectors.shape == (16, 4) and len(part.ids) == 13
    np.testing.assert_array_equal(
        full.vectors[full.rows(np.array([1, 5, 19]), "t")], vectors[[1, 5, 19]]
    )
    with pytest.raises(NotFoundError):
        full.rows(np.array([25]), "candidate_ids")


def test_candidates_outside_the_part_give_an_empty_answer(
    world: tuple[Store, str, np.ndarray], replicas: dict[str, Replica]
) -> None:
    outside = common_pb2.Int64Array(data=pack_int64(np.array([601, 602, 999])))
    answer = replicas["p1"].stub.Select(request(world, (1, 4), candidate_ids=outside))
    assert (answer.candidates, len(answer.ids.data)) == (0, 0)
    assert answer.strategy == "margin"
    start = proxy_pb2.SequentialRequest(start=request(world, (1, 4), candidate_ids=outside))
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(replicas["p1"].stub.SelectSequential(iter([start]))))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
