"""The fine-tuned-acquisition AL loop on a tiny real Banking77 slice (3 classes, 60 texts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from proxal.orchestrator_service.engine.ups import UpsSchedule
from proxal.orchestrator_service.successor.training import Successor, SuccessorConfig
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.uncertainty import margin

from tests.conftest import load_script

finetuned_al = load_script(
    Path(__file__).resolve().parents[2] / "bench" / "finetuned_al.py", "bench_finetuned_al"
)
FinetunedLoopConfig = finetuned_al.FinetunedLoopConfig
run_finetuned_al = finetuned_al.run_finetuned_al
DATA = (
    Path(__file__).resolve().parents[2]
    / "orchestrator"
    / "demo"
    / "data"
    / "banking77"
    / "train.jsonl"
)
CLASSES = ["card_arrival", "exchange_rate", "lost_or_stolen_card"]
PER_CLASS = 20  # 15 pool + 5 test each
TINY = SuccessorConfig(epochs=1, max_length=32, batch_size=16, device="cpu")
CONFIG = FinetunedLoopConfig(
    strategy="margin", seed=0, initial_size=6, batch_size=5, rounds=2, successor=TINY
)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    texts: dict[str, list[str]] = {c: [] for c in CLASSES}
    with DATA.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["label"] in texts and len(texts[row["label"]]) < PER_CLASS:
                texts[row["label"]].append(row["text"])
    pool = [(t, i) for i, c in enumerate(CLASSES) for t in texts[c][:15]]
    test = [(t, i) for i, c in enumerate(CLASSES) for t in texts[c][15:]]
    return {
        "pool_ids": np.arange(100, 100 + len(pool), dtype=np.int64),
        "pool_texts": [t for t, _ in pool],
        "pool_gold": np.array([y for _, y in pool], dtype=np.int32),
        "test_texts": [t for t, _ in test],
        "test_gold": np.array([y for _, y in test], dtype=np.int32),
        "num_classes": len(CLASSES),
    }


@pytest.fixture(scope="module")
def spied(data: dict[str, Any]) -> tuple[Any, list[Successor]]:
    """A margin run whose per-round models are kept, to check the picks against them."""
    models: list[Successor] = []
    real = finetuned_al.fine_tune_successor

    def spy(*args: Any, **kwargs: Any) -> Successor:
        model = real(*args, **kwargs)
        models.append(model)
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(finetuned_al, "fine_tune_successor", spy)
        result = run_finetuned_al(**data, config=CONFIG)
    return result, models


def test_budget_reached_with_distinct_never_labeled_picks(
    spied: tuple[Any, list[Successor]],
) -> None:
    result, models = spied
    assert len(models) == CONFIG.rounds + 1  # one model per round, one after the last batch
    assert [r.labels for r in result.rounds] == [6, 11, 16]
    assert len(result.label_ids) == CONFIG.budget == 16
    assert len(set(result.label_ids.tolist())) == 16
    initial = set(result.label_ids[: CONFIG.initial_size].tolist())
    expected = np.random.default_rng(0).choice(np.arange(100, 145), size=6, replace=False)
    assert initial == set(expected.tolist())  # the simulation loop's initial set
    seen = set(initial)
    for r in result.rounds[:-1]:
        assert len(r.selected_ids) == CONFIG.batch_size
        assert not seen & set(r.selected_ids)
        seen |= set(r.selected_ids)
        assert r.scored == 45 - r.labels and not r.subsampled
    last = result.rounds[-1]
    assert last.selected_ids == [] and last.scored == 0
    for r in result.rounds:
        assert r.accuracy is not None and 0 <= r.accuracy <= 1
        assert r.macro_f1 is not None and r.train_s > 0
    assert result.wall_s > 0


def test_margin_picks_the_smallest_margins_of_that_rounds_model(
    data: dict[str, Any], spied: tuple[Any, list[Successor]]
) -> None:
    result, models = spied
    ids = data["pool_ids"]
    labeled = set(result.label_ids[: CONFIG.initial_size].tolist())
    for r, model in zip(result.rounds[:-1], models, strict=False):
        unlabeled = [p for p, i in enumerate(ids.tolist()) if i not in labeled]
        proba = model.predict_proba([data["pool_texts"][p] for p in unlabeled])
        gap = -margin(proba)  # p1 - p2 per unlabeled text
        chosen = np.isin(ids[unlabeled], r.selected_ids)
        assert chosen.sum() == CONFIG.batch_size
        assert gap[chosen].max() <= gap[~chosen].min()
        labeled |= set(r.selected_ids)


def test_same_seed_same_picks(data: dict[str, Any], spied: tuple[Any, list[Successor]]) -> None:
    again = run_finetuned_al(**data, config=CONFIG)
    np.testing.assert_array_equal(again.label_ids, spied[0].label_ids)
    assert [r.selected_ids for r in again.rounds] == [r.selected_ids for r in spied[0].rounds]
    assert again.rounds[-1].accuracy is not None and again.rounds[0].train_s > 0


def test_ups_scores_only_a_subsample_on_a_non_full_round(data: dict[str, Any]) -> None:
    ups = UpsSchedule(gamma=0.3, temperature=0.01, full_rounds=1, full_every=0)
    config = FinetunedLoopConfig(
        strategy="entropy",
        seed=1,
        initial_size=6,
        batch_size=5,
        rounds=2,
        successor=TINY,
        ups=ups,
        evaluate=False,
    )
    result = run_finetuned_al(**data, config=config)
    full, partial = result.rounds[0], result.rounds[1]
    assert full.scored == 39 and not full.subsampled
    assert partial.subsampled and CONFIG.batch_size <= partial.scored < 34
    assert len(set(result.label_ids.tolist())) == config.budget
    assert all(r.accuracy is None for r in result.rounds)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": "badge"}, "unknown strategy 'badge'.*random, least_confidence"),
        ({"rounds": 10}, "label budget 56 .* exceeds the pool's 45 texts"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_config_is_rejected(data: dict[str, Any], change: dict[str, Any], message: str) -> None:
    config = FinetunedLoopConfig(**{**CONFIG.__dict__, **change})
    with pytest.raises(InvalidArgumentError, match=message):
        run_finetuned_al(**data, config=config)


def test_bad_inputs_are_rejected(data: dict[str, Any]) -> None:
    empty = {**data, "pool_ids": np.zeros(0, np.int64), "pool_texts": []}
    empty["pool_gold"] = np.zeros(0, np.int32)
    with pytest.raises(InvalidArgumentError, match="the pool is empty"):
        run_finetuned_al(**empty, config=CONFIG)
    with pytest.raises(InvalidArgumentError, match="one text and one label per id"):
        run_finetuned_al(**{**data, "pool_texts": data["pool_texts"][:-1]}, config=CONFIG)
    wrong = data["pool_gold"].copy()
    wrong[0] = 7
    with pytest.raises(
        InvalidArgumentError, match=r"pool gold labels must be class ids in \[0, 3\)"
    ):
        run_finetuned_al(**{**data, "pool_gold": wrong}, config=CONFIG)
    with pytest.raises(InvalidArgumentError, match="pool ids must be unique"):
        run_finetuned_al(**{**data, "pool_ids": np.zeros(45, np.int64)}, config=CONFIG)
