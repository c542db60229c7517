"""Smoke test of bench/adapters_acquisition.py: its --quick run compares LoRA with full."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "adapters_acquisition.py"

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("bench")
    out, doc = tmp / "adapters.json", tmp / "adapters.md"
    argv = ["--quick", "--datasets", "banking77", "--out", str(out), "--doc", str(doc)]
    returned = load_script(SCRIPT, "bench_adapters_acquisition").main(argv)
    written = json.loads(out.read_text())
    assert written["rows"] == returned["rows"]
    return written, doc.read_text()


def test_every_method_is_compared_with_full(run: tuple[dict[str, Any], str]) -> None:
    report, _ = run
    methods = {r["method"] for r in report["rows"]}
    assert {"full", "lora", "full_reseed"} <= methods
    assert set(report["methods"]) == methods
    strategies = {r["strategy"] for r in report["rows"]}
    assert strategies == {"least_confidence", "margin", "entropy"}
    for row in report["rows"]:
        assert row["wasserstein"] >= 0 and row["kl"] >= 0
        assert 0 <= row["topk_overlap"] <= 1
        assert row["train_s"] > 0 and row["train_ratio"] > 0
        assert 0 <= row["accuracy"] <= 1
        if row["method"] == "full":  # full against itself
            assert row["wasserstein"] == 0 and row["topk_overlap"] == 1
            assert row["kl"] == pytest.approx(0, abs=1e-9)


def test_summary_and_doc(run: tuple[dict[str, Any], str]) -> None:
    report, doc = run
    assert {(e["method"], e["strategy"]) for e in report["summary"]} >= {("lora", "margin")}
    assert "| dataset | budget | method | strategy | WD | KL |" in doc
    assert "| banking77 | 16 | lora | margin |" in doc
    assert "bench/adapters_acquisition.py" in doc
