"""`proxal finetune` end to end: a real store, a real session's labels, real MiniLM-L6.

One training run (40 Banking77 texts, 1 epoch, max_length 32); the error paths fail before
any model is loaded, and none of them touches the session's labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from orchestrator.cli import main
from proxal_store import SessionRecord, Store
from tests.conftest import BANKING77, read_jsonl

CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed")
TEST_ONLY = ("atm_support",)  # a gold class of the test split that no session has


def _rows(
    split: str, per_class: int, classes: tuple[str, ...] = CLASSES
) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    taken = dict.fromkeys(classes, 0)
    for row in read_jsonl(BANKING77 / f"{split}.jsonl"):
        if row["label"] in taken and taken[row["label"]] < per_class:
            taken[row["label"]] += 1
            texts.append(row["text"])
            labels.append(row["label"])
    return texts, labels


def _session(store: Store, name: str, pool: str, ids: list[int], labels: list[str]) -> None:
    record = SessionRecord(name, pool, "v1", "margin", 10, 0, config={"classes": list(CLASSES)})
    store.create_session(record)
    store.append_labels(name, pool, ids, labels)


@pytest.fixture
def labeled(tmp_path: Path) -> str:
    """A store with pool "bank" (20 train rows per class, 5 test rows per class plus 5 of a
    class that only the test split has) and sessions:
    "s1" labelled 10 per class (the annotator relabels one row), "one" a single class,
    "few" one label per class, "orphan" on a pool that does not exist, "empty" no labels."""
    uri = str(tmp_path / "store")
    store = Store(uri)
    train, train_gold = _rows("train", 20)
    test, test_gold = _rows("test", 5, CLASSES + TEST_ONLY)
    store.add_pool_rows("bank", "train", train, train_gold)
    store.add_pool_rows("bank", "test", test, test_gold)
    picked = [i for c in CLASSES for i in [j for j, g in enumerate(train_gold) if g == c][:10]]
    _session(store, "s1", "bank", picked, [train_gold[i] for i in picked])
    store.append_labels("s1", "bank", [picked[0]], [train_gold[picked[0]]])  # a relabel
    _session(store, "one", "bank", picked[:3], [train_gold[picked[0]]] * 3)
    firsts = [train_gold.index(c) for c in CLASSES]
    _session(store, "few", "bank", firsts, list(CLASSES))
    _session(store, "orphan", "gone", [0, 1], ["a", "b"])
    store.create_session(SessionRecord("empty", "bank", "v1", "margin", 10, 0))
    return uri


def _label_counts(uri: str) -> dict[str, int]:
    store = Store(uri)
    return {s: len(store.read_labels(s)[0]) for s in ("s1", "one", "few", "orphan", "empty")}


def test_finetune_writes_a_successor_onnx_and_metrics(
    labeled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _label_counts(labeled)
    out = tmp_path / "successor"
    code = main(
        [
            "finetune",
            "s1",
            "--store",
            labeled,
            "--out",
            str(out),
            "--method",
            "bottleneck",
            "--epochs",
            "1",
            "--max-length",
            "32",
            "--validation-fraction",
            "0.2",
            "--patience",
            "1",
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "bottleneck minilm-l6 successor on 40 labels of session 's1'" in printed
    assert "on 20 rows of the session's 4 classes; 5 rows of other classes left out" in printed
    for name in ("model.safetensors", "model.onnx", "config.json", "labels.json", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert "tokenizer.json" in metrics["files"]  # every file it wrote is named
    assert set(metrics["files"]) | {"metrics.json"} == {p.name for p in out.iterdir()}
    assert metrics["labels"] == 40 and metrics["classes"] == 4
    assert metrics["validation_labels"] == 8  # 20% of 40, stratified
    assert metrics["validation_score"] is not None and 0 <= metrics["validation_score"] <= 1
    # only test rows of the session's classes count: the test-only class is left out
    assert metrics["test"]["rows"] == 20 and metrics["test"]["rows_left_out"] == 5
    assert metrics["test_rows_left_out"] == 5
    assert 0 <= metrics["test"]["accuracy"] <= 1 and 0 <= metrics["test"]["macro_f1"] <= 1
    assert metrics["config"]["method"] == "bottleneck" and metrics["config"]["epochs"] == 1
    labels = json.loads((out / "labels.json").read_text())
    assert labels["id2label"] == {str(i): c for i, c in enumerate(CLASSES)}
    config = json.loads((out / "config.json").read_text())
    assert config["adapter"] == {"kind": "bottleneck", "reduction": 16}
    assert config["max_length"] == 32
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[101, 2026, 4003, 102], [101, 7592, 102, 0]], dtype=np.int64)
    [logits] = session.run(["logits"], {"input_ids": ids, "attention_mask": (ids != 0) * 1})
    assert logits.shape == (2, 4) and np.isfinite(logits).all()
    assert _label_counts(labeled) == before  # the session was only read


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "session 'nope' not found"),
        (["orphan"], "pool 'gone' not found"),
        (["empty"], "session 'empty' has no labels"),
        (["one"], "labels of one class only ('card_arrival')"),
        (["few", "--validation-fraction", "0.5"], "no training example"),
        (["s1", "--validation-fraction", "1"], r"validation_fraction must be in [0, 1)"),
        (["s1", "--validation-fraction", "-0.1"], "validation_fraction must be in [0, 1)"),
        (["s1", "--epochs", "0"], "epochs must be >= 1"),
    ],
)
def test_finetune_errors_reach_the_user(
    labeled: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    before = _label_counts(labeled)
    out = tmp_path / "never"
    code = main(["finetune", *argv, "--store", labeled, "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("proxal: ") and message in err
    assert not out.exists()
    assert _label_counts(labeled) == before


def test_finetune_refuses_a_file_as_out(
    labeled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "a-file"
    out.write_text("keep me")
    assert main(["finetune", "s1", "--store", labeled, "--out", str(out)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_finetune_rejects_an_unknown_method(labeled: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "s1", "--store", labeled, "--out", str(tmp_path), "--method", "x"])
    assert exc.value.code == 2  # argparse lists the choices
