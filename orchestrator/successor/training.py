"""Fine-tune the successor: a MiniLM-L6 classifier trained on the labels active learning bought.

The proxies score pre-computed embeddings; the successor is the deployable model. It keeps the
checkpoint's own recipe (masked mean pooling over the last hidden states, which is what
all-MiniLM-L6-v2 was trained for) and adds a dropout + linear head. Saved successors are
`model.safetensors` + `config.json` (with the label map) + `labels.json` + the tokenizer
files, optionally `model.onnx`: no pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from proxal.orchestrator_service.successor.config import (
    Progress,
    SuccessorConfig,
    TrainingStep,
    resolve_device,
)
from proxal.runtime.errors import InvalidArgumentError, MissingDependencyError, NotFoundError
from proxal.runtime.models import MINILM_L6, minilm_l6_path
from safetensors.torch import load_file, save_file
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17  # as the encoder service's export
FORMAT_VERSION = 1
# (phase, epochs, AdamW param groups) of a fine-tune
_Phase = tuple[str, int, list[dict[str, Any]]]


@dataclass(frozen=True)
class EpochRecord:
    """One training epoch: its phase ("lp" or "ft"), mean training loss, and the validation
    score and mean validation cross-entropy (both None without a validation split)."""

    phase: str
    train_loss: float
    validation_score: float | None
    validation_loss: float | None = None


@dataclass(frozen=True)
class TrainingHistory:
    """What a fine-tuning run did, for the orchestrator to report.

    `epochs` lists every epoch run, in order (an "lp" phase first for lp_ft). `best_epoch` is
    the index into `epochs` whose weights the successor holds (the last one without a
    validation split). `validation_indices` are the positions in the training input held out
    for validation (empty without one). `stopped_early` is True when patience ran out before
    the planned epochs did.
    """

    method: str
    validation_metric: str
    epochs: tuple[EpochRecord, ...]
    best_epoch: int
    validation_indices: tuple[int, ...]
    stopped_early: bool

    @property
    def best_score(self) -> float | None:
        """Validation score of the kept epoch (None without a validation split)."""
        return self.epochs[self.best_epoch].validation_score


class BottleneckAdapter(torch.nn.Module):
    """h + up(relu(down(h))): (..., hidden) → (..., hidden), down to hidden // reduction.

    `up` starts at zero, so a fresh adapter is the identity and training starts from the
    pretrained encoder's function (as LoRA's zero B does).
    """

    def __init__(self, hidden: int, reduction: int) -> None:
        super().__init__()
        self.down = torch.nn.Linear(hidden, hidden // reduction)
        self.up = torch.nn.Linear(hidden // reduction, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(torch.relu(self.down(hidden)))


class MeanPoolClassifier(torch.nn.Module):
    """Transformer encoder + masked mean pooling + dropout + Linear(hidden, num_classes).

    `bottleneck_reduction` is None, or the reduction of the bottleneck adapters that
    `add_bottleneck_adapters` put into the encoder.
    """

    def __init__(self, encoder: PreTrainedModel, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(encoder.config.hidden_size, num_classes)
        self.bottleneck_reduction: int | None = None

    @classmethod
    def from_pretrained(
        cls, path: str | Path, num_classes: int, dropout: float = 0.1
    ) -> MeanPoolClassifier:
        """Pretrained encoder weights from `path` (safetensors only: never a pickle),
        freshly initialised head."""
        encoder = AutoModel.from_pretrained(str(path), use_safetensors=True)
        return cls(encoder, num_classes, dropout)

    @classmethod
    def from_encoder_config(
        cls,
        encoder_config: dict[str, Any],
        num_classes: int,
        bottleneck_reduction: int | None = None,
    ) -> MeanPoolClassifier:
        """Same architecture (adapters included) with random weights, to load a saved state
        dict into."""
        config = AutoConfig.for_model(**encoder_config)
        model = cls(AutoModel.from_config(config), num_classes)
        if bottleneck_reduction is not None:
            add_bottleneck_adapters(model, bottleneck_reduction)
        return model

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (batch, seq) → last layer's masked mean (batch, hidden)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (batch, seq) → logits (batch, num_classes)."""
        return self.head(self.dropout(self.pooled(input_ids, attention_mask)))


