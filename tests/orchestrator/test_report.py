"""analysis.report's `write_report`/`write_comparison` and `proxal report`/`proxal compare`
on synthetic run directories (no services)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from proxal.orchestrator_service.analysis.evaluation import compare_runs, evaluate_run
from proxal.orchestrator_service.analysis.report import (
    compare_table,
    curve_table,
    key_table,
    markdown_to_html,
    summarise,
    write_comparison,
    write_report,
)
from proxal.orchestrator_service.analysis.runs import Run, load_run, write_run
from proxal.orchestrator_service.cli.main import main
from proxal.runtime.errors import InvalidArgumentError

from tests.orchestrator.synthetic_runs import MARGIN, RANDOM, make_run, successor_rows

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(
        make_run(successors=successor_rows()), tmp_path_factory.mktemp("runs") / "run-a"
    )


@pytest.fixture(scope="module")
def md_report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_report(load_run(run_dir), tmp_path_factory.mktemp("md"), fmt="md")


def test_markdown_report_files_and_images(md_report: list[Path]) -> None:
    doc, data, *pngs = md_report
    assert doc.name == "report.md" and data.name == "report.json"
    assert {p.name for p in pngs} == {
        "learning_curves.png",
        "delta_auc_ssr.png",
        "timing.png",
        "successors.png",
    }
    for p in pngs:
        assert p.read_bytes().startswith(PNG)
    text = doc.read_text()
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(referenced) == {p.name for p in pngs}
    for name in referenced:
        assert (doc.parent / name).is_file()  # relative, next to the report


def test_markdown_report_sections_and_numbers(md_report: list[Path]) -> None:
    text = md_report[0].read_text()
    for heading in (
        "## Run summary",
        "## Learning curves",
        "### Test accuracy (mean ± std over seeds)",
        "### Test macro-F1 (mean ± std over seeds)",
        "## AUC, ΔAUC vs random and sample saving ratio",
        "## Time per round",
        "## Successors",
    ):
        assert heading in text
    assert "| 100 | 0.5000 ± 0.0100 | 0.6000 ± 0.0100 |" in text  # accuracy curve row
    assert "| margin | 300 | 0.8500 ± 0.0100 | 0.7500 ± 0.0100 | 0.7625 |" in text
    assert "+0.0875" in text and "≥ 1.00" in text  # ΔAUC, SSR lower bound
    assert "| 200 | 1.50 |" in text  # SSR at every budget
    assert "One-off pool embedding: 12.50 s" in text
    assert "| PLASM kept | PLASM pseudo_label_accuracy |" in text
    assert "| 50 | 0.8500 |" in text  # PLASM means over seeds
    # Every table is GitHub-flavoured: after a blank line, a header, a rule, and rows that
    # all have the header's number of (unescaped) pipes.
    lines = text.splitlines()
    tables = 0
    for i, line in enumerate(lines):
        if line.startswith("|") and not lines[i - 1].startswith("|"):
            tables += 1
            assert lines[i - 1] == ""
            assert re.fullmatch(r"\|(-{3,}:?\|)+", lines[i + 1])
            end = next((j for j, x in enumerate(lines[i:]) if not x.startswith("|")), None)
            block = lines[i : i + end] if end is not None else lines[i:]
            pipes = {len(re.findall(r"(?<!\\)\|", x)) for x in block}
            assert len(pipes) == 1, block
    assert tables == 8  # summary, 2 curves, key numbers, SSR, 2 timings, successors


def test_report_json_equals_evaluate_run(run_dir: Path, md_report: list[Path]) -> None:
    data = json.loads(md_report[1].read_text())
    expected = evaluate_run(load_run(run_dir))
    assert data == json.loads(json.dumps(expected, allow_nan=False))
    assert data["strategies"]["margin"]["delta_auc"]["accuracy"] == pytest.approx(0.0875)


def test_html_report_is_self_contained(run_dir: Path, tmp_path: Path) -> None:
    paths = write_report(
        load_run(run_dir),
        tmp_path,
        fmt="html",
        extra_sections=[
            ("ASM", "Adaptive successor **models**.\n\n| a | b |\n|---|---:|\n| x | 1 |")
        ],
    )
    doc = paths[0]
    assert doc.name == "report.html"
    page = doc.read_text()
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(images) == 4
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert "<table>" in page and "<h2>Successors</h2>" in page
    assert "<h2>ASM</h2>" in page and "<strong>models</strong>" in page
    assert '<td style="text-align: right;">1</td>' in page
    assert "0.7625" in page


def test_extra_sections_in_markdown_and_no_random(tmp_path: Path) -> None:
    run = make_run({"margin": MARGIN}, name="no-random")
    doc, _, *pngs = write_report(run, tmp_path, extra_sections=[("ASM", "hello from asm")])
    text = doc.read_text()
    assert text.rstrip().endswith("## ASM\n\nhello from asm")
    assert "run the 'random' strategy" in text
    assert {p.name for p in pngs} == {"learning_curves.png", "timing.png"}
    with pytest.raises(InvalidArgumentError, match="md, html"):
        write_report(run, tmp_path, fmt="pdf")


def test_markdown_to_html_escapes_and_keeps_pipes() -> None:
    page = markdown_to_html("# T <x>\n\n| a \\| b | c |\n|---|---:|\n| 1 | 2 |\n\n- item `x`\n")
    assert "<h1>T &lt;x&gt;</h1>" in page and "<x>" not in page
    assert "<th>a | b</th>" in page
    assert "<li>item <code>x</code></li>" in page


def test_text_tables() -> None:
    run = make_run()
    table = key_table(evaluate_run(run))
    assert "margin" in table and "0.7625" in table and "≥ 1.00" in table
    assert "0.6750" in curve_table(summarise(run.rounds))


def test_comparison_files_and_table(tmp_path: Path) -> None:
    a = make_run(name="run-a")
    b = make_run({"random": RANDOM, "margin": [(100, 0.65), (200, 0.82), (300, 0.9)]}, name="run-b")
    cmp = compare_runs(a, b)
    table = compare_table(cmp)
    assert "A: run-a" in table and "B: run-b" in table
    assert re.search(r"final accuracy\s+0\.8500 ± 0\.0100\s+0\.9000 ± 0\.0100\s+\+0\.0500", table)
    doc, data = write_comparison(cmp, tmp_path, fmt="md", extra_sections=[("ASM", "later")])
    assert doc.name == "comparison.md" and json.loads(data.read_text()) == cmp
    text = doc.read_text()
    assert "| final accuracy | 0.8500 ± 0.0100 | 0.9000 ± 0.0100 | +0.0500 |" in text
    assert "## ASM" in text
    html_doc, _ = write_comparison(cmp, tmp_path, fmt="html")
    assert html_doc.name == "comparison.html" and "<table>" in html_doc.read_text()


def test_cli_report(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert main(["report", str(run_dir), "--out", str(out), "--format", "html"]) == 0
    printed = capsys.readouterr().out
    assert "margin" in printed and "0.7625" in printed
    assert f"wrote {out / 'report.html'}" in printed
    assert (out / "report.json").is_file()


def test_cli_report_default_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = write_run(make_run({"random": RANDOM}), tmp_path / "small")
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "report.md").is_file()
    assert "wrote" in capsys.readouterr().out


def test_cli_report_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    no_rounds = make_run()
    no_rounds.rounds = []
    write_run(no_rounds, tmp_path / "no-rounds")
    assert main(["report", str(tmp_path / "no-rounds")]) == 2
    assert "has no rounds" in capsys.readouterr().err


def test_cli_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(make_run(name="run-a"), tmp_path / "a")
    b = write_run(make_run(name="run-b"), tmp_path / "b")
    other: Run = make_run(name="run-c", fingerprint="elsewhere")
    c = write_run(other, tmp_path / "c")
    assert main(["compare", str(a), str(b), "--no-asm"]) == 0  # synthetic: no store for ASM
    printed = capsys.readouterr().out
    assert "A: run-a" in printed and "B: run-b" in printed and "final accuracy" in printed
    assert main(["compare", str(a), str(c)]) == 2
    assert "different pools" in capsys.readouterr().err
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(c), "--allow-different-pools", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: the runs used different pools" in printed
    assert (out / "comparison.md").is_file() and (out / "comparison.json").is_file()
