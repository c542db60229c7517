"""Rendering evaluations: text tables, JSON, PNG plots, and the Markdown/HTML reports of
`proxal report` and `proxal compare`.

The numbers come from `analysis.evaluation` (`evaluate_run`, `compare_runs`); this module
only formats them. `write_report` and `write_comparison` take `extra_sections` — (title,
Markdown body) pairs appended to the document — so other modules can add sections (e.g. ASM)
without changing this one.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from proxal.orchestrator_service.analysis.evaluation import (
    DEFINITIONS,
    TIMING_FIELDS,
    area_under_curve,
    compare_runs,
    evaluate_run,
    summarise,
)
from proxal.orchestrator_service.analysis.runs import Run
from proxal.orchestrator_service.analysis.stopping import (
    StopPoint,
    plot_stopping,
    stop_points,
    stopping_markdown,
)
from proxal.runtime.errors import InvalidArgumentError

if TYPE_CHECKING:  # asvp imports torch; rendering a report should not
    from proxal.orchestrator_service.engine.asvp import AlignmentDecision

__all__ = [
    "FORMATS",
    "alignment_table",
    "area_under_curve",
    "compare_runs",
    "compare_table",
    "curve_table",
    "evaluate_run",
    "key_table",
    "markdown_to_html",
    "plot_curves",
    "summarise",
    "write_comparison",
    "write_json",
    "write_report",
]

FORMATS = ("md", "html")


def curve_table(summary: dict[str, list[dict[str, float]]]) -> str:
    """A fixed-width table: one row per label count, one column per strategy (acc ± std)."""
    strategies = list(summary)
    labels = sorted({r["labels"] for rows in summary.values() for r in rows})
    cell = {(s, r["labels"]): r for s in strategies for r in summary[s]}
    width = max(16, *(len(s) + 2 for s in strategies))
    lines = [
        "test accuracy (mean ± std over seeds)",
        "labels".rjust(7) + "".join(s.rjust(width) for s in strategies),
    ]
    for n in labels:
        parts = []
        for s in strategies:
            r = cell.get((s, n))
            parts.append(
                (f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}" if r else "-").rjust(width)
            )
        lines.append(str(int(n)).rjust(7) + "".join(parts))
    lines.append(
        "AUC".rjust(7)
        + "".join(f"{area_under_curve(summary[s]):.4f}".rjust(width) for s in strategies)
    )
    return "\n".join(lines)


def alignment_table(decisions: dict[tuple[str, int], list[AlignmentDecision]]) -> str:
    """One line per ASVP check: scores, gap vs threshold, action, B1/B2 and seconds spent."""
    lines = [
        "ASVP checks (LogME{} of current vs fine-tuned features on the labeled set)".format(
            "-PED" if any(d.use_ped for ds in decisions.values() for d in ds) else ""
        ),
        f"{'session':>20} {'round':>5} {'labels':>6} {'current':>8} {'tuned':>8} {'gap':>7} "
        f"{'thresh':>6} {'action':>7} {'B1':>4} {'B2':>4} {'succ.':>6} {'ft s':>6} {'ref s':>6}",
    ]
    for (strategy, seed), rows in decisions.items():
        for d in rows:
            lines.append(
                f"{f'{strategy}/s{seed}':>20} {d.round:>5} {d.labels:>6} "
                f"{d.logme_current:>8.4f} {d.logme_finetuned:>8.4f} {d.gap:>7.4f} "
                f"{d.threshold:>6.3f} {d.action:>7} {d.b1_proxy_right_finetuned_wrong:>4} "
                f"{d.b2_finetuned_right_proxy_wrong:>4} {d.successor_method:>6} "
                f"{d.finetune_s:>6.1f} {d.refresh_s:>6.1f}"
            )
    return "\n".join(lines)


def plot_curves(summary: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    """Accuracy and macro-F1 learning curves with ±1 std bands, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric, label in (
        (axes[0], "accuracy", "test accuracy"),
        (axes[1], "macro_f1", "test macro-F1"),
    ):
        for strategy, rows in summary.items():
            x = np.array([r["labels"] for r in rows])
            m = np.array([r[f"{metric}_mean"] for r in rows])
            s = np.array([r[f"{metric}_std"] for r in rows])
            ax.plot(x, m, marker="o", markersize=3, label=strategy)
            ax.fill_between(x, m - s, m + s, alpha=0.15)
        ax.set_xlabel("labeled examples")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(report: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------
# Formatting helpers


def _num(value: Any, digits: int = 4) -> str:
    """A number as text; None/NaN → "–"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def _pm(mean: Any, std: Any, digits: int = 4) -> str:
    if mean is None:
        return "–"
    return f"{_num(mean, digits)} ± {_num(std, digits)}"


def _signed(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{float(value):+.{digits}f}"


def _ssr(ssr: Mapping[str, Any] | None) -> str:
    if ssr is None or ssr.get("ratio") is None:
        return "–"
    return f"{'' if ssr['reached'] else '≥ '}{ssr['ratio']:.2f}"


def _plasm_value(value: Any) -> str:
    """A PLASM record's mean: whole numbers (counts) without decimals."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return _num(value)


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: int = 1) -> str:
    """A GitHub-flavoured Markdown table; columns from index `right` on are right-aligned."""
    lines = [
        "| " + " | ".join(_md_cell(h) for h in headers) + " |",
        "|" + "|".join("---:" if i >= right else "---" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: int = 1) -> str:
    """A fixed-width text table; columns from index `right` on are right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i >= right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"report format {fmt!r}: use one of {', '.join(FORMATS)}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------
# Markdown → self-contained HTML (Python-Markdown, with the plots inlined)

_IMG_SRC = re.compile(r'(<img\b[^>]*\bsrc=")([^"]+)(")')
_HTML_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 72em;
       margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; }
th { background: #f6f8fa; }
td[align=right], th[align=right] { font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
code { background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 4px; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
"""


def _image_src(src: str, base_dir: Path | None) -> str:
    """A relative PNG next to the document becomes a `data:` URI (self-contained HTML)."""
    if base_dir is not None and "://" not in src and not src.startswith("data:"):
        path = base_dir / html.unescape(src)
        if path.is_file():
            mime = "image/png" if path.suffix.lower() == ".png" else "application/octet-stream"
            return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    return src


def markdown_to_html(markdown: str, base_dir: Path | None = None, title: str = "") -> str:
    """A self-contained HTML page from a report's Markdown (Python-Markdown with tables and
    fenced code; any HTML in the text is shown, not interpreted); relative images under
    `base_dir` are embedded as base64 `data:` URIs."""
    import markdown as md

    # Escaped first: labels and names in a run are data, never markup.
    body = md.markdown(html.escape(markdown, quote=False), extensions=["tables", "fenced_code"])
    body = _IMG_SRC.sub(lambda m: m.group(1) + _image_src(m.group(2), base_dir) + m.group(3), body)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_HTML_STYLE}</style></head>\n<body>\n"
        + body
        + "\n</body></html>\n"
    )


