"""One engine for live sessions and simulations: the same session configuration gives the
same picks over gRPC with a scripted annotator as in a simulation with the oracle; the
classifier spec, UPS and ASVP settings of CreateSession are checked (real proxy process,
Lance store on tmp_path, orchestrator on port 0)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.engine.feature_checks import AsvpRuntime
from proxal.orchestrator_service.engine.simulation import LoopConfig, PoolData, run_simulation
from proxal.orchestrator_service.engine.ups import UpsSchedule
from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.runtime.errors import FailedPreconditionError
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import EncoderInfo, Store

from tests.conftest import add_session_pool

CLASSES = ["alpha", "beta", "gamma"]
POOL = "blobs"
UPS = UpsSchedule(gamma=0.3, temperature=0.05, full_rounds=1, full_every=2)


@dataclass
class Stack:
    stub: pb_grpc.OrchestratorServiceStub
    store: Store
    proxy: ProxyClient
    root: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A proxy process and an orchestrator whose encoder address is dead (nothing listens)."""
    root = tmp_path_factory.mktemp("engine")
    store = Store(str(root / "store"))
    add_session_pool(store, POOL, CLASSES, 160, 40, 16, seed=3)
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    with ServiceProcess("proxy_service", store.uri, log_path=root / "proxy.log") as process:
        proxy = ProxyClient(process.address)
        asvp = AsvpRuntime(EncoderClient("127.0.0.1:9"), checkpoints)
        sessions = Sessions(store, proxy, asvp=asvp)
        servicer = OrchestratorServicer(sessions)
        running = start_server(
            ServerSettings(port=0),
            lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
            ["proxal.orchestrator.v1.OrchestratorService"],
        )
        with grpc.insecure_channel(running.address) as channel:
            yield Stack(pb_grpc.OrchestratorServiceStub(channel), store, proxy, checkpoints)
        running.stop(0)
        sessions.close()


def _labels(store: Store) -> dict[int, str]:
    rows = store.pool_rows(POOL, split="train", columns=["id", "label"])
    return dict(zip(rows.column("id").to_pylist(), rows.column("label").to_pylist(), strict=True))


@pytest.mark.parametrize(
    ("strategy", "ups"), [("margin", None), ("random", None), ("entropy", UPS)]
)
def test_live_session_picks_what_the_simulation_picks(
    stack: Stack, strategy: str, ups: UpsSchedule | None
) -> None:
    name = f"same-{strategy}"
    config = LoopConfig(
        strategies=(strategy,), seeds=(7,), initial_size=12, batch_size=8, rounds=5, ups=ups
    )
    data = PoolData.from_store(stack.store, POOL, "v1")
    simulated = run_simulation(stack.store, stack.proxy, data, config, f"sim-{name}")
    expected = [p.selected_ids for p in simulated.points[:-1]]
    assert all(len(ids) == 8 for ids in expected)

    stack.stub.CreateSession(
        pb.CreateSessionRequest(
            session=name,
            pool=POOL,
            strategy=strategy,
            batch_size=8,
            seed=7,
            classifier="logreg",
            classifier_c=config.classifier_c,
            classifier_max_iter=config.classifier_max_iter,
            ups=None
            if ups is None
            else pb.UpsSettings(
                gamma=ups.gamma,
                temperature=ups.temperature,
                full_rounds=ups.full_rounds,
                full_every=ups.full_every,
            ),
        )
    )
    gold = _labels(stack.store)
    annotate(stack, name, list(simulated.sessions[0].initial_ids), gold)
    live = []
    for _ in range(config.rounds):
        batch = stack.stub.NextBatch(pb.NextBatchRequest(session=name, annotator="script"))
        ids = [item.id for item in batch.items]
        live.append(tuple(ids))
        annotate(stack, name, ids, gold)
    assert live == expected
    rounds = stack.store.read_rounds(name)
    assert [r.embedding_version for r in rounds] == ["v1"] * config.rounds
    assert rounds[0].proxy_spec["c"] == config.classifier_c
    if ups is not None:  # the UPS decision is recorded, and some rounds did subsample
        assert [r.proxy_spec["ups"]["subsampled"] for r in rounds] == [
            not ups.is_full(r) for r in range(config.rounds)
        ]


