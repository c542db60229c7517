"""analysis.evaluation: AUC, ΔAUC, sample saving ratio, timings, successors, comparisons,
on synthetic runs with hand-computed answers (no services)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
from proxal.orchestrator_service.analysis.evaluation import (
    SavingRatio,
    area_under_curve,
    compare_runs,
    delta_auc,
    evaluate_run,
    sample_saving_ratio,
    summarise,
    summarise_successors,
    timing_breakdown,
    timing_totals,
)
from proxal.orchestrator_service.analysis.runs import RoundRow, load_run, write_run
from proxal.runtime.errors import InvalidArgumentError

from tests.orchestrator.synthetic_runs import MARGIN, RANDOM, make_run, successor_rows


def rows(points: Sequence[tuple[int, float]], key: str = "accuracy_mean") -> list[dict]:
    return [{"labels": n, key: a} for n, a in points]


def test_summarise_means_and_stds_over_seeds() -> None:
    summary = summarise(make_run().rounds)
    assert list(summary) == ["random", "margin"]
    first = summary["margin"][0]
    assert first["labels"] == 100 and first["seeds"] == 2
    assert first["accuracy_mean"] == pytest.approx(0.6)
    assert first["accuracy_std"] == pytest.approx(0.01)
    assert first["macro_f1_mean"] == pytest.approx(0.5)


def test_area_under_curve_by_hand() -> None:
    # random: ((0.5+0.7)/2*100 + (0.7+0.8)/2*100) / 200 = 0.675
    assert area_under_curve(rows(RANDOM)) == pytest.approx(0.675)
    assert area_under_curve(rows(MARGIN)) == pytest.approx(0.7625)
    # Restricted to 150..300: random is 0.6 at 150 → (0.65*50 + 0.75*100) / 150.
    assert area_under_curve(rows(RANDOM), lo=150, hi=300) == pytest.approx(107.5 / 150)
    assert area_under_curve(rows([(100, 0.4)])) == pytest.approx(0.4)
    with pytest.raises(InvalidArgumentError, match="not inside"):
        area_under_curve(rows(RANDOM), lo=50)


def test_delta_auc_by_hand_and_over_the_shared_range() -> None:
    summary = {"random": rows(RANDOM), "margin": rows(MARGIN)}
    delta = delta_auc(summary)
    assert delta["random"] == 0.0
    assert delta["margin"] == pytest.approx(0.7625 - 0.675)
    # A shorter curve (150..300) is compared with random over 150..300 only.
    short = {"random": rows(RANDOM), "late": rows([(150, 0.7), (300, 0.9)])}
    assert delta_auc(short)["late"] == pytest.approx(0.8 - 107.5 / 150)
    f1 = {s: rows(p, "macro_f1_mean") for s, p in (("random", RANDOM), ("margin", MARGIN))}
    assert delta_auc(f1, key="macro_f1_mean")["margin"] == pytest.approx(0.0875)


def test_delta_auc_without_random_says_to_run_it() -> None:
    with pytest.raises(InvalidArgumentError, match="run the 'random' strategy"):
        delta_auc({"margin": rows(MARGIN)})


def test_saving_ratio_interpolates_randoms_curve() -> None:
    # random 0.5@100, 0.7@200; the strategy has 0.6@100 → random needs 150 → 1.5.
    ssr = sample_saving_ratio(rows([(100, 0.6)]), rows([(100, 0.5), (200, 0.7)]))
    assert ssr == SavingRatio(100, 0.6, pytest.approx(150.0), pytest.approx(1.5), True, "")
    assert ssr.display() == "1.50"
    # At budget 200 of MARGIN (0.8): random crosses 0.8 exactly at 300 → 1.5.
    at200 = sample_saving_ratio(rows(MARGIN), rows(RANDOM), budget=200)
    assert (at200.random_labels, at200.ratio, at200.reached) == (
        pytest.approx(300.0),
        pytest.approx(1.5),
        True,
    )
    # A budget between the strategy's points uses its interpolated score: 0.7 at 150.
    at150 = sample_saving_ratio(rows(MARGIN), rows(RANDOM), budget=150)
    assert at150.strategy_accuracy == pytest.approx(0.7)
    assert at150.random_labels == pytest.approx(200.0)


def test_saving_ratio_not_reached_is_a_lower_bound() -> None:
    ssr = sample_saving_ratio(rows(MARGIN), rows(RANDOM))  # 0.85 at 300; random tops at 0.8
    assert ssr.strategy_labels == 300
    assert not ssr.reached
    assert ssr.random_labels == 300.0 and ssr.ratio == pytest.approx(1.0)
    assert "lower bound" in ssr.note
    assert ssr.display() == "≥ 1.00"
    longer = sample_saving_ratio(rows([(100, 0.9)]), rows(RANDOM))
    assert longer.ratio == pytest.approx(3.0) and longer.display() == "≥ 3.00"


def test_saving_ratio_when_random_reaches_it_at_its_first_point() -> None:
    ssr = sample_saving_ratio(rows([(100, 0.3), (200, 0.45)]), rows(RANDOM))
    assert ssr.reached
    assert ssr.random_labels == 100.0 and ssr.ratio == pytest.approx(0.5)
    assert "first point" in ssr.note


def test_saving_ratio_budget_outside_the_curve() -> None:
    with pytest.raises(InvalidArgumentError, match="outside"):
        sample_saving_ratio(rows(MARGIN), rows(RANDOM), budget=400)


def test_timing_breakdown_means_over_seeds() -> None:
    run = make_run()
    breakdown = timing_breakdown(run)
    assert list(breakdown) == ["random", "margin"]
    r1 = breakdown["margin"][1]
    assert r1["round"] == 1 and r1["labels"] == 200 and r1["seeds"] == 2
    assert r1["fit_s"] == pytest.approx(1.5)  # seeds 0 and 1: 1 s and 2 s
    assert r1["round_s"] == pytest.approx(4.5)
    assert r1["embed_s"] == pytest.approx(0.5)
    assert r1["other_s"] == pytest.approx(4.5 - 0.5 - 0.25 - 1.5 - 2.0)
    totals = timing_totals(breakdown)["margin"]
    assert totals["rounds"] == 3
    assert totals["round_s"] == pytest.approx(13.5)
    assert totals["fit_s"] == pytest.approx(4.5)
    assert totals["embed_s"] == pytest.approx(0.5)


def test_successors_aggregate_per_group_with_plasm_means() -> None:
    groups = summarise_successors(successor_rows())
    assert len(groups) == 2
    plain, plasm = groups
    assert (plain["pseudo_labels"], plain["seeds"], plain["plasm"]) == (False, 2, None)
    assert plain["accuracy_mean"] == pytest.approx(0.82)
    assert plain["accuracy_std"] == pytest.approx(0.02)
    assert plain["train_s_mean"] == pytest.approx(30.5)
    assert plasm["pseudo_labels"] is True
    assert plasm["plasm"] == {"kept": 50.0, "pseudo_label_accuracy": pytest.approx(0.85)}


def test_evaluate_run_has_every_number_and_is_strict_json() -> None:
    run = make_run(successors=successor_rows())
    ev = evaluate_run(run)
    text = json.dumps(ev, allow_nan=False)
    assert json.loads(text) == ev
    meta = ev["run"]
    assert meta["name"] == "synthetic" and meta["classes"] == 3 and meta["sessions"] == 4
    assert meta["seeds"] == {"random": [0, 1], "margin": [0, 1]}
    assert meta["encoder"] == {"model": "minilm-l6", "backend": "onnx"}
    assert ev["baseline"] == "random" and ev["notes"] == []
    margin = ev["strategies"]["margin"]
    assert margin["final"]["labels"] == 300
    assert margin["final"]["accuracy_mean"] == pytest.approx(0.85)
    assert margin["auc"]["accuracy"] == pytest.approx(0.7625)
    assert margin["auc"]["macro_f1"] == pytest.approx(0.6625)
    assert margin["delta_auc"]["accuracy"] == pytest.approx(0.0875)
    assert margin["delta_auc"]["macro_f1"] == pytest.approx(0.0875)
    assert [r["ratio"] for r in margin["ssr"]] == pytest.approx([1.5, 1.5, 1.0])
    assert margin["ssr_final"]["reached"] is False
    assert ev["strategies"]["random"]["ssr"] is None
    assert ev["timing"]["one_off_embed_s"] == 12.5
    assert ev["timing"]["totals"]["random"]["round_s"] == pytest.approx(13.5)
    assert len(ev["successors"]) == 2


def test_evaluate_run_nan_becomes_none_and_no_random_is_a_note() -> None:
    run = make_run({"margin": MARGIN})
    run.rounds[0] = RoundRow("margin", 0, 0, 100, math.nan, math.nan)
    ev = evaluate_run(run)
    json.dumps(ev, allow_nan=False)
    assert ev["learning_curves"]["margin"][0]["accuracy_mean"] is None
    assert ev["baseline"] is None
    assert ev["strategies"]["margin"]["delta_auc"] is None
    assert any("run the 'random' strategy" in n for n in ev["notes"])


def test_evaluate_run_survives_a_round_trip_through_the_run_directory(tmp_path) -> None:
    run = make_run(successors=successor_rows())
    loaded = load_run(write_run(run, tmp_path / "run"))
    a, b = evaluate_run(run), evaluate_run(loaded)
    a["run"].pop("directory"), b["run"].pop("directory")
    assert a == b


def test_compare_runs_differences_b_minus_a() -> None:
    a = make_run(name="a")
    b = make_run(
        {"random": RANDOM, "margin": [(100, 0.65), (200, 0.82), (300, 0.9)], "entropy": MARGIN},
        name="b",
    )
    cmp = compare_runs(a, b)
    json.dumps(cmp, allow_nan=False)
    assert cmp["same_pool"] is True
    assert cmp["strategies"] == {
        "a": ["random", "margin"],
        "b": ["random", "margin", "entropy"],
        "common": ["random", "margin"],
    }
    margin = cmp["per_strategy"]["margin"]
    assert margin["a"]["final_accuracy_mean"] == pytest.approx(0.85)
    assert margin["b"]["final_accuracy_mean"] == pytest.approx(0.9)
    assert margin["diff"]["final_accuracy_mean"] == pytest.approx(0.05)
    # AUC(b margin) = ((0.65+0.82)/2*100 + (0.82+0.9)/2*100)/200 = 0.7975
    assert margin["diff"]["auc_accuracy"] == pytest.approx(0.7975 - 0.7625)
    assert margin["diff"]["delta_auc_accuracy"] == pytest.approx(0.7975 - 0.7625)
    assert margin["diff"]["loop_s"] == pytest.approx(0.0)
    assert margin["b"]["ssr_final"] == pytest.approx(1.0)  # 0.9 never reached: ≥ 1.0
    assert margin["b"]["ssr_final_reached"] is False
    entropy = cmp["per_strategy"]["entropy"]
    assert entropy["a"] is None and entropy["diff"] is None
    assert cmp["per_strategy"]["random"]["diff"]["ssr_final"] is None


def test_compare_runs_refuses_different_pools_unless_allowed() -> None:
    a = make_run(name="a")
    b = make_run(name="b", fingerprint="fp-2")
    with pytest.raises(InvalidArgumentError, match="different pools"):
        compare_runs(a, b)
    cmp = compare_runs(a, b, allow_different_pools=True)
    assert cmp["same_pool"] is False
    assert "different pools" in cmp["notes"][0]
    assert cmp["per_strategy"]["margin"]["diff"]["final_accuracy_mean"] == pytest.approx(0.0)


def test_compare_runs_without_a_common_strategy_names_both_lists() -> None:
    a = make_run({"random": RANDOM}, name="a")
    b = make_run({"margin": MARGIN}, name="b")
    with pytest.raises(InvalidArgumentError, match=r"a: random; b: margin"):
        compare_runs(a, b)