def _write_document(
    markdown: str,
    out: Path,
    stem: str,
    fmt: str,
    title: str,
    extra_sections: Sequence[tuple[str, str]],
) -> Path:
    for section_title, body in extra_sections:
        markdown += f"\n\n## {section_title}\n\n{body.strip()}\n"
    if fmt == "md":
        path, text = out / f"{stem}.md", markdown.rstrip() + "\n"
    else:
        path, text = out / f"{stem}.html", markdown_to_html(markdown, out, title)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _write_evaluation_json(doc: Mapping[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------
# `proxal report`


def key_table(evaluation: Mapping[str, Any]) -> str:
    """The per-strategy key numbers as fixed-width text: final accuracy/macro-F1 (mean ± std),
    AUC, ΔAUC vs random and SSR at the final budget."""
    return _text_table(*_key_rows(evaluation))


def _key_rows(evaluation: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "strategy",
        "labels",
        "final accuracy",
        "final macro-F1",
        "AUC acc.",
        "AUC F1",
        "ΔAUC acc.",
        "ΔAUC F1",
        "SSR",
    ]
    rows = []
    for strategy, m in evaluation["strategies"].items():
        final, delta = m["final"], m["delta_auc"] or {}
        rows.append(
            [
                strategy,
                _num(final["labels"]),
                _pm(final["accuracy_mean"], final["accuracy_std"]),
                _pm(final["macro_f1_mean"], final["macro_f1_std"]),
                _num(m["auc"]["accuracy"]),
                _num(m["auc"]["macro_f1"]),
                _signed(delta.get("accuracy")),
                _signed(delta.get("macro_f1")),
                _ssr(m["ssr_final"]),
            ]
        )
    return headers, rows


def _encoder_text(encoder: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in encoder.items()) or "–"


def _curve_rows(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], metric: str
) -> tuple[list[str], list[list[str]]]:
    strategies = list(curves)
    labels = sorted({r["labels"] for rows in curves.values() for r in rows})
    cell = {(s, r["labels"]): r for s in strategies for r in curves[s]}
    rows = []
    for n in labels:
        row = [str(n)]
        for s in strategies:
            r = cell.get((s, n))
            row.append(_pm(r[f"{metric}_mean"], r[f"{metric}_std"]) if r else "–")
        rows.append(row)
    return ["labels", *strategies], rows


def _report_markdown(ev: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """report.md from the evaluation `ev`; `images` maps a figure's key to its file name."""
    out: list[str] = [f"# proxal report: {ev['run']['name']}", ""]
    out += _summary_section(ev)
    out += _curves_section(ev, images)
    out += _ssr_section(ev, images)
    out += _timing_section(ev["timing"], images)
    if ev["successors"]:
        out += _successors_section(ev["successors"], images)
    return "\n".join(out)


def _image(images: Mapping[str, str], key: str, alt: str) -> list[str]:
    return [f"![{alt}]({images[key]})", ""] if key in images else []


def _summary_section(ev: Mapping[str, Any]) -> list[str]:
    meta = ev["run"]
    seeds = "; ".join(f"{s}: {', '.join(map(str, v))}" for s, v in meta["seeds"].items())
    rows = [
        ["run", meta["name"]],
        ["dataset", meta["dataset"] or "–"],
        ["pool", f"{meta['pool']} (fingerprint `{meta['pool_fingerprint'][:12]}`)"],
        ["embedding version", meta["embedding_version"]],
        ["encoder", _encoder_text(meta["encoder"])],
        ["classes", meta["classes"]],
        ["strategies", ", ".join(meta["strategies"])],
        ["seeds", seeds],
        ["sessions", meta["sessions"]],
        ["rounds (all sessions)", meta["rounds"]],
        ["one-off pool embedding", f"{_num(meta['embed_s'], 1)} s"],
    ]
    out = ["## Run summary", "", _md_table(["field", "value"], rows, right=99)]
    for note in ev["notes"]:
        out += ["", f"**Note:** {note}"]
    return out


def _curves_section(ev: Mapping[str, Any], images: Mapping[str, str]) -> list[str]:
    curves = ev["learning_curves"]
    out = ["", "## Learning curves", "", *_image(images, "curves", "learning curves")]
    for metric, name in (("accuracy", "Test accuracy"), ("macro_f1", "Test macro-F1")):
        out += [f"### {name} (mean ± std over seeds)", "", _md_table(*_curve_rows(curves, metric))]
        out.append("")
    return out


def _ssr_section(ev: Mapping[str, Any], images: Mapping[str, str]) -> list[str]:
    out = ["## AUC, ΔAUC vs random and sample saving ratio", ""]
    headers, rows = _key_rows(ev)
    headers[1], headers[-1] = "final labels", "SSR @ final"
    out += [_md_table(headers, rows), ""]
    out += [f"- **AUC**: {DEFINITIONS['auc']}"]
    out += [f"- **ΔAUC**: {DEFINITIONS['delta_auc']}"]
    out += [f"- **SSR**: {DEFINITIONS['ssr']}", ""]
    ssr_notes = [
        f"- {s}: {m['ssr_final']['note']}"
        for s, m in ev["strategies"].items()
        if m["ssr_final"] and m["ssr_final"]["note"]
    ]
    if ssr_notes:
        out += ["SSR at the final budget, edge cases:", "", *ssr_notes, ""]
    out += _image(images, "delta", "ΔAUC and SSR")
    with_ssr = {s: m["ssr"] for s, m in ev["strategies"].items() if m["ssr"]}
    if with_ssr:
        labels = sorted({r["strategy_labels"] for rs in with_ssr.values() for r in rs})
        cell = {(s, r["strategy_labels"]): r for s, rs in with_ssr.items() for r in rs}
        rows = [[str(n), *(_ssr(cell.get((s, n))) for s in with_ssr)] for n in labels]
        out += ["### SSR at every budget", "", _md_table(["labels", *with_ssr], rows), ""]
    return out


def _timing_section(timing: Mapping[str, Any], images: Mapping[str, str]) -> list[str]:
    parts = [(f, f.removesuffix("_s").replace("finetune", "fine-tune")) for f in TIMING_FIELDS]
    parts = [p for p in parts if p[0] != "round_s"] + [("other_s", "other"), ("round_s", "round")]
    names = [name for _, name in parts]
    totals = [
        [s, t["rounds"], *(_num(t[f], 2) for f, _ in parts)] for s, t in timing["totals"].items()
    ]
    per_round = [
        [s, r["round"], _num(r["labels"], 0), *(_num(r[f], 3) for f, _ in parts)]
        for s, rows_ in timing["per_round"].items()
        for r in rows_
    ]
    return [
        "## Time per round",
        "",
        f"One-off pool embedding: {_num(timing['one_off_embed_s'], 2)} s (not in any round). "
        + DEFINITIONS["timing"],
        "",
        "### Per session (sum over rounds, mean over seeds), seconds",
        "",
        _md_table(["strategy", "rounds", *names], totals),
        "",
        "### Per round (mean over seeds), seconds",
        "",
        _md_table(["strategy", "round", "labels", *names], per_round),
        "",
        *_image(images, "timing", "time per round"),
    ]


SUCCESSOR_HEADERS = [
    "strategy", "labels", "model", "method", "PLASM", "seeds", "accuracy", "macro-F1", "train s",
]  # fmt: skip


def _successors_section(successors: list[dict[str, Any]], images: Mapping[str, str]) -> list[str]:
    plasm_keys = list(dict.fromkeys(k for s in successors if s["plasm"] for k in s["plasm"]))
    rows = [
        [
            s["strategy"],
            s["labels"],
            s["model"],
            s["method"],
            s.get("filter") or "yes" if s["pseudo_labels"] else "no",
            s["seeds"],
            _pm(s["accuracy_mean"], s["accuracy_std"]),
            _pm(s["macro_f1_mean"], s["macro_f1_std"]),
            _pm(s["train_s_mean"], s["train_s_std"], 1),
            *(_plasm_value((s["plasm"] or {}).get(k)) for k in plasm_keys),
        ]
        for s in successors
    ]
    headers = [*SUCCESSOR_HEADERS, *(f"PLASM {k}" for k in plasm_keys)]
    return [
        "## Successors",
        "",
        "Successor models fine-tuned on the first `labels` labels a session acquired, "
        "mean ± std over seeds; PLASM rows added pseudo-labels (their columns are means "
        "over seeds of the pseudo-labelling record).",
        "",
        _md_table(headers, rows, right=5),
        "",
        *_image(images, "successors", "successors"),
    ]


def plot_delta_auc_ssr(evaluation: Mapping[str, Any], path: Path) -> None:
    """Bars: ΔAUC vs random (accuracy and macro-F1) and SSR at the final budget (hatched
    where it is only a lower bound), per strategy other than random, as a PNG."""
    plt = _pyplot()
    strategies = [s for s, m in evaluation["strategies"].items() if m["ssr_final"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    x = np.arange(len(strategies))
    for offset, metric, name in ((-0.2, "accuracy", "accuracy"), (0.2, "macro_f1", "macro-F1")):
        values = [evaluation["strategies"][s]["delta_auc"][metric] for s in strategies]
        axes[0].bar(x + offset, [np.nan if v is None else v for v in values], 0.4, label=name)
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_title("ΔAUC vs random")
    axes[0].legend()
    ssr = [evaluation["strategies"][s]["ssr_final"] for s in strategies]
    bars = axes[1].bar(x, [np.nan if r["ratio"] is None else r["ratio"] for r in ssr], 0.6)
    for bar, r in zip(bars, ssr, strict=True):
        if not r["reached"]:
            bar.set_hatch("//")
    axes[1].axhline(1, color="black", linewidth=0.8)
    axes[1].set_title("sample saving ratio at the final budget (hatched: ≥, lower bound)")
    for ax in axes:
        ax.set_xticks(x, strategies, rotation=20)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timing(per_round: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> None:
    """Stacked bars per round (mean over seeds): embed, load, fit, score, fine-tune, other;
    one panel per strategy, as a PNG."""
    plt = _pyplot()
    strategies = list(per_round)
    cols = min(3, max(1, len(strategies)))
    nrows = math.ceil(len(strategies) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    parts = [f for f in TIMING_FIELDS if f != "round_s"] + ["other_s"]
    for ax, strategy in zip(axes.flat, strategies, strict=False):
        rows = per_round[strategy]
        x = np.array([r["round"] for r in rows])
        bottom = np.zeros(len(rows))
        for f in parts:
            values = np.array([r[f] or 0.0 for r in rows], dtype=float)
            ax.bar(x, values, bottom=bottom, label=f.removesuffix("_s"))
            bottom += values
        ax.set_title(strategy)
        ax.set_xticks(x)
        ax.set_xlabel("round")
        ax.set_ylabel("seconds (mean over seeds)")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(strategies) :]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=len(parts), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.6 * nrows)))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_successors(successors: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Successor test accuracy (mean ± std over seeds) per group, as a PNG bar chart."""
    plt = _pyplot()
    names = [
        f"{s['strategy']}@{s['labels']}\n{s['method']}"
        + (f" +PLASM ({s.get('filter') or '?'})" if s["pseudo_labels"] else "")
        for s in successors
    ]
    mean = [np.nan if s["accuracy_mean"] is None else s["accuracy_mean"] for s in successors]
    std = [0.0 if s["accuracy_std"] is None else s["accuracy_std"] for s in successors]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names)), 4))
    ax.bar(np.arange(len(names)), mean, yerr=std, capsize=4)
    ax.set_xticks(np.arange(len(names)), names, fontsize=8)
    ax.set_ylabel("successor test accuracy")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    run: Run,
    out_dir: str | Path,
    fmt: str = "md",
    extra_sections: Sequence[tuple[str, str]] = (),
) -> list[Path]:
    """Write a run's report to `out_dir` (created): report.md or report.html (self-contained,
    images embedded), report.json (= `evaluate_run(run)`) and the PNGs. `extra_sections`:
    (title, Markdown body) pairs appended as `##` sections. → the paths written, document
    first."""
    _check_format(fmt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = evaluate_run(run)
    written = [out / "report.json"]
    _write_evaluation_json(ev, written[0])

    images: dict[str, str] = {"curves": "learning_curves.png", "timing": "timing.png"}
    summary = summarise(run.rounds)
    plot_curves(
        {s: summary[s] for s in ev["learning_curves"]},
        out / images["curves"],
        f"{run.name}: learning curves (mean ± std over seeds)",
    )
    if any(m["ssr_final"] for m in ev["strategies"].values()):
        images["delta"] = "delta_auc_ssr.png"
        plot_delta_auc_ssr(ev, out / images["delta"])
    plot_timing(ev["timing"]["per_round"], out / images["timing"])
    if ev["successors"]:
        images["successors"] = "successors.png"
        plot_successors(ev["successors"], out / images["successors"])
    stops = stop_points(run.rounds)
    if stops:
        images["stopping"] = "stopping.png"
        plot_stopping(run.rounds, stops, out / images["stopping"])
        section = (STOPPING_TITLE, _stopping_body(stops, images["stopping"]))
        extra_sections = [section, *extra_sections]
    written += [out / name for name in images.values()]

    document = _write_document(
        _report_markdown(ev, images),
        out,
        "report",
        fmt,
        f"proxal report: {run.name}",
        extra_sections,
    )
    return [document, *written]


STOPPING_TITLE = "When would each stopping rule have stopped?"


def _stopping_body(points: Sequence[StopPoint], image: str) -> str:
    """The stopping section: the plot and, per session and rule, the first round that says
    stop, its test accuracy and what it left on the table against the session's best."""
    return "\n\n".join(
        [
            f"![stopping rules]({image})",
            "Each rule as in `proxal status` (docs/sessions.md); accuracy is the test accuracy "
            "of the round's proxy. Rules a session did not compute are left out (the "
            "accuracy-change rule cross-validates each round, so a simulation runs it for the "
            "first seed of `stopping_cv` strategies only).",
            stopping_markdown(points),
        ]
    )


# ---------------------------------------------------------------------------------------
# `proxal compare`

_COMPARE_ROWS = (
    ("final labels", "final_labels", None),
    ("final accuracy", "final_accuracy_mean", "final_accuracy_std"),
    ("final macro-F1", "final_macro_f1_mean", "final_macro_f1_std"),
    ("AUC accuracy", "auc_accuracy", None),
    ("AUC macro-F1", "auc_macro_f1", None),
    ("ΔAUC accuracy", "delta_auc_accuracy", None),
    ("ΔAUC macro-F1", "delta_auc_macro_f1", None),
    ("SSR @ final", "ssr_final", None),
    ("loop seconds", "loop_s", None),
)


def _compare_cell(side: Mapping[str, Any] | None, key: str, std: str | None) -> str:
    if side is None:
        return "(not run)"
    if key == "ssr_final":
        return _ssr({"ratio": side[key], "reached": side["ssr_final_reached"]})
    if key in ("final_labels", "loop_s"):
        return _num(side[key], 1) if isinstance(side[key], float) else _num(side[key])
    if std is not None:
        return _pm(side[key], side[std])
    return _signed(side[key]) if key.startswith("delta") else _num(side[key])


def _compare_rows(comparison: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for strategy, entry in comparison["per_strategy"].items():
        for n, (name, key, std) in enumerate(_COMPARE_ROWS):
            diff = entry["diff"]
            digits = 1 if key == "loop_s" else 0 if key == "final_labels" else 4
            rows.append(
                [
                    strategy if n == 0 else "",
                    name,
                    _compare_cell(entry["a"], key, std),
                    _compare_cell(entry["b"], key, std),
                    "–" if diff is None else _signed(diff[key], digits),
                ]
            )
    return rows


def _run_line(meta: Mapping[str, Any]) -> str:
    seeds = max((len(v) for v in meta["seeds"].values()), default=0)
    return (
        f"{meta['name']} (pool {meta['pool']}, embedding {meta['embedding_version']}, "
        f"{meta['classes']} classes, {seeds} seed(s), {meta['sessions']} sessions)"
    )


def compare_table(comparison: Mapping[str, Any]) -> str:
    """`compare_runs`'s numbers side by side as fixed-width text: one block of rows per
    strategy, columns A, B and B − A."""
    lines = [f"A: {_run_line(comparison['a'])}", f"B: {_run_line(comparison['b'])}"]
    lines += [f"note: {n}" for n in comparison["notes"]]
    lines += [
        "",
        _text_table(["strategy", "metric", "A", "B", "B − A"], _compare_rows(comparison), 2),
    ]
    return "\n".join(lines)


def _comparison_markdown(comparison: Mapping[str, Any]) -> str:
    a, b = comparison["a"], comparison["b"]
    out = [f"# proxal compare: {a['name']} vs {b['name']}", ""]
    out.append(
        _md_table(
            ["", "A", "B"],
            [
                ["run", a["name"], b["name"]],
                ["dataset", a["dataset"] or "–", b["dataset"] or "–"],
                ["pool", a["pool"], b["pool"]],
                [
                    "pool fingerprint",
                    f"`{a['pool_fingerprint'][:12]}`",
                    f"`{b['pool_fingerprint'][:12]}`",
                ],
                ["embedding version", a["embedding_version"], b["embedding_version"]],
                ["encoder", _encoder_text(a["encoder"]), _encoder_text(b["encoder"])],
                ["classes", a["classes"], b["classes"]],
                ["strategies", ", ".join(a["strategies"]), ", ".join(b["strategies"])],
                ["sessions", a["sessions"], b["sessions"]],
                ["one-off embedding s", _num(a["embed_s"], 1), _num(b["embed_s"], 1)],
            ],
            right=99,
        )
    )
    for note in comparison["notes"]:
        out += ["", f"**Note:** {note}"]
    out += ["", "## Per strategy (B − A where both ran it)", ""]
    out.append(_md_table(["strategy", "metric", "A", "B", "B − A"], _compare_rows(comparison), 2))
    out += [
        "",
        f"- **AUC**: {DEFINITIONS['auc']}",
        f"- **ΔAUC**: {DEFINITIONS['delta_auc']}",
        f"- **SSR**: {DEFINITIONS['ssr']}",
        "- **loop seconds**: a session's active-learning loop (sum of its rounds), mean over "
        "seeds; the one-off pool embedding is not included.",
        "",
    ]
    return "\n".join(out)


def write_comparison(
    comparison: Mapping[str, Any],
    out: str | Path,
    fmt: str = "md",
    extra_sections: Sequence[tuple[str, str]] = (),
) -> list[Path]:
    """Write `compare_runs`'s result to directory `out` (created): comparison.md or
    comparison.html, and comparison.json. `extra_sections`: (title, Markdown body) pairs
    appended as `##` sections. → the paths written, document first."""
    _check_format(fmt)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "comparison.json"
    _write_evaluation_json(comparison, data)
    document = _write_document(
        _comparison_markdown(comparison),
        directory,
        "comparison",
        fmt,
        f"proxal compare: {comparison['a']['name']} vs {comparison['b']['name']}",
        extra_sections,
    )
    return [document, data]
