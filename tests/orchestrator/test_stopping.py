"""Stopping signals: each rule on synthetic data (thresholds, NaN and a note before it can be
computed, kappa rising to 1 as models stabilise), Status over gRPC with a real proxy process
(three signals, the same from a second orchestrator on the store), and the simulator
recording them per round with the report's plot."""

from __future__ import annotations

import itertools
import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.analysis.report import STOPPING_TITLE, write_report
from proxal.orchestrator_service.analysis.runs import load_run, write_run
from proxal.orchestrator_service.analysis.stopping import stop_points, stopping_summary
from proxal.orchestrator_service.cli.main import main
from proxal.orchestrator_service.engine import stopping
from proxal.orchestrator_service.engine.selectors import TrainingSet
from proxal.orchestrator_service.engine.simulation import LoopConfig, PoolData, run_simulation
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.orchestrator_service.sessions.stopping import checkpoints
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import SessionRecord, Store
from sklearn.linear_model import LogisticRegression

from tests.conftest import add_session_pool

CLASSES = ["alpha", "beta", "gamma"]
POOL = "blobs"


# ------------------------------------------------------------------ rules on synthetic data


def _flipped(base: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """`base` with `fraction` of its entries moved to the next class (of 3)."""
    rng = np.random.default_rng(seed)
    out = base.copy()
    flip = rng.random(len(base)) < fraction
    out[flip] = (out[flip] + 1) % 3
    return out


def test_stop_set_is_a_seeded_sample_of_the_split() -> None:
    split = np.arange(10_000, 15_000, dtype=np.int64)
    a, b = stopping.stop_set(split, 7), stopping.stop_set(split[::-1].copy(), 7)
    assert len(a) == stopping.STOP_SET_SIZE and np.array_equal(a, b)
    assert np.isin(a, split).all() and len(np.unique(a)) == len(a)
    assert not np.array_equal(a, stopping.stop_set(split, 8))
    assert np.array_equal(stopping.stop_set(split[:50], 7), split[:50])


def test_kappa_rises_to_one_as_models_stabilise() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(3, 8))
    y = rng.integers(0, 3, size=3000)
    x = centres[y] + rng.normal(size=(3000, 8))
    stop_x = x[:1000]
    predictions = []
    for n in (6, 12, 25, 50, 100, 400, 800, 820, 840, 860):
        model = LogisticRegression(max_iter=500).fit(x[1000 : 1000 + n], y[1000 : 1000 + n])
        predictions.append(model.predict(stop_x).astype(np.int32))
    kappas = [stopping.kappa(a, b) for a, b in itertools.pairwise(predictions)]
    assert np.mean(kappas[:3]) < np.mean(kappas[-3:])
    assert min(kappas[-3:]) > 0.97
    early = stopping.stabilizing_predictions(predictions[:4])
    late = stopping.stabilizing_predictions(predictions)
    assert early.value < late.value and not early.stop
    assert late.value == pytest.approx(np.mean(kappas[-3:]))


def test_stabilizing_predictions_threshold_and_window() -> None:
    base = np.random.default_rng(1).integers(0, 3, size=2000).astype(np.int32)
    settled = [base, base, base, base]
    signal = stopping.stabilizing_predictions(settled)
    assert signal.value == 1.0 and signal.stop
    assert signal.threshold == stopping.KAPPA_THRESHOLD
    # one comparison far below the threshold pulls the window's mean under it
    shaky = [_flipped(base, 0.2, 2), base, base, base]
    signal = stopping.stabilizing_predictions(shaky)
    assert signal.value < stopping.KAPPA_THRESHOLD and not signal.stop
    # only the last KAPPA_WINDOW comparisons count
    assert stopping.stabilizing_predictions([_flipped(base, 0.5, 3), *settled]).stop


def test_accuracy_change_threshold_and_lookback() -> None:
    flat = stopping.accuracy_change([0.80, 0.86, 0.805])
    assert flat.value == pytest.approx(0.005) and flat.stop
    moving = stopping.accuracy_change([0.70, 0.80, 0.805, 0.815])
    assert moving.value == pytest.approx(0.015) and not moving.stop
    assert moving.threshold == stopping.ACCURACY_CHANGE_THRESHOLD


def test_uncertain_fraction_threshold() -> None:
    few = np.full(100, 0.5, np.float32)
    few[:4] = 0.05
    signal = stopping.uncertain_fraction(few)
    assert signal.value == pytest.approx(0.04) and signal.stop
    many = np.full(100, 0.5, np.float32)
    many[:6] = 0.09
    signal = stopping.uncertain_fraction(many)
    assert signal.value == pytest.approx(0.06) and not signal.stop
    assert "6 of 100" in signal.note
    scores = np.array([-0.05, -0.5], np.float32)  # the margin strategy's -(p1 - p2)
    assert stopping.margins_from_scores(scores).tolist() == pytest.approx([0.05, 0.5])


