"""The `proxal` encoder commands against a real encoder subprocess, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from proxal.orchestrator_service.cli.main import main
from proxal.orchestrator_service.rpc.processes import ServiceProcess

from tests.conftest import REPO


def _proxal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxal.orchestrator_service", *args],
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
        assert refused.returncode == 2  # user input: exit 2, as every refusal
        assert "FAILED_PRECONDITION" in refused.stderr and "unpin" in refused.stderr
        missing = _proxal("embed", "nope", *addr)
        assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("proxal"), result.stderr
    return lines[0]


def test_ingest_reads_every_format_and_names_a_missing_file(tmp_path: Path, banking_rows) -> None:  # type: ignore[no-untyped-def]
    rows = banking_rows[:40]
    tsv = tmp_path / "reviews.tsv"  # the user's own column names
    tsv.write_text(
        "uid\tutterance\tintent\n"
        + "".join(f"u{i}\t{r['text']}\t{r['label']}\n" for i, r in enumerate(rows))
    )
    array = tmp_path / "test.json"
    array.write_text(json.dumps([{"text": r["text"], "label": r["label"]} for r in rows[:10]]))
    lines = tmp_path / "extra.txt"
    lines.write_text("".join(r["text"] + "\n" for r in rows[:5]))
    with ServiceProcess("encoder_service", str(tmp_path / "store")) as encoder:
        addr = ["--encoder", encoder.address]
        gone = _one_line(_proxal("ingest", "mine", str(tmp_path / "missing.jsonl"), *addr))
        assert (
            gone
            == f"proxal: {tmp_path / 'missing.jsonl'} does not exist: pass the pool file to upload"
        )
        flags = ["--text-field", "utterance", "--label-field", "intent", "--id-field", "uid"]
        done = _proxal("ingest", "mine", str(tsv), *flags, *addr)
        assert done.returncode == 0, done.stderr
        assert f"mine/train: 40 rows (ids 0..39) from {tsv} (tsv)" in done.stdout
        id_map = (tmp_path / "reviews.tsv.proxal-ids.csv").read_text().splitlines()
        assert id_map[:3] == ["uid,proxal_id", "u0,0", "u1,1"] and len(id_map) == 41
        done = _proxal("ingest", "mine", str(array), "--split", "test", *addr)
        assert "mine/test: 10 rows (ids 40..49)" in done.stdout, done.stderr
        done = _proxal("ingest", "mine", str(lines), "--split", "extra", *addr)
        assert "mine/extra: 5 rows (ids 50..54)" in done.stdout, done.stderr
        assert "pool has 55 rows" in done.stdout
        unnamed = _one_line(_proxal("ingest", "other", str(tsv), *addr))
        assert (
            "the header has no 'text' field (fields: 'uid', 'utterance', 'intent'); pass "
            "--text-field NAME" in unnamed
        )


# (the command, with {tmp} for the test's directory; what its one line of stderr says)
USER_ERRORS = [
    (
        "serve --port 0 --store {tmp}/store --proxy host-a:1,,host-b:2",
        "proxal: proxy address list 'host-a:1,,host-b:2' has an empty entry",
    ),
    (
        "serve --port 0 --store {tmp}/proxal-stor --proxy 127.0.0.1:9",
        "proxal: no store at '{tmp}/proxal-stor' (--store, env PROXAL_STORE)",
    ),
    ("finetune s --orchestrator host:x", "proxal: server address 'host:x' is not host:port"),
    (
        "finetune s --orchestrator 127.0.0.1:1 --epochs x",
        "proxal finetune: argument --epochs: invalid int value: 'x'",
    ),
    (
        "serve --port 0 --store {tmp}/store --proxy 127.0.0.1:9 --encoder 127.0.0.1:8 "
        "--checkpoint-root {tmp}/nowhere",
        "proxal: --checkpoint-root '{tmp}/nowhere' is not a directory: pass the encoder "
        "service's --checkpoint-root",
    ),
    (
        "serve --port 0 --store {tmp}/store --proxy 127.0.0.1:9 --encoder host:x",
        "proxal: server address 'host:x' is not host:port",
    ),
    (
        "finetune s --orchestrator 127.0.0.1:1 --method x",
        "proxal finetune: argument --method: invalid choice: 'x'",
    ),
    ("ingest p {tmp}/x.dat --encoder 127.0.0.1:1", "from its suffix '.dat': pass --format"),
    (
        "ingest p {tmp}/notes.txt --encoder 127.0.0.1:1",
        "proxal: UNAVAILABLE: cannot reach 127.0.0.1:1 (--encoder); is it running there?",
    ),
    (
        "embed p --encoder 127.0.0.1:1",  # no empty progress bar before the line
        "proxal: UNAVAILABLE: cannot reach 127.0.0.1:1 (--encoder); is it running there?",
    ),
    ("embed p --encoder host:x", "proxal: server address 'host:x' is not host:port"),
    (
        "versions p --encoder 127.0.0.1:1 --cleanup x",
        "proxal versions: argument --cleanup: invalid int value: 'x' (see proxal versions --help)",
    ),
    (
        "labels import s {tmp}/old.csv --orchestrator 127.0.0.1:1",
        "proxal: {tmp}/old.csv: No such file or directory",
    ),
]


@pytest.mark.parametrize(("command", "message"), USER_ERRORS)
def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, command: str, message: str) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "notes.txt").write_text("a text\n")
    line = _one_line(_proxal(*command.format(tmp=tmp_path).split()))
    assert message.format(tmp=tmp_path) in line
    assert not (tmp_path / "proxal-stor").exists()  # no store created behind the user's back


def test_help_and_grpc_commands_load_neither_lance_nor_torch() -> None:
    """Start-up stays fast (bench/cli.py times it): check what the commands import."""
    code = """
import sys
from proxal.orchestrator_service.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = ("lance", "torch", "sklearn", "grpc", "numpy", "pyarrow", "starlette", "uvicorn")
print(sorted(m for m in heavy if m in sys.modules))
import proxal.orchestrator_service.cli.label_tui  # what label/session/labels run
import proxal.orchestrator_service.rpc.session_client
print(sorted(m for m in ("lance", "torch", "sklearn", "transformers") if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["[]", "[]"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--asvp-every", "1", "--asvp-threshold", "-0.5"], "asvp threshold must be"),
        (["--asvp-growth", "0.5"], "growth_factor must be 0 (off) or > 1"),
        (["--rounds", "200", "--batch-size", "100"], "exceeds the 10003 training rows"),
    ],
)
def test_demo_refuses_bad_asvp_and_budget_flags_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing started, nothing written
