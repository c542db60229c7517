"""Smoke test of bench/scale.py: its --quick run measures every case and fits the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "scale.py"

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "scale.json"
    returned = load_script(SCRIPT, "bench_scale").main(["--quick", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["results"] == returned["results"]
    return written


def test_every_size_and_replica_count_is_measured(report: dict[str, Any]) -> None:
    sizes = report["sizes"]
    cases = {(r["rows"], r["replicas"]) for r in report["results"]}
    assert cases == {(n, r) for n in sizes["rows"] for r in sizes["replicas"]}
    for row in report["results"]:
        assert row["latency_s"] > 0 and row["throughput_rps"] > 0, row
        assert row["latency_min_s"] <= row["latency_s"] <= row["latency_p90_s"]
        assert row["fit_s"] > 0 and row["score_s"] >= 0


def test_the_model_is_fitted_and_checked_on_the_larger_pool(report: dict[str, Any]) -> None:
    model = report["model"]
    assert model["fitted_at_rows"] == min(report["sizes"]["rows"])
    assert {"t0_s", "c_s_per_row", "checks", "max_abs_error_held_out"} <= set(model)
    held_out = [c for c in model["checks"] if not c["fitted_here"]]
    assert {c["rows"] for c in held_out} == {max(report["sizes"]["rows"])}
    assert all(
        c["predicted_s"]
        == pytest.approx(
            model["t0_s"] + model["c_s_per_row"] * c["rows"] / min(c["replicas"], model["cores"])
        )
        for c in model["checks"]
    )
    assert f"saturates at {report['cores']} replicas" in report["note"]
