"""`proxal demo` end to end on a small real slice of Banking77: real subprocess services,
real MiniLM-L6, real LanceDB. The full-size demo is `make demo` (slow test below)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from proxal.orchestrator_service.analysis.runs import load_run

from tests.conftest import REPO


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxal.orchestrator_service", "demo", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )


def test_small_demo_writes_report_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = _run(
        out,
        "--train-limit",
        "400",
        "--test-limit",
        "200",
        "--strategies",
        "random,margin",
        "--seeds",
        "0,1",
        "--rounds",
        "2",
        "--batch-size",
        "20",
        "--initial",
        "40",
        "--successor-strategies",
        "margin",
        "--successor-epochs",
        "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy (mean ± std over seeds)" in result.stdout
    report = json.loads((out / "report.json").read_text())
    curves = report["learning_curves"]
    assert set(curves) == {"random", "margin"}
    assert [r["labels"] for r in curves["margin"]] == [40, 60, 80]
    # random runs to 2x the budget, so margin's sample saving ratio is measured
    assert [r["labels"] for r in curves["random"]] == list(range(40, 161, 20))
    for rows in curves.values():
        assert all(r["seeds"] == 2 and 0.0 <= r["accuracy_mean"] <= 1.0 for r in rows)
    assert len(report["points"]) == 2 * 3 + 2 * 7
    assert report["ssr"]["margin"]["strategy_labels"] == 80
    assert "Sample saving ratio at 80 labels" in result.stdout
    [successor] = report["successors"]
    assert successor["strategy"] == "margin" and successor["labels"] == 80
    assert 0.0 <= successor["accuracy"] <= 1.0
    png = (out / "learning_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert report["embedding_version"] == "v1"
    run = load_run(out / "run")  # the run directory `proxal report` reads
    assert (run.strategies(), len(run.rounds)) == (["random", "margin"], 2 * 3 + 2 * 7)
    assert [(s.strategy, s.labels) for s in run.successors] == [("margin", 80)]
    assert run.labeled_ids("margin", 1).size == 80
    assert "## AUC, ΔAUC vs random and sample saving ratio" in (
        out / "report" / "report.md"
    ).read_text(encoding="utf-8")
    # every round records the stopping signals; the report plots where each rule stops
    assert all(len(p["stopping"]) == 3 for p in report["points"])
    assert (out / "report" / "stopping.png").read_bytes().startswith(b"\x89PNG")
    assert "where each stopping rule would have stopped" in result.stdout

    # a second run over the same directory reuses the pool and its embedding version
    again = _run(
        out,
        "--train-limit",
        "400",
        "--test-limit",
        "200",
        "--strategies",
        "random",
        "--seeds",
        "0",
        "--rounds",
        "1",
        "--batch-size",
        "20",
        "--initial",
        "40",
        "--successor-strategies",
        "",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing pool 'banking77' and embedding version v1" in again.stdout


def test_demo_rejects_a_budget_larger_than_the_pool(tmp_path: Path) -> None:
    result = _run(
        tmp_path / "demo",
        "--train-limit",
        "100",
        "--test-limit",
        "50",
        "--rounds",
        "5",
        "--batch-size",
        "50",
        "--successor-strategies",
        "",
    )
    assert result.returncode == 2
    assert result.stderr == (
        "proxal: too few rows: the label budget 350 (--initial 100 + --rounds 5 x "
        "--batch-size 50) exceeds the 100 training rows; lower --rounds, --batch-size or "
        "--initial\n"
    )


def test_sigterm_stops_the_demo_and_its_services(tmp_path: Path) -> None:
    import re
    import signal
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--train-limit",
            "200",
            "--test-limit",
            "50",
            "--initial",
            "20",
            "--batch-size",
            "10",
            "--rounds",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert demo.stdout is not None
    line = demo.stdout.readline()
    addresses = re.findall(r"127\.0\.0\.1:\d+", line)
    assert len(addresses) == 2, f"expected the services' addresses, got {line!r}"
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(timeout=60) == 143
    deadline = time.monotonic() + 20
    for address in addresses:
        while True:
            try:
                with grpc.insecure_channel(address) as channel:
                    health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
            except grpc.RpcError:
                break  # nothing answers: the service process is gone
            assert time.monotonic() < deadline, f"{address} still serving after the demo ended"
            time.sleep(0.2)


@pytest.mark.slow
def test_full_demo_margin_beats_random(tmp_path: Path) -> None:
    """The full demo (about 6 minutes on 2 cores): margin ahead of random on Banking77."""
    out = tmp_path / "demo"
    result = _run(out)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["auc"]["margin"] > report["auc"]["random"]
    assert report["final"]["margin"]["accuracy_mean"] > report["final"]["random"]["accuracy_mean"]
