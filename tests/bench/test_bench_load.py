"""Smoke test of bench/load.py: its --quick run (5 clients x 5 Selects) has no errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "load.py"

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "load.json"
    returned = load_script(SCRIPT, "bench_load").main(["--quick", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    return written


def test_every_request_succeeds(report: dict[str, Any]) -> None:
    config = report["config"]
    assert report["requests"] == config["clients"] * config["requests"] == 25
    assert report["errors"] == 0 and report["error_codes"] == {}
    assert report["labels"] == {"min": 100, "max": 140}


def test_latency_and_throughput_are_reported(report: dict[str, Any]) -> None:
    latency = report["latency_s"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["throughput_rps"] > 0 and report["wall_s"] > 0
    assert report["server_s"]["fit_p50"] > 0