def test_nan_and_a_note_before_each_rule_can_be_computed() -> None:
    history = stopping.StopHistory()
    signals = history.signals()
    assert [s.name for s in signals] == list(stopping.NAMES)
    assert all(math.isnan(s.value) and not s.stop and s.note and s.rule for s in signals)
    base = np.zeros(10, np.int32)
    history.add(None, math.nan, None)  # no proxy could be fitted yet
    for _ in range(3):
        history.add(base, 0.5, np.ones(5, np.float32))
    kappa_signal, accuracy, uncertain = history.signals()
    assert math.isnan(kappa_signal.value) and "needs 4" in kappa_signal.note
    assert "has 3" in kappa_signal.note  # the unfitted checkpoint breaks the run
    assert accuracy.value == 0.0 and accuracy.stop
    assert uncertain.value == 0.0 and uncertain.stop
    unknown = stopping.accuracy_change([math.nan, 0.5, 0.6])
    assert math.isnan(unknown.value) and "two classes" in unknown.note


def test_cross_validated_accuracy_leaves_out_single_label_classes() -> None:
    training = TrainingSet(
        np.arange(11, dtype=np.int64), np.array([0] * 5 + [1] * 5 + [2], np.int32), 3
    )
    asked: list[np.ndarray] = []

    def predict(fold: TrainingSet, ids: np.ndarray) -> np.ndarray:
        asked.append(ids)
        assert 10 not in fold.ids.tolist()
        return np.where(ids < 5, 0, 1).astype(np.int32)

    assert stopping.cross_validated_accuracy(training, 0, predict) == 1.0
    assert len(asked) == stopping.CV_FOLDS
    assert sorted(np.concatenate(asked).tolist()) == list(range(10))
    # k stays CV_FOLDS while a small class has 2 labels (no jump when it fills up)
    asked.clear()
    uneven = TrainingSet(np.arange(10, dtype=np.int64), np.array([0] * 8 + [1] * 2, np.int32), 2)
    assert stopping.cross_validated_accuracy(uneven, 0, predict) == pytest.approx(0.7)
    assert len(asked) == stopping.CV_FOLDS
    one = TrainingSet(np.arange(3, dtype=np.int64), np.array([0, 0, 1], np.int32), 2)
    assert math.isnan(stopping.cross_validated_accuracy(one, 0, predict))


def test_checkpoints_are_the_rounds_label_counts_then_now() -> None:
    assert checkpoints([0, 8, 8, 16, 24, 32], 40) == [16, 24, 32, 40]
    assert checkpoints([0, 8, 16], 16) == [8, 16]
    assert checkpoints([0, 8], 5) == [5]  # an undo took labels away
    assert checkpoints([], 0) == []


# ------------------------------------------------------------------ live Status and simulator


@dataclass
class Stack:
    stub: pb_grpc.OrchestratorServiceStub
    store: Store
    proxy: ProxyClient
    address: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stopping")
    store = Store(str(root / "store"))
    add_session_pool(store, POOL, CLASSES, 240, 60, 16, seed=5)
    with ServiceProcess("proxy_service", store.uri, log_path=root / "proxy.log") as process:
        proxy = ProxyClient(process.address)
        sessions = Sessions(store, proxy)
        servicer = OrchestratorServicer(sessions)
        running = start_server(
            ServerSettings(port=0),
            lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
            ["proxal.orchestrator.v1.OrchestratorService"],
        )
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.OrchestratorServiceStub(channel)
            yield Stack(stub, store, proxy, running.address)
        running.stop(0)
        sessions.close()


def _gold(store: Store) -> dict[int, str]:
    rows = store.pool_rows(POOL, split="train", columns=["id", "label"])
    return dict(zip(rows.column("id").to_pylist(), rows.column("label").to_pylist(), strict=True))


def test_status_over_grpc_returns_the_three_signals(stack: Stack) -> None:
    stack.stub.CreateSession(
        pb.CreateSessionRequest(session="stop", pool=POOL, strategy="margin", batch_size=10)
    )
    first = stack.stub.Status(pb.StatusRequest(session="stop")).stopping
    assert [s.name for s in first] == list(stopping.NAMES)
    assert all(math.isnan(s.value) and not s.stop and s.note and s.rule for s in first)
    gold = _gold(stack.store)
    for _ in range(5):
        batch = stack.stub.NextBatch(pb.NextBatchRequest(session="stop", annotator="ann"))
        stack.stub.SubmitLabels(
            pb.SubmitLabelsRequest(
                session="stop",
                labels=[pb.Label(id=x.id, label=gold[x.id]) for x in batch.items],
                request_id=uuid.uuid4().hex,
                annotator="ann",
            )
        )
    status = stack.stub.Status(pb.StatusRequest(session="stop"))
    signals = {s.name: s for s in status.stopping}
    assert -1.0 <= signals["stabilizing_predictions"].value <= 1.0
    assert signals["stabilizing_predictions"].threshold == stopping.KAPPA_THRESHOLD
    assert 0.0 <= signals["accuracy_change"].value <= 1.0
    assert 0.0 <= signals["uncertain_fraction"].value <= 1.0
    for s in signals.values():
        assert s.stop == (
            s.value >= s.threshold if s.name == "stabilizing_predictions" else s.value < s.threshold
        )
    # a second orchestrator on the same store (or this one restarted) says the same
    other = Sessions(stack.store, stack.proxy)
    again = other.status("stop").stopping
    other.close()
    assert [s.value for s in again] == pytest.approx([s.value for s in status.stopping])
    # a labelling client polling after every batch can leave them out
    quick = stack.stub.Status(pb.StatusRequest(session="stop", skip_stopping=True))
    assert not quick.stopping and quick.labels == status.labels == 50


