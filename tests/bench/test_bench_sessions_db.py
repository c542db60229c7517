"""Smoke test of bench/sessions_db.py: 3 annotators x 2 rounds on SQLite and PostgreSQL
(not the Lance baseline) finish with no errors, no double lease and no lost label."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "sessions_db.py"
pytestmark = pytest.mark.bench  # as test_bench_load.py: `pytest -m bench` (~20 s)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, postgres_server: Any) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "sessions_db.json"
    small = ["--annotators", "3", "--rounds", "2", "--rows", "300"]
    backends = ["--backends", "sqlite,postgresql", "--postgres-url", postgres_server.database()]
    argv = [*small, *backends, "--out", str(out)]
    returned = load_script(SCRIPT, "bench_sessions_db").main(argv)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    return written


def test_every_round_succeeds(report: dict[str, Any]) -> None:
    assert report["failures"] == []
    assert set(report["results"]) == {"sqlite", "postgresql"}
    for result in report["results"].values():
        assert result["errors"] == 0 and result["error_codes"] == {}
        assert result["double_leased"] == 0 and result["resumed_batches"] == 0
        assert result["rounds"] == 3 * 2
        assert result["labels_acknowledged"] == result["labels_in_session"] == 3 * 2 * 5


def test_latency_throughput_and_machine_are_reported(report: dict[str, Any]) -> None:
    for result in report["results"].values():
        for rpc in ("next_batch", "submit"):
            assert 0 < result[rpc]["p50_ms"] <= result[rpc]["p99_ms"] <= result[rpc]["max_ms"]
        assert result["rounds_per_s"] > 0
    assert report["machine"]["cores"] >= 1 and report["commits"]["baseline"]
    assert report["ratios_vs_lance"] == {}  # no baseline in this run