def annotate(stack: Stack, session: str, ids: list[int], gold: dict[int, str]) -> None:
    reply = stack.stub.SubmitLabels(
        pb.SubmitLabelsRequest(
            session=session,
            labels=[pb.Label(id=i, label=gold[i]) for i in ids],
            request_id=uuid.uuid4().hex,
            annotator="script",
        )
    )
    assert reply.accepted == len(ids)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"ups": pb.UpsSettings(gamma=1.5)}, "UPS gamma must be in"),
        ({"ups": pb.UpsSettings(temperature=-1)}, "UPS temperature must be > 0"),
        ({"ups": pb.UpsSettings(full_every=-1)}, "full_every >= 0"),
        ({"asvp": pb.AsvpSettings(threshold=-0.5)}, "asvp threshold must be a finite"),
        ({"asvp": pb.AsvpSettings(every_rounds=0)}, "asvp needs a trigger"),
        ({"asvp": pb.AsvpSettings(growth_factor=0.5)}, "growth_factor must be 0"),
        ({"asvp": pb.AsvpSettings(max_length=4000)}, "max_length must be in"),
        ({"asvp": pb.AsvpSettings(finetune_method="magic")}, "finetune_method must be one of"),
        ({"classifier_c": -2.0}, "classifier c must be"),
        ({"classifier_max_iter": -1}, "classifier max_iter must be"),
    ],
)
def test_out_of_range_settings_are_invalid_argument(
    stack: Stack, settings: dict[str, object], match: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.CreateSession(
            pb.CreateSessionRequest(session="bad-settings", pool=POOL, **settings)  # type: ignore[arg-type]
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert match in err.value.details()
    assert "bad-settings" not in [s.session for s in stack.store.list_sessions()]


def test_asvp_on_an_encoder_that_cannot_be_fine_tuned_is_failed_precondition(
    stack: Stack,
) -> None:
    add_session_pool(stack.store, "onnx-pool", CLASSES, 20, 0, 8)
    with stack.store.begin_embedding("onnx-pool", EncoderInfo("minilm-l3", "onnx", 8, 128)) as w:
        w.write(np.arange(20), np.ones((20, 8), np.float32))
        w.commit()
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.CreateSession(
            pb.CreateSessionRequest(
                session="l3", pool="onnx-pool", embedding_version="v2", asvp=pb.AsvpSettings()
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'minilm-l3' (onnx), which cannot be fine-tuned" in err.value.details()
    assert "l3" not in [s.session for s in stack.store.list_sessions()]


def test_asvp_without_an_encoder_says_to_pass_one(stack: Stack) -> None:
    sessions = Sessions(stack.store, stack.proxy)
    with pytest.raises(FailedPreconditionError, match="start it with --encoder HOST:PORT"):
        sessions.create("no-encoder", POOL, asvp=_asvp())


def _asvp():  # type: ignore[no-untyped-def]
    from proxal.orchestrator_service.engine.asvp import AsvpConfig

    return AsvpConfig()


def test_a_switch_is_persisted_with_its_lineage(stack: Stack) -> None:
    from proxal.orchestrator_service.engine.loop import Engine, SessionConfig, lineage_of

    engine = Engine(stack.store, stack.proxy, background=False)
    config = SessionConfig("switched", POOL, tuple(CLASSES), "margin", 4, 0)
    engine.create(config, "v1")
    check = {"action": "refresh", "reason": "it's quoted"}  # a quote in the SQL update
    with stack.store.session_transaction("switched"):  # inline: joins the round's transaction
        engine._switch("switched", "v7", check)
    record = Store(stack.store.uri).get_session("switched")  # a fresh reader
    assert record.embedding_version == "v7" and lineage_of(record) == ["v1", "v7"]
    assert record.config["last_check"] == check and record.config["classes"] == CLASSES
    assert [s.session for s in stack.store.list_sessions()].count("switched") == 1