def test_status_answers_when_the_proxy_cannot_fit(stack: Stack) -> None:
    # a record pinned to an embedding version the proxy cannot find (e.g. deleted since)
    stack.store.create_session(
        SessionRecord("pinned", POOL, "v9", "margin", 10, 0, config={"classes": CLASSES})
    )
    stack.store.append_labels("pinned", POOL, [0, 1, 2], ["alpha", "beta", "gamma"])
    signals = stack.stub.Status(pb.StatusRequest(session="pinned")).stopping
    assert [s.name for s in signals] == list(stopping.NAMES)
    assert all(math.isnan(s.value) and not s.stop and "v9" in s.note for s in signals)


def test_session_status_prints_the_signals(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.stub.CreateSession(pb.CreateSessionRequest(session="cli-stop", pool=POOL))
    assert main(["session", "status", "cli-stop", "--orchestrator", stack.address]) == 0
    text = capsys.readouterr().out
    assert "stabilizing_predictions: not yet (needs 4 rounds" in text
    assert "uncertain_fraction: not yet (needs a fitted proxy" in text
    args = ["session", "status", "cli-stop", "--json", "--orchestrator", stack.address]
    assert main(args) == 0
    shown = json.loads(capsys.readouterr().out)["stopping"]
    assert [x["name"] for x in shown] == list(stopping.NAMES)
    assert all(x["value"] is None and x["rule"] and x["threshold"] > 0 for x in shown)


def test_the_simulator_records_the_signals_and_the_report_plots_them(
    stack: Stack, tmp_path: Path
) -> None:
    config = LoopConfig(
        strategies=("margin", "random"), seeds=(0,), initial_size=20, batch_size=20, rounds=6
    )
    data = PoolData.from_store(stack.store, POOL, "v1")
    result = run_simulation(stack.store, stack.proxy, data, config, "sim-stop")
    for point in result.points:
        assert set(point.stopping) == set(stopping.NAMES)
        kappa_value = point.stopping["stabilizing_predictions"]["value"]
        assert (kappa_value is None) == (point.round < stopping.KAPPA_WINDOW)
        cv = point.stopping["accuracy_change"]["value"]
        assert (cv is None) == (point.strategy == "random" or point.round < 2)
    rounds = stack.store.read_rounds("sim-stop-margin-s0")
    assert "stabilizing_predictions" in rounds[-1].metrics
    run = result.to_run(stack.store, data, "sim-stop")
    loaded = load_run(write_run(run, tmp_path / "run"))
    assert loaded.rounds[-1].stopping == result.points[-1].stopping
    points = stop_points(loaded.rounds)
    assert {(p.strategy, p.rule) for p in points} == {
        *(("margin", r) for r in stopping.NAMES),
        ("random", "stabilizing_predictions"),
        ("random", "uncertain_fraction"),
    }
    for p in points:
        assert p.stopped == (p.labels >= 0)
        if p.stopped:
            assert 0.0 <= p.left_on_table <= 1.0 and p.labels_saved >= 0
    assert len(stopping_summary(points)) == len(points)
    written = write_report(loaded, tmp_path / "report")
    assert (tmp_path / "report" / "stopping.png").stat().st_size > 1000
    text = written[0].read_text()
    assert STOPPING_TITLE in text and "| margin | 0 | stabilizing_predictions |" in text


def test_a_cold_start_records_the_unfitted_rounds(stack: Stack) -> None:
    config = LoopConfig(strategies=("margin",), seeds=(1,), initial_size=0, batch_size=20, rounds=5)
    data = PoolData.from_store(stack.store, POOL, "v1")
    result = run_simulation(stack.store, stack.proxy, data, config, "sim-cold")
    first, last = result.points[0], result.points[-1]
    assert first.labels == 0 and all(v["value"] is None for v in first.stopping.values())
    assert last.stopping["uncertain_fraction"]["value"] is not None
    # the unfitted round 0 is not compared: kappa needs four fitted rounds after it
    assert (last.stopping["stabilizing_predictions"]["value"] is None) == (last.round < 4)