def add_bottleneck_adapters(model: MeanPoolClassifier, reduction: int) -> None:
    """Put a BottleneckAdapter after the feed-forward output of every encoder layer.

    Written by hand: AdapterHub's `adapters` pins an older transformers and peft has no
    bottleneck adapter. Each adapter is a submodule of its BERT layer's output block
    (`encoder.layer.{i}.output.adapter`, so it is saved with the encoder's weights and a
    checkpoint loader that expects a plain BERT refuses it rather than silently dropping it),
    applied by a forward hook to the output of `output.dense`: after the feed-forward
    projection, before dropout and the residual + LayerNorm. New adapters are trainable;
    freezing the rest is the caller's choice.
    """
    if model.bottleneck_reduction is not None:
        raise InvalidArgumentError("this model already has bottleneck adapters")
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    if layers is None or not all(
        isinstance(getattr(getattr(layer, "output", None), "dense", None), torch.nn.Linear)
        for layer in layers
    ):
        raise InvalidArgumentError(
            "bottleneck adapters need a BERT-style encoder (encoder.layer[i].output.dense), "
            f"got {type(model.encoder).__name__}"
        )
    hidden = int(model.encoder.config.hidden_size)
    if hidden // reduction < 1:
        raise InvalidArgumentError(
            f"bottleneck_reduction {reduction} leaves no adapter width for hidden size "
            f"{hidden}: use at most {hidden}"
        )
    for layer in layers:
        dense = layer.output.dense
        adapter = BottleneckAdapter(hidden, reduction).to(dense.weight.device, dense.weight.dtype)
        layer.output.add_module("adapter", adapter)
        dense.register_forward_hook(_adapter_hook(adapter))
    model.bottleneck_reduction = reduction


def _adapter_hook(adapter: BottleneckAdapter) -> Any:
    """A forward hook that passes the hooked module's output through `adapter`."""

    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, adapter(output))

    return hook


