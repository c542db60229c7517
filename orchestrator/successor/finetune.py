"""A successor fine-tuned on the labels a labeling session acquired (the work of a
TrainSuccessor job, orchestrator/successor/jobs.py).

Reads the session's labels and texts from the store (it only reads: the session is left as
it is), fine-tunes with a `SuccessorConfig` -- on the gold labels alone, or with PLASM on
gold + filtered pseudo-labels of the rest of the pool's split -- evaluates on the rows of
the pool's test split whose gold label is one of the session's classes (saying how many
were left out), and writes the successor (safetensors, ONNX, label map) and `metrics.json`
into one directory.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from proxal.orchestrator_service.successor.config import Progress
from proxal.orchestrator_service.successor.plasm import PlasmConfig, model_name, run_plasm
from proxal.orchestrator_service.successor.training import (
    CONFIG_FILE,
    LABELS_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    Successor,
    SuccessorConfig,
    fine_tune_successor,
)
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError
from proxal.store import Store

METRICS_FILE = "metrics.json"
# what the tokenizer's save_pretrained writes (vocab.txt only with older transformers)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


@dataclass(frozen=True)
class SessionLabels:
    """A session's labelled texts as a training set.

    `classes` is the label map (index → name): the session's classes (those it was created
    with, else the ones it labelled), sorted; never another split's gold classes.
    `labels[i]` indexes `classes`; `ids` are the pool row ids of `texts`, in submission
    order.
    """

    session: str
    pool: str
    ids: np.ndarray
    texts: list[str]
    labels: list[int]
    classes: list[str]
    labeled_classes: list[str]


def session_labels(store: Store, session: str) -> SessionLabels:
    """Read a session's labels and their texts. NotFoundError for an unknown session or pool,
    FailedPreconditionError when there is nothing to train a classifier on."""
    record = store.get_session(session)
    rows = store.pool_rows(record.pool, columns=["id", "text"])
    ids, names = store.read_labels(session)
    labeled = sorted(set(names))
    if len(labeled) < 2:
        found = "no labels" if not names else f"labels of one class only ({labeled[0]!r})"
        raise FailedPreconditionError(
            f"session {session!r} has {found}: a classifier needs labelled texts of at least "
            "2 classes, so label more texts before fine-tuning"
        )
    text_of = dict(zip(rows.column("id").to_pylist(), rows.column("text").to_pylist(), strict=True))
    missing = [int(i) for i in ids if int(i) not in text_of]
    if missing:
        raise FailedPreconditionError(
            f"session {session!r} labels {len(missing)} ids that pool {record.pool!r} does not "
            f"hold (first: {missing[0]}): was the pool re-created after labeling?"
        )
    recorded = _recorded_classes(record.config)
    classes = sorted(set(labeled) | set(recorded))
    index = {name: i for i, name in enumerate(classes)}
    return SessionLabels(
        session=session,
        pool=record.pool,
        ids=ids,
        texts=[text_of[int(i)] for i in ids],
        labels=[index[name] for name in names],
        classes=classes,
        labeled_classes=labeled,
    )


def _recorded_classes(config: dict[str, Any]) -> list[str]:
    """The classes a session was created with; none (the labels say which) for a record
    without a usable list of names (e.g. one a simulation wrote)."""
    classes = config.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        return []
    return list(classes)


def gold_rows(
    store: Store, pool: str, split: str, classes: list[str]
) -> tuple[list[str], list[str], int]:
    """Texts and gold labels of a pool split's rows whose gold label is one of `classes`,
    and how many gold-labelled rows of other classes were left out."""
    rows = store.pool_rows(pool, split=split, columns=["id", "text", "label"])
    keep = set(classes)
    texts, labels, left_out = [], [], 0
    for text, label in zip(
        rows.column("text").to_pylist(), rows.column("label").to_pylist(), strict=True
    ):
        if label in keep:
            texts.append(text)
            labels.append(label)
        elif label is not None:
            left_out += 1
    return texts, labels, left_out


def unlabeled_rows(
    store: Store, session: str, data: SessionLabels
) -> tuple[list[str], list[int] | None]:
    """The texts of the session's split that it has not labelled (PLASM pseudo-labels them),
    and their gold class ids when every one has a gold label (to measure, never to train)."""
    split = store.get_session(session).split
    rows = store.pool_rows(data.pool, split=split, columns=["id", "text", "label"])
    labeled = {int(i) for i in data.ids}
    index = {name: i for i, name in enumerate(data.classes)}
    texts, gold = [], []
    for i, text, label in zip(
        rows.column("id").to_pylist(),
        rows.column("text").to_pylist(),
        rows.column("label").to_pylist(),
        strict=True,
    ):
        if int(i) not in labeled:
            texts.append(text)
            gold.append(index.get(label, -1) if label is not None else -1)
    if not texts:
        raise FailedPreconditionError(
            f"session {session!r} labelled every row of split {split!r}: nothing is left for "
            "PLASM to pseudo-label; fine-tune without --plasm"
        )
    return texts, gold if all(g >= 0 for g in gold) else None


def finetune_session(
    store: Store,
    session: str,
    out: str | Path,
    config: SuccessorConfig,
    test_split: str = "test",
    onnx: bool = True,
    progress: Progress = True,
    model_path: str | Path | None = None,
    plasm: PlasmConfig | None = None,
    data: SessionLabels | None = None,
) -> dict[str, Any]:
    """Fine-tune a successor on `session`'s labels and write it with metrics.json to `out`.

    `data`: the session's labels as read before (a job's snapshot; None: read them now).
    `model_path` is the successor's checkpoint directory (None: MiniLM-L6). With `plasm`, a
    teacher trained on the labels pseudo-labels the session's split's unlabeled rows and the
    successor trains on gold + the kept pseudo-labels (`config` is the successor's; the
    teacher's is `plasm.teacher`). Returns the metrics written: training summary, the kept
    epoch, test accuracy and macro-F1 on `test_split`'s rows of the session's classes (None
    when it has none) with how many rows of other classes were left out, PLASM's record, and
    the files.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"--out {out} is a file, not a directory: pass a new or existing directory"
        )
    data = data if data is not None else session_labels(store, session)
    test_texts, test_gold, left_out = gold_rows(store, data.pool, test_split, data.classes)
    successor, plasm_record = _train(store, data, config, progress, model_path, plasm)
    test: dict[str, Any] | None = None
    if test_texts:
        index = {name: i for i, name in enumerate(data.classes)}
        scores = successor.evaluate(test_texts, [index[name] for name in test_gold])
        test = {"split": test_split, "rows": len(test_texts), "rows_left_out": left_out, **scores}
    successor.save(out, label_names=data.classes, onnx=onnx)
    metrics = {
        "session": session,
        "pool": data.pool,
        "method": config.method,
        "model": model_name(model_path),
        "device": str(successor.device),
        **_training_record(successor, data),
        "test": test,
        "test_rows_left_out": left_out,  # gold rows of classes the session does not have
        "plasm": plasm_record,
        "files": _written_files(out),
        "config": dataclasses.asdict(config),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _train(
    store: Store,
    data: SessionLabels,
    config: SuccessorConfig,
    progress: Progress,
    model_path: str | Path | None,
    plasm: PlasmConfig | None,
) -> tuple[Successor, dict[str, Any] | None]:
    """The successor trained on the labels alone, or with PLASM (then also its record)."""
    if plasm is None:
        successor = fine_tune_successor(
            data.texts,
            data.labels,
            len(data.classes),
            config,
            model_path=model_path,
            progress=progress,
        )
        return successor, None
    pool_texts, pool_gold = unlabeled_rows(store, data.session, data)
    result = run_plasm(
        data.texts,
        data.labels,
        pool_texts,
        len(data.classes),
        dataclasses.replace(
            plasm,
            successor=config,
            successor_model=None if model_path is None else str(model_path),
        ),
        pool_gold=pool_gold,
        progress=progress,
    )
    return result.successor, result.report.as_dict()


def _training_record(successor: Successor, data: SessionLabels) -> dict[str, Any]:
    """What training did: label and class counts, time, per-epoch history, the kept epoch."""
    history = successor.history
    assert history is not None  # a freshly trained successor has one
    return {
        "labels": len(data.labels),
        "classes": len(data.classes),
        "labeled_classes": len(data.labeled_classes),
        "train_seconds": successor.train_seconds,
        "epochs": [dataclasses.asdict(r) for r in history.epochs],
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "validation_labels": len(history.validation_indices),
        "validation_metric": history.validation_metric,
        "validation_score": history.best_score,
    }


def _written_files(out: Path) -> list[str]:
    """The successor's files in `out` (weights, config, labels, ONNX, tokenizer), sorted."""
    names = (WEIGHTS_FILE, CONFIG_FILE, LABELS_FILE, ONNX_FILE, *TOKENIZER_FILES)
    return sorted(name for name in names if (out / name).is_file())
