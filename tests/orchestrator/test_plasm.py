"""PLASM: the filters on their own, the teacher's chance check, the whole algorithm with real
MiniLM-L6 on Banking77 texts, and `proxal finetune --plasm` as a job of a real orchestrator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.cli.main import main
from proxal.orchestrator_service.successor.plasm import (
    PlasmConfig,
    cleanlab_keep,
    run_plasm,
    uncertainty_keep,
)
from proxal.orchestrator_service.successor.training import SuccessorConfig
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError
from proxal.store import SessionRecord, Store

from tests.conftest import BANKING77, banking_slice, read_jsonl
from tests.orchestrator.jobs_server import orchestrator

CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_phone")
FAST = SuccessorConfig(epochs=3, batch_size=8, max_length=32, head_lr=1e-2, device="cpu")
TEACHER = SuccessorConfig(
    epochs=3,
    batch_size=8,
    max_length=32,
    head_lr=1e-2,
    device="cpu",
    validation_fraction=0.25,
    validation_metric="accuracy",
    patience=5,
)


def test_uncertainty_filter_keeps_the_most_certain_fraction() -> None:
    proba = np.array(
        [[0.9, 0.1], [0.55, 0.45], [0.2, 0.8], [0.5, 0.5], [0.97, 0.03]], dtype=np.float32
    )
    keep, threshold = uncertainty_keep(proba, 0.6)  # round(0.6 * 5) = 3 rows
    assert keep.tolist() == [0, 2, 4]  # uncertainties 0.1, 0.2, 0.03 (vs 0.45, 0.5)
    assert threshold == pytest.approx(0.2)
    assert uncertainty_keep(proba, 0.0)[0].size == 0
    assert uncertainty_keep(proba, 1.0)[0].tolist() == [0, 1, 2, 3, 4]


def test_cleanlab_filter_drops_flipped_labels() -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(3, 16, dtype=np.float32) * 6
    labels = np.repeat(np.arange(3), 60)
    features = centers[labels] + rng.normal(size=(180, 16)).astype(np.float32)
    noisy = labels.copy()
    flipped = rng.choice(180, size=12, replace=False)
    noisy[flipped] = (noisy[flipped] + 1) % 3
    keep = cleanlab_keep(features, noisy, seed=0)
    dropped = np.setdiff1d(np.arange(180), keep)
    assert len(np.intersect1d(dropped, flipped)) >= 10  # most flips are caught
    assert len(np.setdiff1d(dropped, flipped)) <= 10  # few of the 168 clean labels are lost
    # a class with a single member cannot be cross-validated: it is kept, the rest filtered
    singleton = np.concatenate([noisy, [3]])
    keep = cleanlab_keep(np.vstack([features, features[:1]]), singleton, seed=0)
    assert 180 in keep.tolist()


def test_config_refuses_bad_settings() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown PLASM filter"):
        PlasmConfig(filter="tracin")
    with pytest.raises(InvalidArgumentError, match="held-out labels"):
        PlasmConfig(teacher=SuccessorConfig(validation_fraction=0.0))
    with pytest.raises(InvalidArgumentError, match="pool_sample"):
        PlasmConfig(pool_sample=0)


def test_a_teacher_no_better_than_chance_is_refused() -> None:
    # Every text is the same, so no teacher can beat the majority class on held-out labels.
    texts = ["please help me with my account"] * 24
    labels = [0] * 12 + [1] * 12
    with pytest.raises(FailedPreconditionError, match="not above chance"):
        run_plasm(
            texts,
            labels,
            ["another text"] * 5,
            2,
            PlasmConfig(teacher=TEACHER, successor=FAST),
        )


def test_plasm_end_to_end_on_banking77() -> None:
    gold_texts, gold_labels = banking_slice(CLASSES, 12)
    pool_texts, pool_gold = [], []
    seen = set(gold_texts)
    for row in read_jsonl(BANKING77 / "train.jsonl"):
        if row["label"] in CLASSES and row["text"] not in seen:
            pool_texts.append(row["text"])
            pool_gold.append(CLASSES.index(row["label"]))
    result = run_plasm(
        gold_texts,
        gold_labels,
        pool_texts,
        len(CLASSES),
        PlasmConfig(teacher=TEACHER, successor=FAST, pool_sample=60, seed=3),
        pool_gold=pool_gold,
    )
    r = result.report
    assert (r.gold, r.candidates, r.filter) == (36, 60, "uncertainty")
    assert r.teacher_heldout == 9  # round(0.25 * 36)
    assert r.teacher_heldout_accuracy > r.chance >= 1 / 3
    assert r.kept == round(r.teacher_heldout_accuracy * 60)
    assert r.kept_fraction == pytest.approx(r.kept / 60)
    assert len(result.kept_positions) == r.kept == len(result.kept_labels)
    assert set(result.kept_positions.tolist()) <= set(range(len(pool_texts)))
    truth = np.array(pool_gold)[result.kept_positions]
    assert r.pseudo_accuracy_kept == pytest.approx(float((truth == result.kept_labels).mean()))
    assert r.pseudo_accuracy_kept is not None and r.pseudo_accuracy_kept > 0.6
    assert r.pseudo_accuracy_all is not None and r.pseudo_accuracy_kept >= r.pseudo_accuracy_all
    # The successor saw gold + kept pseudo-labels (one fewer batch would mean fewer rows).
    history = result.successor.history
    assert history is not None and len(history.epochs) == FAST.epochs
    test_texts, test_labels = banking_slice(CLASSES, 40)
    assert result.successor.evaluate(test_texts[36:], test_labels[36:])["accuracy"] > 0.5


@pytest.fixture
def session_store(tmp_path: Path) -> str:
    uri = str(tmp_path / "store")
    store = Store(uri)
    texts, labels = [], []
    taken = dict.fromkeys(CLASSES, 0)
    for row in read_jsonl(BANKING77 / "train.jsonl"):
        if row["label"] in taken and taken[row["label"]] < 30:
            taken[row["label"]] += 1
            texts.append(row["text"])
            labels.append(row["label"])
    test = [r for r in read_jsonl(BANKING77 / "test.jsonl") if r["label"] in CLASSES][:30]
    store.add_pool_rows("bank", "train", texts, labels)
    store.add_pool_rows("bank", "test", [r["text"] for r in test], [r["label"] for r in test])
    picked = [i for c in CLASSES for i in [j for j, g in enumerate(labels) if g == c][:10]]
    store.create_session(SessionRecord("s1", "bank", "v1", "margin", 10, 0))
    store.append_labels("s1", "bank", picked, [labels[i] for i in picked])
    store.create_session(SessionRecord("all", "bank", "v1", "margin", 10, 0))
    store.append_labels("all", "bank", list(range(len(texts))), labels)
    return uri


def _tiny_bert(directory: Path) -> Path:
    """A different architecture from the acquisition encoder: a 2-layer, 64-wide BERT with
    random weights (safetensors) and MiniLM-L6's tokenizer."""
    from proxal.runtime.models import minilm_l6_path
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    BertModel(config).save_pretrained(str(directory), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_l6_path() / name, directory / name)
    return directory


