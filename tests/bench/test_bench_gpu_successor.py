"""bench/gpu_successor.py on a tiny job: the table and JSON it writes, cuda skipped (and
said so) where torch sees no GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_successor.py"


def test_gpu_successor_bench_runs_a_job_per_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu.json"
    bench = load_script(SCRIPT, "bench_gpu_successor")
    args = ["--classes", "3", "--per-class", "4", "--epochs", "1", "--max-length", "16"]
    assert bench.main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["labels"], report["classes"]) == (12, 3) and report["test_rows"] > 0
    cuda, cpu = report["results"]
    assert cpu["state"] == "succeeded" and cpu["device"] == "cpu"
    assert cpu["seconds"] >= cpu["train_seconds"] > 0 and 0 <= cpu["accuracy"] <= 1
    if torch.cuda.is_available():
        assert cuda["state"] == "succeeded" and cuda["device"].startswith("cuda")
    else:
        assert cuda["state"] == "skipped" and "no CUDA device" in cuda["error"]
    printed = capsys.readouterr().out
    assert "12 labels of 3 Banking77 intents" in printed and str(out) in printed
