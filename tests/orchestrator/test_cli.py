"""The `proxal` encoder commands against a real encoder subprocess, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.processes import ServiceProcess
from tests.conftest import REPO


def _proxal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_ingest_embed_and_manage_versions(tmp_path: Path, banking_rows) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in banking_rows[:120]))
    with ServiceProcess("encoder_service", str(tmp_path / "store")) as encoder:
        addr = ["--encoder", encoder.address]
        ingest = _proxal("ingest", "cli", str(data), *addr)
        assert ingest.returncode == 0, ingest.stderr
        assert "cli/train: 120 rows (ids 0..119)" in ingest.stdout

        for _ in range(3):
            embed = _proxal("embed", "cli", "--batch-size", "32", *addr)
            assert embed.returncode == 0, embed.stderr
        assert "embedding cli" in embed.stderr and "120/120" in embed.stderr  # the progress bar
        assert embed.stdout.startswith("v3: complete, 120 x 384, minilm-l6 torch/fp32")

        assert "pinned" in _proxal("versions", "cli", "--pin", "v1", *addr).stdout
        compare = _proxal("versions", "cli", "--compare", "v1", "v2", *addr)
        assert "120 common ids, mean cosine 1.0000" in compare.stdout, compare.stderr
        cleanup = _proxal("versions", "cli", "--cleanup", "1", *addr)
        assert cleanup.returncode == 0, cleanup.stderr
        assert "removed ['v2']" in cleanup.stdout  # v1 is pinned, v3 is the newest
        listing = _proxal("versions", "cli", *addr).stdout.splitlines()
        assert [line.split(":")[0] for line in listing] == ["v1", "v3"]

        refused = _proxal("versions", "cli", "--delete", "v1", *addr)
        assert refused.returncode == 1
        assert "FAILED_PRECONDITION" in refused.stderr and "unpin" in refused.stderr
        missing = _proxal("embed", "nope", *addr)
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--asvp-every", "1", "--asvp-threshold", "-0.5"], "asvp threshold must be"),
        (["--asvp-growth", "0.5"], "growth_factor must be 0 (off) or > 1"),
        (["--rounds", "200", "--batch-size", "100"], "exceeds the pool"),
    ],
)
def test_demo_refuses_bad_asvp_and_budget_flags_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing started, nothing written