def test_finetune_cli_with_plasm_and_another_successor_architecture(
    session_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = _tiny_bert(tmp_path / "tiny-bert")
    store = Store(session_store)
    with orchestrator(store) as server:
        args = ["finetune", "s1", "--orchestrator", server.address, "--epochs", "2"]
        args += ["--batch-size", "8", "--max-length", "32", "--device", "cpu", "--no-onnx"]
        args += ["--plasm", "--plasm-pool-sample", "40", "--plasm-filter", "none"]
        assert main([*args, "--model", str(tiny)]) == 0
        [model] = server.stub.ListModels(pb.ListModelsRequest(session="s1")).models
    out = Path(model.uri)
    metrics = json.loads((out / "metrics.json").read_text())
    plasm = metrics["plasm"]
    assert (plasm["gold"], plasm["candidates"], plasm["kept"]) == (30, 40, 40)
    assert 0.0 <= plasm["pseudo_accuracy_all"] <= 1.0  # the pool has gold: measured
    assert metrics["model"] == "tiny-bert" and metrics["test"]["rows"] == 30
    saved = json.loads((out / "config.json").read_text())["encoder_config"]
    assert saved["hidden_size"] == 64 and saved["num_hidden_layers"] == 2
    printed = capsys.readouterr().out
    assert "PLASM (none filter)" in printed
    assert len(store.read_labels("s1")[0]) == 30  # the session is untouched


def test_finetune_cli_plasm_errors(
    session_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with orchestrator(Store(session_store)) as server:
        args = ["finetune", "all", "--orchestrator", server.address]
        assert main([*args, "--plasm", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "FAILED_PRECONDITION" in err and "nothing is left for PLASM to pseudo-label" in err
        s1 = ["finetune", "s1", "--orchestrator", server.address]
        assert main([*s1, "--model", str(tmp_path / "nowhere")]) == 2
        assert "is not a Hugging Face encoder checkpoint directory" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exc:
            main([*args, "--plasm", "--plasm-filter", "tracin"])
        assert exc.value.code == 2
