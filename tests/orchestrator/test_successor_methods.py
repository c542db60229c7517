"""Successor methods (full, LP-FT, LoRA) and early stopping, on real MiniLM-L6 and Banking77.

Tiny on purpose (4 classes x 10 texts, max_length 24, a few epochs) so the file stays well
under a minute or two on 2 CPU cores; quality is covered by test_successor.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from proxal.orchestrator_service.successor.training import (
    Successor,
    SuccessorConfig,
    fine_tune_successor,
    load_successor,
    validation_split,
)
from proxal.runtime.errors import InvalidArgumentError

from tests.conftest import banking_slice

CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed")
TINY = {"batch_size": 8, "max_length": 24, "seed": 0}


@pytest.fixture(scope="module")
def data() -> tuple[list[str], list[int]]:
    return banking_slice(CLASSES, 10)


def _changed(successor: Successor, base: dict[str, torch.Tensor]) -> set[str]:
    tuned = successor.model.encoder.state_dict()
    return {k for k, v in base.items() if k in tuned and not torch.equal(tuned[k], v)}


@pytest.fixture(scope="module")
def lora(data: tuple[list[str], list[int]]) -> Successor:
    config = SuccessorConfig(method="lora", epochs=2, validation_fraction=0, **TINY)
    return fine_tune_successor(*data, len(CLASSES), config, progress=False)


@pytest.fixture(scope="module")
def ruined_lp_ft(data: tuple[list[str], list[int]]) -> Successor:
    """LP-FT whose FT phase wrecks the encoder (lr=1): the LP epochs must win and stay."""
    config = SuccessorConfig(
        method="lp_ft",
        lp_epochs=2,
        epochs=3,
        lr=1.0,
        head_lr=1e-2,
        validation_fraction=0.2,
        patience=1,
        **TINY,
    )
    return fine_tune_successor(*data, len(CLASSES), config, progress=False)


def test_lp_phase_trains_only_the_head(
    data: tuple[list[str], list[int]], pretrained: dict[str, torch.Tensor]
) -> None:
    # One step (the time budget ends it), which falls in the LP phase: encoder untouched.
    config = SuccessorConfig(
        method="lp_ft", lp_epochs=1, epochs=1, time_budget_s=1e-6, validation_fraction=0, **TINY
    )
    result = fine_tune_successor(*data, len(CLASSES), config, progress=False)
    assert result.history is not None
    assert [r.phase for r in result.history.epochs] == ["lp"]
    assert _changed(result, pretrained) == set()


def test_lp_ft_then_fine_tunes_the_encoder(
    data: tuple[list[str], list[int]], pretrained: dict[str, torch.Tensor]
) -> None:
    config = SuccessorConfig(method="lp_ft", lp_epochs=1, epochs=1, validation_fraction=0, **TINY)
    result = fine_tune_successor(*data, len(CLASSES), config, progress=False)
    assert result.history is not None
    assert [r.phase for r in result.history.epochs] == ["lp", "ft"]
    assert len(result.epoch_losses) == 2
    changed = _changed(result, pretrained)
    assert "encoder.layer.0.attention.self.query.weight" in changed
    assert "encoder.layer.5.output.dense.weight" in changed
    assert "embeddings.word_embeddings.weight" not in changed  # frozen by default


def test_lora_changes_only_query_and_value(
    lora: Successor, pretrained: dict[str, torch.Tensor]
) -> None:
    # Merged LoRA deltas land in the query/value weights of every layer and nowhere else
    # (biases, keys, feed-forward, LayerNorms, embeddings stay exactly pretrained).
    changed = _changed(lora, pretrained)
    expected = {
        f"encoder.layer.{i}.attention.self.{proj}.weight"
        for i in range(6)
        for proj in ("query", "value")
    }
    assert changed == expected
    assert type(lora.model.encoder).__module__.startswith("transformers.")  # no peft wrapper
    assert not any("lora" in k for k in lora.model.state_dict())


def test_lora_saved_model_predicts_like_the_in_memory_one(
    lora: Successor, data: tuple[list[str], list[int]], tmp_path: Path
) -> None:
    texts = data[0]
    out = lora.save(tmp_path / "lora", label_names=list(CLASSES))
    assert {p.name for p in out.glob("*.safetensors")} == {"model.safetensors"}
    loaded = load_successor(out, device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(texts), lora.predict_proba(texts), atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(texts), lora.predict(texts))


def test_early_stopping_keeps_the_best_epoch(
    ruined_lp_ft: Successor,
    data: tuple[list[str], list[int]],
    pretrained: dict[str, torch.Tensor],
) -> None:
    history = ruined_lp_ft.history
    assert history is not None
    phases = [r.phase for r in history.epochs]
    assert phases == ["lp", "lp", "ft"]  # patience 1: one bad FT epoch ends it
    assert history.stopped_early
    assert len(history.validation_indices) == 8  # 20% of 40
    scores = [r.validation_score for r in history.epochs]
    assert all(s is not None for s in scores)
    assert history.epochs[history.best_epoch].phase == "lp"
    assert history.best_score == max(s for s in scores if s is not None)
    assert history.best_score > scores[-1]  # type: ignore[operator]
    # The kept weights are the best epoch's: the encoder is back to pretrained exactly, and
    # scoring the returned model on the held-out texts reproduces the recorded numbers.
    assert _changed(ruined_lp_ft, pretrained) == set()
    texts, labels = data
    val_texts = [texts[i] for i in history.validation_indices]
    val_labels = [labels[i] for i in history.validation_indices]
    metrics = ruined_lp_ft.evaluate(val_texts, val_labels)
    assert metrics["macro_f1"] == pytest.approx(history.best_score, abs=1e-9)
    proba = ruined_lp_ft.predict_proba(val_texts)
    loss = float(-np.log(proba[np.arange(len(val_labels)), val_labels]).mean())
    assert loss == pytest.approx(history.epochs[history.best_epoch].validation_loss, rel=1e-4)
    assert len(ruined_lp_ft.epoch_losses) == 3  # LP epochs count too


def test_no_validation_keeps_the_last_epoch(lora: Successor) -> None:
    history = lora.history
    assert history is not None
    assert history.validation_indices == ()
    assert history.best_epoch == len(history.epochs) - 1 == 1
    assert all(r.validation_score is None for r in history.epochs)
    assert history.best_score is None
    assert not history.stopped_early


def test_history_is_reported_with_a_validation_split() -> None:
    texts, labels = banking_slice(CLASSES, 4)
    config = SuccessorConfig(epochs=1, validation_fraction=0.1, **TINY)
    result = fine_tune_successor(texts, labels, len(CLASSES), config, progress=False)
    assert result.history is not None
    assert result.history.method == "full"
    assert result.history.validation_metric == "macro_f1"
    assert len(result.history.validation_indices) == 2  # round(0.1 * 16)
    assert result.history.best_epoch == 0
    json.dumps([dataclasses.asdict(r) for r in result.history.epochs])  # plain numbers, reportable


def test_validation_split_is_stratified_and_seeded() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 20
    train, val = validation_split(labels, 0.1, seed=1)
    assert len(val) == 10 and len(train) == 90
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert np.bincount(np.asarray(labels)[val]).tolist() == [5, 3, 2]
    np.testing.assert_array_equal(validation_split(labels, 0.1, seed=1)[1], val)
    assert not np.array_equal(validation_split(labels, 0.1, seed=2)[1], val)


def test_validation_split_never_takes_a_class_last_example() -> None:
    labels = [0] * 8 + [1, 2]  # classes 1 and 2 have a single example
    train, val = validation_split(labels, 0.3, seed=0)
    assert len(val) == 3
    assert set(np.asarray(labels)[train].tolist()) == {0, 1, 2}
    with pytest.raises(InvalidArgumentError, match=r"no training example.*validation_fraction=0"):
        validation_split([0, 1, 2, 2], 0.5, seed=0)


def test_validation_split_too_small_for_training_raises() -> None:
    with pytest.raises(InvalidArgumentError, match="no training example"):
        config = SuccessorConfig(validation_fraction=0.1, **TINY)
        fine_tune_successor(["a", "b"], [0, 1], 2, config, progress=False)


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ({"method": "adapter"}, "method must be one of full, lp_ft, lora"),
        ({"method": "lp_ft", "lp_epochs": 0}, "lp_epochs must be >= 1"),
        ({"method": "lora", "lora_r": 0}, "lora_r must be >= 1"),
        ({"method": "lora", "lora_alpha": 0}, "lora_alpha must be > 0"),
        ({"method": "lora", "lora_dropout": 1.0}, "lora_dropout"),
        ({"method": "lora", "lora_lr": 0.0}, "lora_lr must be > 0"),
        ({"method": "lora", "lora_target_modules": ()}, "lora_target_modules"),
        ({"method": "lora", "lora_target_modules": "query"}, "lora_target_modules"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\)"),
        ({"validation_fraction": -0.1}, "validation_fraction"),
        ({"validation_metric": "loss"}, "validation_metric must be one of"),
        ({"patience": 0}, "patience must be >= 1"),
    ],
)
def test_bad_method_config(field: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        SuccessorConfig(**field)  # type: ignore[arg-type]


def test_lora_unknown_target_module(data: tuple[list[str], list[int]]) -> None:
    config = SuccessorConfig(method="lora", lora_target_modules=("q_proj",), **TINY)
    with pytest.raises(InvalidArgumentError, match=r"\['q_proj'\] name no module"):
        fine_tune_successor(*data, len(CLASSES), config, progress=False)
