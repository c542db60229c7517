"""`proxal simulate` on a small generated file (real subprocess services, real MiniLM-L6,
real LanceDB), its bad-input messages, and its loop split (random further) giving the same
picks as one loop over every strategy."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from proxal.orchestrator_service.analysis.runs import load_run
from proxal.orchestrator_service.demo.simulate import (
    DataSource,
    SimulateConfig,
    loop_parts,
    random_rounds,
    read_splits,
    run_loops,
)
from proxal.orchestrator_service.engine.simulation import LoopConfig, PoolData, run_simulation
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.sessions.pool_files import Fields
from proxal.proxy.v1 import proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import Store

from tests.conftest import BANKING77, REPO, add_session_pool, read_jsonl

CLASSES = ("activate_my_card", "age_limit", "apple_pay_or_google_pay", "card_arrival")


def _rows(per_class: int = 30) -> list[dict[str, str]]:
    """`per_class` real Banking77 texts of each of 4 intents."""
    taken = dict.fromkeys(CLASSES, 0)
    rows = []
    for row in read_jsonl(BANKING77 / "train.jsonl"):
        if row["label"] in taken and taken[row["label"]] < per_class:
            taken[row["label"]] += 1
            rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows((r["text"], r["label"]) for r in rows)
    return path


def _simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxal.orchestrator_service", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_simulate_on_a_csv_file_writes_the_report_and_the_ssr(tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "tickets.csv", _rows(), ("body", "intent"))
    out = tmp_path / "out"
    result = _simulate(
        "--train", str(data), "--text-field", "body", "--label-field", "intent",
        "--test-fraction", "0.25", "--out", str(out), "--strategies", "margin,random",
        "--seeds", "0,1", "--initial", "8", "--batch-size", "8", "--budget", "24",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test split: 30 of 120 rows" in result.stdout
    report = json.loads((out / "report.json").read_text())
    curves = report["learning_curves"]
    assert [r["labels"] for r in curves["margin"]] == [8, 16, 24]
    # random runs to 2x the budget, so margin's saving ratio is measured
    assert [r["labels"] for r in curves["random"]] == [8, 16, 24, 32, 40, 48]
    assert report["dataset"]["train_rows"] == 90 and report["dataset"]["test_rows"] == 30
    ssr = report["ssr"]["margin"]
    assert ssr["strategy_labels"] == 24 and ssr["random_labels"] > 0
    assert report["closing_note"].startswith("Sample saving ratio at 24 labels")
    assert "margin " in report["closing_note"]
    assert report["closing_note"] in result.stdout
    report_md = out / "report" / "report.md"
    assert f"report: {report_md}" in result.stdout
    text = report_md.read_text(encoding="utf-8")
    assert "## Would active learning help?" in text and report["closing_note"] in text
    run = load_run(out / "run")
    assert run.strategies() == ["margin", "random"]
    assert run.labeled_ids("random", 1).size == 48
    assert run.labeled_ids("margin", 0).size == 24

    # the same inputs reuse their pool and embeddings
    again = _simulate(
        "--train", str(data), "--text-field", "body", "--label-field", "intent",
        "--test-fraction", "0.25", "--out", str(out), "--strategies", "random",
        "--seeds", "0", "--initial", "8", "--batch-size", "8", "--rounds", "1",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"reusing pool {run.pool!r} and embedding version v1" in again.stdout


def _bad(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """(arguments, what stderr must say) for one kind of bad input."""
    rows = _rows(5)
    labelled = _write_csv(tmp_path / "labelled.csv", rows, ("text", "intent"))
    unlabelled = tmp_path / "texts.jsonl"
    unlabelled.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    cases = {
        "no labels": ([str(unlabelled)], "has no gold labels in a 'label' field"),
        "label field missing": (
            [str(labelled), "--label-field", "category"],
            "has no 'category' field for --label-field (fields: 'text', 'intent')",
        ),
        "text field missing": (
            [str(labelled), "--text-field", "body", "--label-field", "intent"],
            "has no 'body' field (fields: 'text', 'intent'); pass the right --text-field",
        ),
        "test fraction": (
            [str(labelled), "--label-field", "intent", "--test-fraction", "1.5"],
            "--test-fraction must be between 0 and 1 (exclusive), got 1.5",
        ),
        "too few rows": (
            [str(labelled), "--label-field", "intent", "--initial", "10", "--batch-size", "10"],
            "too few rows: the label budget 110 (--initial 10 + --rounds 10 x --batch-size 10) "
            "exceeds the 16 training rows",
        ),
    }
    cases["unknown strategy"] = (
        [str(labelled), "--label-field", "intent", "--strategies", "margn,random"],
        "unknown strategy 'margn' in --strategies; valid strategies: random, least_confidence",
    )
    args, message = cases[case]
    return ["--train", *args, "--out", str(tmp_path / "out")], message


@pytest.mark.parametrize(
    "case",
    [
        "no labels",
        "label field missing",
        "text field missing",
        "test fraction",
        "too few rows",
        "unknown strategy",
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    args, message = _bad(tmp_path, case)
    result = _simulate(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("proxal: ")
    assert message in result.stderr
    assert "encoder service on" not in result.stdout  # refused before any service started
    assert not (tmp_path / "out" / "store").exists()


def test_read_splits_reads_parquet_and_a_test_file(tmp_path: Path) -> None:
    rows = _rows(6)
    table = pa.table({"t": [r["text"] for r in rows], "y": [r["label"] for r in rows]})
    pq.write_table(table.slice(0, 16), tmp_path / "train.parquet")
    pq.write_table(table.slice(16), tmp_path / "test.parquet")
    splits = read_splits(
        DataSource(
            tmp_path / "train.parquet",
            test=tmp_path / "test.parquet",
            fields=Fields(text="t", label="y"),
            train_limit=8,
        )
    )
    assert len(splits.train.texts) == 8 and len(splits.test.texts) == 8
    assert splits.train.texts == [r["text"] for r in rows[0:16:2]]  # evenly spaced
    with pytest.raises(InvalidArgumentError, match="either --test FILE or --test-fraction"):
        read_splits(DataSource(tmp_path / "train.parquet", tmp_path / "x", test_fraction=0.5))


def test_random_runs_to_twice_the_budget_within_the_pool() -> None:
    loop = LoopConfig(strategies=("margin", "random"), initial_size=100, batch_size=100, rounds=10)
    config = SimulateConfig(DataSource(Path("x")), loop=loop)
    assert random_rounds(config, 10_003) == 21  # 100 + 21 x 100 = 2,200 = 2 x 1,100
    assert random_rounds(config, 1_500) == 14  # the pool ends first
    assert (
        random_rounds(SimulateConfig(DataSource(Path("x")), loop=loop, random_factor=1), 9e9) == 10
    )
    parts = loop_parts(config, 10_003)
    assert [(p.strategies, p.rounds) for p in parts] == [(("margin",), 10), (("random",), 21)]
    no_random = SimulateConfig(DataSource(Path("x")), loop=LoopConfig(strategies=("margin",)))
    assert loop_parts(no_random, 10_003) == [no_random.loop]


@pytest.fixture(scope="module")
def proxy_and_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyClient, Store]]:
    store = Store(str(tmp_path_factory.mktemp("sim") / "store"))
    add_session_pool(store, "blobs", ["a", "b", "c", "d"], n_train=400, n_test=100, seed=3)
    servicer = ProxyServicer(VersionCache(store, 2, 8), score_threads=1)
    running = start_server(
        ServerSettings(port=0, max_workers=4),
        lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
    )
    client = ProxyClient(running.address)
    yield client, store
    client.close()
    running.stop(0)


def test_split_loops_pick_what_one_loop_picks(proxy_and_store: tuple[ProxyClient, Store]) -> None:
    """Random run further in a loop of its own changes nothing of the first `rounds`: the
    demo's curve stays what it was."""
    proxy, store = proxy_and_store
    data = PoolData.from_store(store, "blobs", "v1")
    loop = LoopConfig(
        strategies=("random", "margin"), seeds=(0, 1), initial_size=10, batch_size=10, rounds=3
    )
    one = run_simulation(store, proxy, data, loop, "one")
    split = run_loops(store, proxy, data, SimulateConfig(DataSource(Path("x")), loop=loop), "two")
    assert [s.strategy for s in split.sessions] == ["random", "margin", "random", "margin"]
    random_rows = [p for p in split.points if p.strategy == "random"]
    assert max(p.labels for p in random_rows) == 80  # 2 x the budget of 40
    within = [p for p in split.points if p.labels <= 40]
    key = lambda p: (p.strategy, p.seed, p.round)  # noqa: E731
    assert [(key(p), p.selected_ids, p.accuracy) for p in within if p.round < 3] == [
        (key(p), p.selected_ids, p.accuracy) for p in one.points if p.round < 3
    ]
    for strategy, seed in one.final_labels:
        ids, _ = one.final_labels[strategy, seed]
        assert np.array_equal(split.final_labels[strategy, seed][0][: len(ids)], ids)


def test_a_cold_start_simulation_takes_the_initial_batch_and_class_balance(
    proxy_and_store: tuple[ProxyClient, Store],
) -> None:
    proxy, store = proxy_and_store
    data = PoolData.from_store(store, "blobs", "v1")
    loop = LoopConfig(
        strategies=("margin",),
        seeds=(0,),
        initial_size=0,
        batch_size=8,
        rounds=2,
        initial_batch="kmeans",
        class_balanced=True,
    )
    result = run_simulation(store, proxy, data, loop, "cold")
    first = result.points[0]
    assert first.labels == 0 and first.accuracy == 0.0  # no label, no proxy: scores 0
    gold = dict(zip(data.train_ids.tolist(), data.train_gold.tolist(), strict=True))
    assert len({gold[i] for i in first.selected_ids}) >= 3  # k-means: 3+ of the 4 blobs
    assert result.points[1].accuracy > 0.5
    config = store.get_session(result.sessions[0].session).config
    assert config["initial_batch"] == "kmeans" and config["class_balanced"] is True
    with pytest.raises(InvalidArgumentError, match="valid initial batches"):
        run_simulation(store, proxy, data, replace(loop, initial_batch="dbscan"), "bad")
