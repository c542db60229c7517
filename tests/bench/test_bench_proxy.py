"""Smoke test of bench/proxy.py: its --quick run writes every row with positive times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "proxy.py"
PROXAL_ROWS = {"floor", "lc_big", "coreset_mid", "badge_mid"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "proxy.json"
    returned = load_script(SCRIPT, "bench_proxy").main(["--quick", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["rows"] == returned["rows"]
    return written


def _rows(report: dict[str, Any], impl: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["rows"] if r["impl"] == impl}


def test_proxal_rows_have_positive_times(report: dict[str, Any]) -> None:
    rows = _rows(report, "proxal") | _rows(report, "numpy")
    assert set(rows) >= PROXAL_ROWS
    assert any(name.endswith("_77c") for name in rows)  # the former proxy_select cases
    for row in report["rows"]:
        assert row["seconds"] > 0, row
    assert rows["lc_big"]["floor_multiple"] > 0
    for name in ("coreset_mid", "badge_mid"):
        assert rows[name]["peak_over_matrix"] >= 1.0
        assert rows[name]["extra_copy_over_matrix"] == pytest.approx(2.0, abs=0.05)


def test_float16_row_picks_float32_ids_and_int8_is_studied(report: dict[str, Any]) -> None:
    rows = {r["name"]: r for r in report["rows"]}
    half = rows["lc_big_float16"]
    assert half["precision"] == "float16" and half["rescored"] >= report["sizes"]["k"]
    assert all(half["same_ids_as_float32"]) and all(half["same_scores_as_float32"])
    assert half["matrix_bytes"] * 2 == rows["floor"]["matrix_bytes"]
    assert 0.0 <= rows["lc_big_int8_study"]["overlap_with_float32"] <= 1.0
    assert report["blas"] and report["cpu"]
    assert {c["pool"] for c in report["crossover"]} == set(report["sizes"]["crossover"])
    assert all(v > 0 for v in report["exact_rows_take_s"].values())


def test_ups_rows_compare_with_full_selection(report: dict[str, Any]) -> None:
    ups = report["ups"]
    assert ups["ups_rounds"] >= 1
    assert 0.0 <= ups["mean_overlap"] <= 1.0
    assert 0.0 < ups["mean_rescored_fraction"] < 1.0
    assert ups["score_s_full"] > 0 and ups["score_s_ups"] > 0


def test_small_text_rows(report: dict[str, Any]) -> None:
    pytest.importorskip("small_text")
    rows = _rows(report, "small-text")
    assert set(rows) >= {"lc_big", "coreset_mid", "badge_mid"}
    assert report["small_text"]
    proxal = _rows(report, "proxal")
    for name in ("lc_big", "coreset_mid", "badge_mid"):
        assert rows[name]["seconds"] > 0
        assert proxal[name]["small_text_ratio"] > 0
    assert rows["lc_big"]["overlap_with_proxal"] > 0.5
    assert rows["coreset_mid"]["overlap_with_proxal"] == 1.0