def _pad_batch(
    ids: Sequence[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one → input_ids, attention_mask (batch, seq)."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids.to(device), attention_mask.to(device)


def _proba_from_ids(
    model: torch.nn.Module,
    ids: Sequence[list[int]],
    num_classes: int,
    pad_id: int,
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """Softmax outputs, float32 (len(ids), num_classes), in eval mode, batched by length."""
    out = np.empty((len(ids), num_classes), dtype=np.float32)
    order = np.argsort([len(row) for row in ids], kind="stable")  # less padding per batch
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = _pad_batch([ids[i] for i in idx], pad_id, device)
            out[idx] = torch.softmax(model(input_ids, mask).float(), dim=-1).cpu().numpy()
    model.train(was_training)
    return out


def _score(labels: Sequence[int], predicted: np.ndarray, metric: str) -> float:
    if metric == "accuracy":
        return float(accuracy_score(labels, predicted))
    return float(f1_score(labels, predicted, average="macro", zero_division=0))


def _length_grouped_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch of shuffled index batches whose texts have similar lengths (less padding).

    lengths: (n,). Shuffle, sort windows of 16 batches by length, cut them into batches and
    shuffle the batch order; every index appears exactly once.
    """
    order = torch.randperm(len(lengths), generator=generator)
    window = batch_size * 16
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
        batches.extend(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise InvalidArgumentError("texts must be a list of strings, not a single string")
    if not all(isinstance(t, str) for t in texts):
        raise InvalidArgumentError("every text must be a string")


class Successor:
    """A fine-tuned MeanPoolClassifier with its tokenizer, ready to predict, evaluate and save.

    `train_seconds` is the wall time of the training loop, `epoch_losses` the mean training
    loss of each epoch run (LP epochs included; empty for a loaded successor), `history` the
    per-epoch record with validation scores and the kept epoch (None for a loaded successor),
    `label_names` the names it was loaded with (None for a fresh one).
    """

    def __init__(
        self,
        model: MeanPoolClassifier,
        tokenizer: PreTrainedTokenizerBase,
        num_classes: int,
        max_length: int,
        base_model: str,
        train_seconds: float = 0.0,
        epoch_losses: Sequence[float] = (),
        label_names: Sequence[str] | None = None,
        history: TrainingHistory | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.num_classes = num_classes
        self.max_length = max_length
        self.base_model = base_model
        self.train_seconds = train_seconds
        self.epoch_losses = tuple(epoch_losses)
        self.label_names = tuple(label_names) if label_names is not None else None
        self.history = history

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return next(self.model.parameters()).device

    def predict_proba(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Class probabilities, float32 (n, num_classes), rows in the order of `texts`."""
        _check_texts(texts)
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        if not texts:
            return np.empty((0, self.num_classes), dtype=np.float32)
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        pad_id = self.tokenizer.pad_token_id or 0
        self.model.eval()
        return _proba_from_ids(self.model, ids, self.num_classes, pad_id, self.device, batch_size)

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Sentence embeddings as the encoder service computes them: the fine-tuned encoder's
        masked mean pooling, L2-normalised → float32 (n, hidden), rows in the order of `texts`."""
        _check_texts(texts)
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        hidden = self.model.encoder.config.hidden_size
        out = np.empty((len(texts), hidden), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        pad_id = self.tokenizer.pad_token_id or 0
        order = np.argsort([len(row) for row in ids], kind="stable")
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                input_ids, mask = _pad_batch([ids[i] for i in idx], pad_id, self.device)
                pooled = self.model.pooled(input_ids, mask).float()
                out[idx] = F.normalize(pooled, p=2.0, dim=1).cpu().numpy()
        return out

    def predict(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Predicted class ids, int64 (n,)."""
        return self.predict_proba(texts, batch_size).argmax(axis=1).astype(np.int64)

    def evaluate(self, texts: Sequence[str], labels: Sequence[int]) -> dict[str, float]:
        """Accuracy and macro-F1 (over the classes present in labels or predictions)."""
        if len(texts) != len(labels) or not texts:
            raise InvalidArgumentError(
                f"evaluate needs as many labels as texts and at least one of each, "
                f"got {len(texts)} texts and {len(labels)} labels"
            )
        predicted = self.predict(texts)
        return {metric: _score(labels, predicted, metric) for metric in ("accuracy", "macro_f1")}

    def _names(self, label_names: Sequence[str] | None) -> list[str]:
        """`label_names`, else the names it was loaded with, else "0".."num_classes-1"."""
        names = label_names if label_names is not None else self.label_names
        if isinstance(names, str):
            raise InvalidArgumentError("label_names must be a list of names, not one string")
        names = list(names) if names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise InvalidArgumentError(
                f"label_names must name all {self.num_classes} classes, got {len(names)} names"
            )
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise InvalidArgumentError(
                f"label_names must be distinct, non-empty strings, got {names!r}"
            )
        return names

    def save(
        self, directory: str | Path, label_names: Sequence[str] | None = None, onnx: bool = False
    ) -> Path:
        """Write model.safetensors, config.json, labels.json and the tokenizer into
        `directory` (and model.onnx with `onnx=True`, see `export_onnx`).

        `label_names[i]` names class i (default: the names this successor was loaded with, or
        "0".."num_classes-1"); config.json and labels.json map index → name ("id2label").
        """
        names = self._names(label_names)
        out = _output_dir(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
        reduction = self.model.bottleneck_reduction
        config = {
            "format_version": FORMAT_VERSION,
            "num_classes": self.num_classes,
            "label_names": names,
            "id2label": _id2label(names),
            "base_model": self.base_model,
            "max_length": self.max_length,
            "train_seconds": self.train_seconds,
            "adapter": None
            if reduction is None
            else {"kind": "bottleneck", "reduction": reduction},
            "encoder_config": self.model.encoder.config.to_dict(),
        }
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        _write_labels(out, names)
        self.tokenizer.save_pretrained(str(out))
        if onnx:
            self.export_onnx(out, names)
        return out

    def export_onnx(self, directory: str | Path, label_names: Sequence[str] | None = None) -> Path:
        """Write model.onnx and labels.json into `directory` → the path of model.onnx.

        The graph takes `input_ids` and `attention_mask`, int64 (batch, sequence), both axes
        dynamic (tokenise with this successor's tokenizer, right padding, at most
        `max_length` tokens), and returns `logits`, float32 (batch, num_classes); softmax
        them for `predict_proba`'s numbers. Bottleneck adapters are part of the graph.
        Exported with the TorchScript exporter (the dynamo one needs onnxscript), opset 17.
        """
        names = self._names(label_names)
        out = _output_dir(directory)
        # A padded example, so the traced graph keeps the attention mask as a real input.
        example = self.tokenizer(
            ["an example sentence to trace the graph", "padding"],
            padding=True,
            return_tensors="pt",
        )
        args = (example["input_ids"].to(self.device), example["attention_mask"].to(self.device))
        dynamic = {0: "batch", 1: "sequence"}
        fd, tmp_name = tempfile.mkstemp(prefix=".model-", suffix=".onnx.tmp", dir=out)
        os.close(fd)
        tmp = Path(tmp_name)
        self.model.eval()
        try:
            with warnings.catch_warnings():
                # The TorchScript exporter warns about its own deprecation and about traced
                # constants that are fixed for an encoder-only model.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    self.model,
                    args,
                    str(tmp),
                    input_names=["input_ids", "attention_mask"],
                    output_names=["logits"],
                    dynamic_axes={
                        "input_ids": dynamic,
                        "attention_mask": dynamic,
                        "logits": {0: "batch"},
                    },
                    opset_version=ONNX_OPSET,
                    dynamo=False,
                )
            os.replace(tmp, out / ONNX_FILE)  # never a half-written model.onnx
        finally:
            tmp.unlink(missing_ok=True)
        _write_labels(out, names)
        return out / ONNX_FILE


def _id2label(names: Sequence[str]) -> dict[str, str]:
    return {str(i): name for i, name in enumerate(names)}


def _write_labels(out: Path, names: Sequence[str]) -> None:
    """labels.json: {"id2label": {"0": name, ...}, "label2id": {name: 0, ...}}."""
    labels = {"id2label": _id2label(names), "label2id": {n: i for i, n in enumerate(names)}}
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")


def _output_dir(directory: str | Path) -> Path:
    """`directory`, created if missing; a path that is a file is refused."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"{out} is a file, not a directory: pass a new or existing directory to write into"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_successor(directory: str | Path, device: str = "auto") -> Successor:
    """Read back a successor written by `Successor.save` (safetensors + JSON only)."""
    src = Path(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (src / name).is_file():
            raise NotFoundError(f"{src} holds no {name}: is it a directory written by save()?")
    config = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("format_version") != FORMAT_VERSION:
        raise InvalidArgumentError(
            f"{src / CONFIG_FILE} has format_version {config.get('format_version')!r}, "
            f"this proxal reads {FORMAT_VERSION}"
        )
    encoder_config = dict(config["encoder_config"])
    adapter = config.get("adapter")
    reduction = None
    if adapter is not None:
        if not isinstance(adapter, dict) or adapter.get("kind") != "bottleneck":
            raise InvalidArgumentError(
                f"{src / CONFIG_FILE} names an adapter this proxal does not know: {adapter!r} "
                '(it reads {"kind": "bottleneck", "reduction": N})'
            )
        reduction = int(adapter["reduction"])
    model = MeanPoolClassifier.from_encoder_config(
        encoder_config, config["num_classes"], bottleneck_reduction=reduction
    )
    model.load_state_dict(load_file(str(src / WEIGHTS_FILE)))
    return Successor(
        model=model.to(resolve_device(device)),
        tokenizer=AutoTokenizer.from_pretrained(str(src)),
        num_classes=config["num_classes"],
        max_length=config["max_length"],
        base_model=config["base_model"],
        train_seconds=config.get("train_seconds", 0.0),
        label_names=config["label_names"],
    )


def _check_training_set(texts: Sequence[str], labels: Sequence[int], num_classes: int) -> None:
    if num_classes < 2:
        raise InvalidArgumentError(f"num_classes must be >= 2, got {num_classes}")
    _check_texts(texts)
    if not texts:
        raise InvalidArgumentError("the training set is empty: label some texts first")
    if len(texts) != len(labels):
        raise InvalidArgumentError(
            f"got {len(texts)} texts but {len(labels)} labels: pass one label per text"
        )
    bad = [y for y in labels if isinstance(y, bool) or not isinstance(y, int | np.integer)]
    if bad:
        raise InvalidArgumentError(f"labels must be integer class ids, got {bad[0]!r}")
    out_of_range = [int(y) for y in labels if not 0 <= y < num_classes]
    if out_of_range:
        raise InvalidArgumentError(
            f"labels must be in [0, {num_classes}), got {out_of_range[0]} "
            f"({len(out_of_range)} out of range): map label names to ids 0..num_classes-1"
        )


def validation_split(
    labels: Sequence[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `fraction` of the positions, stratified by class → (train_idx, val_idx), sorted.

    The validation size is round(fraction * n), at least 1. Each class gives its proportional
    share (largest remainders get the leftovers) but always keeps one training example; raises
    InvalidArgumentError when that is impossible.
    """
    y = np.asarray([int(v) for v in labels], dtype=np.int64)
    n = len(y)
    n_val = max(1, round(fraction * n))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    capacity = int((counts - 1).sum())
    if n_val > capacity:
        raise InvalidArgumentError(
            f"validation_fraction={fraction} asks for {n_val} of {n} labels for validation, "
            f"but only {capacity} can be held out without leaving a class of the "
            f"{len(classes)} with no training example: label more texts or set "
            "validation_fraction=0 to train on all of them without early stopping"
        )
    ideal = n_val * counts / n
    quota = np.minimum(np.floor(ideal).astype(np.int64), counts - 1)
    remainder = ideal - np.floor(ideal)
    tiebreak = rng.permutation(len(classes))
    while quota.sum() < n_val:  # hand out the rest by largest remainder, where there is room
        room = quota < counts - 1
        order = np.lexsort((tiebreak, -remainder))
        for c in order[room[order]][: n_val - int(quota.sum())]:
            quota[c] += 1
        remainder = np.zeros_like(remainder)
    val: list[int] = []
    for c, k in zip(classes, quota, strict=True):
        members = np.flatnonzero(y == c)
        val.extend(rng.permutation(members)[:k].tolist())
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx


def _add_lora(model: MeanPoolClassifier, config: SuccessorConfig) -> Any:
    """Wrap the encoder in peft LoRA adapters (its own weights freeze) → the peft model."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - peft is a core dependency
        raise MissingDependencyError("method 'lora' needs peft: pip install peft") from exc
    names = {name.rsplit(".", 1)[-1] for name, _ in model.encoder.named_modules()}
    missing = [t for t in config.lora_target_modules if t not in names]
    if missing:
        raise InvalidArgumentError(
            f"lora_target_modules {missing} name no module of this encoder "
            "(BERT-style encoders call their attention projections 'query', 'key', 'value')"
        )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
    )
    peft_model = get_peft_model(model.encoder, lora)
    # The wrapper forwards input_ids / attention_mask to the BERT model it holds.
    model.encoder = cast(PreTrainedModel, peft_model)
    return peft_model


def _encoder_param_groups(
    model: MeanPoolClassifier, lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups for the encoder's trainable parameters: no decay on biases and LayerNorms."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, param in model.encoder.named_parameters():
        if param.requires_grad:
            (plain if name.endswith(no_decay) else decay).append(param)
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": plain, "lr": lr, "weight_decay": 0.0},
    ]


def _checkpoint(model_path: str | Path | None) -> tuple[Path, str]:
    """The encoder checkpoint directory and its name for records (default: MiniLM-L6)."""
    path = Path(model_path) if model_path is not None else minilm_l6_path()
    missing = [n for n in ("config.json", WEIGHTS_FILE) if not (path / n).is_file()]
    if missing:
        raise InvalidArgumentError(
            f"model {path} is not a Hugging Face encoder checkpoint directory (no "
            f"{' or '.join(missing)}): pass a directory with config.json, model.safetensors "
            "and the tokenizer files"
        )
    return path, MINILM_L6 if model_path is None else str(model_path)


@dataclass
class _Setup:
    """A model ready to train and its tokenised data: train rows (`ids`, `targets`,
    `lengths`, each (n_train,)) and held-out rows (`val_ids`, `val_labels`, maybe empty)."""

    model: MeanPoolClassifier
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    ids: list[list[int]]
    targets: torch.Tensor
    lengths: torch.Tensor
    val_ids: list[list[int]]
    val_labels: list[int]
    val_idx: np.ndarray
    lora_encoder: Any

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


def _prepare(
    texts: Sequence[str],
    labels: Sequence[int],
    num_classes: int,
    config: SuccessorConfig,
    path: Path,
) -> _Setup:
    """Split, seed, load the model (with LoRA or bottleneck adapters) and tokenise once."""
    if config.validation_fraction > 0:
        train_idx, val_idx = validation_split(labels, config.validation_fraction, config.seed)
    else:
        train_idx, val_idx = np.arange(len(texts)), np.empty(0, dtype=np.int64)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = MeanPoolClassifier.from_pretrained(path, num_classes, config.dropout).to(device)
    model.encoder.get_input_embeddings().requires_grad_(not config.freeze_word_embeddings)
    lora_encoder = _add_lora(model, config) if config.method == "lora" else None
    if config.method == "bottleneck":  # frozen encoder, trainable adapters
        model.encoder.requires_grad_(False)
        add_bottleneck_adapters(model, config.bottleneck_reduction)
    all_ids = tokenizer(list(texts), truncation=True, max_length=config.max_length)["input_ids"]
    ids = [all_ids[i] for i in train_idx]
    return _Setup(
        model=model,
        tokenizer=tokenizer,
        device=device,
        ids=ids,
        targets=torch.tensor([int(labels[i]) for i in train_idx], dtype=torch.long),
        lengths=torch.tensor([len(row) for row in ids]),
        val_ids=[all_ids[i] for i in val_idx],
        val_labels=[int(labels[i]) for i in val_idx],
        val_idx=val_idx,
        lora_encoder=lora_encoder,
    )


def _phases(model: MeanPoolClassifier, config: SuccessorConfig) -> list[_Phase]:
    """(phase, epochs, optimizer param groups): an "lp" phase (head only) first for lp_ft."""
    head_params = list(model.head.parameters())
    phases: list[_Phase] = []
    if config.method == "lp_ft":
        phases.append(("lp", config.lp_epochs, [{"params": head_params, "lr": config.head_lr}]))
        ft_groups = _encoder_param_groups(model, config.lr, config.weight_decay)
        ft_groups.append({"params": head_params, "lr": config.lr, "weight_decay": 0.0})
    else:
        encoder_lr = {"lora": config.lora_lr, "bottleneck": config.adapter_lr}.get(
            config.method, config.lr
        )
        ft_groups = _encoder_param_groups(model, encoder_lr, config.weight_decay)
        ft_groups.append({"params": head_params, "lr": config.head_lr, "weight_decay": 0.0})
    phases.append(("ft", config.epochs, ft_groups))
    return phases


class _Reporter:
    """Step progress to a tqdm bar (`progress` True), a callback, or nowhere."""

    def __init__(self, progress: Progress, total_steps: int, epochs: int) -> None:
        self.callback = progress if callable(progress) else None
        self.bar = tqdm(
            total=total_steps, desc="successor", unit="step", disable=progress is not True
        )
        self.total_steps = total_steps
        self.epochs = epochs

    def step(self, phase: str, epoch: int, step: int, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(phase=phase, epoch=epoch, loss=f"{loss:.3f}")
        if self.callback is not None:
            self.callback(TrainingStep(phase, epoch, self.epochs, step, self.total_steps, loss))

    def close(self) -> None:
        self.bar.close()


class _Trainer:
    """The training loop of `fine_tune_successor`: phases of epochs of steps, validation
    after each epoch, the best epoch's weights kept, patience and the time budget."""

    def __init__(
        self, setup: _Setup, config: SuccessorConfig, num_classes: int, progress: Progress
    ) -> None:
        self.s, self.config, self.num_classes = setup, config, num_classes
        self.phases = _phases(setup.model, config)
        # Everything that can change, for snapshots of the best epoch.
        self.tracked = {n: p for n, p in setup.model.named_parameters() if p.requires_grad}
        self.steps_per_epoch = math.ceil(len(setup.ids) / config.batch_size)
        self.total_steps = self.steps_per_epoch * sum(n for _, n, _ in self.phases)
        epochs = sum(n for _, n, _ in self.phases)
        self.reporter = _Reporter(progress, self.total_steps, epochs)
        self.shuffler = torch.Generator().manual_seed(config.seed)
        self.deadline = math.inf if config.time_budget_s is None else config.time_budget_s
        self.records: list[EpochRecord] = []
        self.best_epoch, self.best_key = 0, (-math.inf, -math.inf)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = self.step = 0
        self.stopped_early = self.out_of_time = False
        self.start = time.perf_counter()

    def run(self) -> None:
        """Train every phase (until patience or the time budget ends it), keep the best."""
        self.start = time.perf_counter()
        self.s.model.train()
        try:
            for phase, n_epochs, groups in self.phases:
                if self.out_of_time or self.stopped_early:
                    break
                self._phase(phase, n_epochs, groups)
        finally:
            self.reporter.close()
        if self.best_state is not None and self.best_epoch != len(self.records) - 1:
            with torch.no_grad():
                for name, p in self.tracked.items():
                    p.copy_(self.best_state[name])
        if not self.s.val_ids:
            self.best_epoch = len(self.records) - 1
        if self.out_of_time and self.step < self.total_steps:
            log.warning(
                "successor training stopped by its %.0f s time budget after %d of %d steps",
                self.deadline,
                self.step,
                self.total_steps,
            )

    def _phase(self, phase: str, n_epochs: int, groups: list[dict[str, Any]]) -> None:
        """One phase; the encoder is frozen for the LP phase only."""
        model = self.s.model
        encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
        if phase == "lp":
            for p in encoder_params:
                p.requires_grad_(False)
        optimizer = torch.optim.AdamW(groups)
        phase_steps = self.steps_per_epoch * n_epochs
        scheduler = get_linear_schedule_with_warmup(
            optimizer, round(self.config.warmup_ratio * phase_steps), phase_steps
        )
        self.stale = 0
        for epoch in range(n_epochs):
            train_loss = self._epoch(phase, optimizer, scheduler)
            self._validate(phase, train_loss)
            if self.out_of_time:
                break
            if phase == "ft" and self.stale >= self.config.patience and epoch < n_epochs - 1:
                self.stopped_early = True
                break
        if phase == "lp":
            for p in encoder_params:
                p.requires_grad_(True)

    def _epoch(self, phase: str, optimizer: torch.optim.Optimizer, scheduler: Any) -> float:
        """One epoch of length-grouped batches → its mean training loss."""
        s = self.s
        loss_sum, seen = 0.0, 0
        for idx in _length_grouped_batches(s.lengths, self.config.batch_size, self.shuffler):
            input_ids, mask = _pad_batch([s.ids[i] for i in idx], s.pad_id, s.device)
            loss = F.cross_entropy(s.model(input_ids, mask), s.targets[idx].to(s.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.tracked.values(), 1.0)
            optimizer.step()
            scheduler.step()
            self.step += 1
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            self.reporter.step(phase, len(self.records) + 1, self.step, loss.item())
            if time.perf_counter() - self.start > self.deadline:
                self.out_of_time = True
                break
        return loss_sum / seen

    def _validate(self, phase: str, train_loss: float) -> None:
        """Record the epoch; with held-out labels, score it and snapshot a new best."""
        s = self.s
        score = val_loss = None
        if s.val_ids:
            proba = _proba_from_ids(s.model, s.val_ids, self.num_classes, s.pad_id, s.device, 128)
            score = _score(s.val_labels, proba.argmax(axis=1), self.config.validation_metric)
            picked = proba[np.arange(len(s.val_labels)), s.val_labels]
            val_loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
        self.records.append(EpochRecord(phase, train_loss, score, val_loss))
        if score is None or val_loss is None:
            return
        # Higher score wins; on a tie (a saturated metric) lower loss does.
        if (score, -val_loss) > self.best_key:
            self.best_epoch, self.best_key, self.stale = (
                len(self.records) - 1,
                (score, -val_loss),
                0,
            )
            self.best_state = {k: p.detach().clone() for k, p in self.tracked.items()}
        else:
            self.stale += 1

    def history(self) -> TrainingHistory:
        return TrainingHistory(
            method=self.config.method,
            validation_metric=self.config.validation_metric,
            epochs=tuple(self.records),
            best_epoch=self.best_epoch,
            validation_indices=tuple(int(i) for i in self.s.val_idx),
            stopped_early=self.stopped_early,
        )


def fine_tune_successor(
    texts: Sequence[str],
    labels: Sequence[int],
    num_classes: int,
    config: SuccessorConfig | None = None,
    model_path: str | Path | None = None,
    progress: Progress = True,
) -> Successor:
    """Fine-tune a successor on (texts, labels); labels are class ids in [0, num_classes).

    `config.method` picks full fine-tuning, LP-FT, LoRA or bottleneck adapters; with
    `config.validation_fraction` > 0 a stratified validation split drives early stopping and
    the best epoch is kept (`Successor.history` records it). `model_path` defaults to the
    bundled all-MiniLM-L6-v2. `progress`: True for a tqdm bar, a callable to receive a
    `TrainingStep` after every optimizer step, False for silence. Texts are tokenised once;
    each epoch's batches group texts of similar length, so little compute goes to padding.
    Runs are reproducible for a given seed on the same device and thread count.
    """
    config = config or SuccessorConfig()
    _check_training_set(texts, labels, num_classes)
    resolve_device(config.device)
    path, base_model = _checkpoint(model_path)
    setup = _prepare(texts, labels, num_classes, config, path)
    log.info("successor: %s fine-tune on %s", config.method, setup.device)
    trainer = _Trainer(setup, config, num_classes, progress)
    trainer.run()
    model = setup.model
    if setup.lora_encoder is not None:  # fold the adapters in: a plain encoder, one safetensors
        model.encoder = cast(PreTrainedModel, setup.lora_encoder.merge_and_unload())
    history = trainer.history()
    return Successor(
        model=model,
        tokenizer=setup.tokenizer,
        num_classes=num_classes,
        max_length=config.max_length,
        base_model=base_model,
        train_seconds=time.perf_counter() - trainer.start,
        epoch_losses=[r.train_loss for r in history.epochs],
        history=history,
    )
