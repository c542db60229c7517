"""The successor: real MiniLM-L6 fine-tuned on a real 4-class slice of Banking77.

Kept small (4 classes x 40 texts, 3 epochs, max_length 32) so the file runs in well under a
minute on 2 CPU cores; the full-size numbers (1,100 texts, 77 classes) are measured by hand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from proxal.orchestrator_service.successor.training import (
    Successor,
    SuccessorConfig,
    fine_tune_successor,
    load_successor,
)
from proxal.runtime.errors import InvalidArgumentError, NotFoundError
from proxal.runtime.models import minilm_l6_path
from safetensors.torch import load_file

from tests.conftest import BANKING77, read_jsonl

CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed")
PER_CLASS = 40
FAST = SuccessorConfig(epochs=3, batch_size=16, max_length=32, seed=0)


def _slice(split: str, per_class: int | None) -> tuple[list[str], list[int]]:
    """Rows of CLASSES from one split (the first `per_class` of each), labels 0..3."""
    texts: list[str] = []
    labels: list[int] = []
    taken = dict.fromkeys(CLASSES, 0)
    for row in read_jsonl(BANKING77 / f"{split}.jsonl"):
        name = row["label"]
        if name in taken and (per_class is None or taken[name] < per_class):
            taken[name] += 1
            texts.append(row["text"])
            labels.append(CLASSES.index(name))
    return texts, labels


@pytest.fixture(scope="module")
def successor() -> Successor:
    texts, labels = _slice("train", PER_CLASS)
    return fine_tune_successor(texts, labels, len(CLASSES), FAST, progress=False)


@pytest.fixture(scope="module")
def test_set() -> tuple[list[str], list[int]]:
    return _slice("test", None)


def test_fine_tuned_successor_classifies_held_out_texts(
    successor: Successor, test_set: tuple[list[str], list[int]]
) -> None:
    texts, labels = test_set
    assert len(texts) == 4 * 40
    metrics = successor.evaluate(texts, labels)
    assert metrics["accuracy"] > 0.8, metrics
    assert metrics["macro_f1"] > 0.8, metrics
    assert successor.train_seconds > 0
    assert len(successor.epoch_losses) == FAST.epochs
    assert successor.epoch_losses[-1] < successor.epoch_losses[0]


def test_word_embeddings_frozen_rest_trained(successor: Successor) -> None:
    base = load_file(str(minilm_l6_path() / "model.safetensors"))
    tuned = successor.model.encoder.state_dict()
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(tuned[key], base[key])
    layer = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(tuned[layer], base[layer])


def test_predict_shapes_and_probabilities(
    successor: Successor, test_set: tuple[list[str], list[int]]
) -> None:
    texts = test_set[0][:10]
    proba = successor.predict_proba(texts, batch_size=3)
    assert proba.shape == (10, len(CLASSES))
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    predicted = successor.predict(texts)
    assert predicted.shape == (10,)
    assert predicted.dtype == np.int64
    np.testing.assert_array_equal(predicted, proba.argmax(axis=1))
    # Order is kept even though predict batches texts by length.
    np.testing.assert_array_equal(successor.predict(texts[::-1]), predicted[::-1])
    assert successor.predict([]).shape == (0,)
    assert successor.predict_proba([]).shape == (0, len(CLASSES))


def test_save_and_load_round_trip(
    successor: Successor, test_set: tuple[list[str], list[int]], tmp_path: Path
) -> None:
    texts = test_set[0]
    out = successor.save(tmp_path / "successor", label_names=list(CLASSES))
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == len(CLASSES)
    assert config["label_names"] == list(CLASSES)
    assert config["max_length"] == FAST.max_length
    assert config["base_model"] == "minilm-l6"

    loaded = load_successor(out)
    assert loaded.label_names == CLASSES
    assert loaded.num_classes == len(CLASSES)
    np.testing.assert_array_equal(loaded.predict(texts), successor.predict(texts))
    np.testing.assert_allclose(
        loaded.predict_proba(texts), successor.predict_proba(texts), atol=1e-6
    )


def test_save_rejects_wrong_label_names(successor: Successor, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="label_names"):
        successor.save(tmp_path / "x", label_names=["only", "two"])


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"model\.safetensors"):
        load_successor(tmp_path)


def test_same_seed_same_model() -> None:
    texts, labels = _slice("train", 4)
    tiny = SuccessorConfig(epochs=1, batch_size=8, max_length=32, seed=3)
    first = fine_tune_successor(texts, labels, len(CLASSES), tiny, progress=False)
    second = fine_tune_successor(texts, labels, len(CLASSES), tiny, progress=False)
    assert first.epoch_losses == second.epoch_losses
    np.testing.assert_array_equal(first.predict_proba(texts), second.predict_proba(texts))


def test_time_budget_stops_training(caplog: pytest.LogCaptureFixture) -> None:
    texts, labels = _slice("train", 4)
    config = SuccessorConfig(epochs=3, batch_size=4, max_length=32, time_budget_s=1e-6)
    with caplog.at_level(logging.WARNING, logger="proxal.orchestrator_service.successor.training"):
        result = fine_tune_successor(texts, labels, len(CLASSES), config, progress=False)
    assert len(result.epoch_losses) == 1
    assert "time budget after 1 of 12 steps" in caplog.text


@pytest.mark.parametrize(
    ("texts", "labels", "num_classes", "match"),
    [
        ([], [], 4, "training set is empty"),
        (["a", "b"], [0], 4, "2 texts but 1 labels"),
        (["a", "b"], [0, 4], 4, r"labels must be in \[0, 4\)"),
        (["a", "b"], [0, -1], 4, r"labels must be in \[0, 4\)"),
        (["a", "b"], [0, 1.0], 4, "integer class ids"),
        (["a", "b"], [0, 0], 1, "num_classes must be >= 2"),
        ("ab", [0, 1], 2, "not a single string"),
    ],
)
def test_bad_training_input(texts: object, labels: object, num_classes: int, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        fine_tune_successor(texts, labels, num_classes, FAST, progress=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"head_lr": -1.0},
        {"max_length": 1},
        {"warmup_ratio": 1.0},
        {"time_budget_s": 0.0},
        {"device": "tpu"},
    ],
)
def test_bad_config(field: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        SuccessorConfig(**field)  # type: ignore[arg-type]
