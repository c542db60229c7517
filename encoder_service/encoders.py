"""Sentence encoders: texts -> L2-normalised, mean-pooled embeddings (torch or ONNX Runtime).

Both backends tokenize the same way (truncating to `max_length` tokens and counting the
texts that were cut) and pool the same way, so their vectors agree to float precision.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from transformers import AutoModel, AutoTokenizer

from proxal_runtime.errors import InvalidArgumentError
from proxal_runtime.models import MINILM_L6, minilm_l6_path

TORCH = "torch"
ONNX = "onnx"
BACKENDS = (TORCH, ONNX)
DEFAULT_MODEL = MINILM_L6
MIN_MAX_LENGTH = 3  # [CLS] + one token + [SEP]
ONNX_OPSET = 17
POOLING = "mean"


@dataclass(frozen=True)
class ModelSpec:
    """A model clients can ask for by `name`; `path()` is its local checkpoint directory."""

    name: str
    dim: int
    max_positions: int
    path: Callable[[], Path]


MODELS: dict[str, ModelSpec] = {
    MINILM_L6: ModelSpec(name=MINILM_L6, dim=384, max_positions=512, path=minilm_l6_path),
}


class Encoder(Protocol):
    """Embeds texts with one model, backend and truncation length."""

    model_id: str
    backend: str
    dim: int
    max_length: int
    checkpoint_hash: str

    def encode(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], int]:
        """texts (n,) -> (unit-norm vectors (n, dim) float32, number of texts truncated)."""
        ...


@cache
def weights_sha256(model_dir: Path) -> str:
    """SHA-256 of the model's weights file: identifies the exact checkpoint."""
    with (model_dir / "model.safetensors").open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _load_tokenizer(model_dir: Path, max_length: int) -> Tokenizer:
    """The fast tokenizer, truncating to `max_length` tokens and padding to the longest."""
    auto = AutoTokenizer.from_pretrained(model_dir)
    tokenizer: Tokenizer = auto.backend_tokenizer
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=auto.pad_token_id, pad_token=auto.pad_token)
    return tokenizer


def mean_pool(
    hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """hidden (n, seq, dim), mask (n, seq) -> L2-normalised mean over unmasked tokens (n, dim)."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class _MeanPoolingEncoder(ABC):
    """Tokenization and truncation counting shared by the backends; subclasses run the model."""

    def __init__(self, spec: ModelSpec, max_length: int, backend: str):
        model_dir = spec.path()
        self.model_id = spec.name
        self.backend = backend
        self.dim = spec.dim
        self.max_length = max_length
        self.checkpoint_hash = weights_sha256(model_dir)
        self._model_dir = model_dir
        self._tokenizer = _load_tokenizer(model_dir, max_length)
        self._lock = threading.Lock()  # one batch at a time per encoder

    def encode(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], int]:
        """texts (n,) -> (unit-norm vectors (n, dim) float32, number of texts truncated)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), 0
        encodings = self._tokenizer.encode_batch(list(texts))
        truncated = sum(1 for e in encodings if e.overflowing)
        input_ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        with self._lock:
            return self._embed(input_ids, attention_mask), truncated

    @abstractmethod
    def _embed(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """input_ids, attention_mask (n, seq) -> unit-norm vectors (n, dim)."""


class TorchEncoder(_MeanPoolingEncoder):
    """The Hugging Face model in PyTorch, on CUDA when available."""

    def __init__(self, spec: ModelSpec, max_length: int):
        super().__init__(spec, max_length, TORCH)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._model = AutoModel.from_pretrained(self._model_dir).to(self.device).eval()

    def _embed(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return vectors.float().cpu().numpy()


class _LastHiddenState(torch.nn.Module):
    """(input_ids, attention_mask) -> last_hidden_state: the graph exported to ONNX."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _export_onnx(model_dir: Path, target: Path) -> None:
    model = AutoModel.from_pretrained(model_dir).eval()
    # A padded example, so the traced graph keeps the attention mask as a real input.
    example = AutoTokenizer.from_pretrained(model_dir)(
        ["an example sentence to trace", "padding"], padding=True, return_tensors="pt"
    )
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # The TorchScript exporter (the dynamo one needs onnxscript) warns about its own
        # deprecation and about tracing constants that are fixed for an encoder-only model.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LastHiddenState(model),
            (example["input_ids"], example["attention_mask"]),
            str(target),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                "last_hidden_state": dynamic,
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def onnx_model_path(spec: ModelSpec, cache_dir: Path) -> Path:
    """The cached ONNX export of `spec` in `cache_dir`, exporting it first if missing.

    The export is written under a temporary name and renamed into place, so a crash never
    leaves a partial file where a later run would load it.
    """
    model_dir = spec.path()
    digest = weights_sha256(model_dir)[:16]
    path = cache_dir / f"{spec.name}-{digest}-opset{ONNX_OPSET}.onnx"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=cache_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export_onnx(model_dir, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxEncoder(_MeanPoolingEncoder):
    """The same model exported to ONNX, run by ONNX Runtime (CUDA first when available)."""

    def __init__(self, spec: ModelSpec, max_length: int, cache_dir: Path):
        super().__init__(spec, max_length, ONNX)
        self.onnx_path = onnx_model_path(spec, cache_dir)
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self._session = ort.InferenceSession(str(self.onnx_path), providers=providers)

    def _embed(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        (hidden,) = self._session.run(
            ["last_hidden_state"], {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        return mean_pool(np.asarray(hidden, dtype=np.float32), attention_mask)


def build_encoder(model: str, backend: str, max_length: int, cache_dir: Path) -> Encoder:
    """Load `model` on `backend`; InvalidArgumentError names the valid choices."""
    spec = MODELS.get(model)
    if spec is None:
        raise InvalidArgumentError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if not MIN_MAX_LENGTH <= max_length <= spec.max_positions:
        raise InvalidArgumentError(
            f"max_length {max_length} is out of range for {model}: use "
            f"{MIN_MAX_LENGTH}..{spec.max_positions} tokens"
        )
    if backend == TORCH:
        return TorchEncoder(spec, max_length)
    return OnnxEncoder(spec, max_length, cache_dir)


class EncoderCache:
    """Loaded encoders by (model, backend, max_length), keeping the `capacity` most recent."""

    def __init__(self, onnx_cache_dir: Path, capacity: int = 4):
        self.onnx_cache_dir = onnx_cache_dir
        self.capacity = capacity
        self._encoders: OrderedDict[tuple[str, str, int], Encoder] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, backend: str, max_length: int) -> Encoder:
        """The cached encoder for this key, loading (and validating) it on first use."""
        key = (model, backend, max_length)
        with self._lock:
            encoder = self._encoders.get(key)
            if encoder is None:
                encoder = build_encoder(model, backend, max_length, self.onnx_cache_dir)
                self._encoders[key] = encoder
                while len(self._encoders) > self.capacity:
                    self._encoders.popitem(last=False)
            self._encoders.move_to_end(key)
            return encoder
