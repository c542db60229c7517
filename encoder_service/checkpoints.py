"""Fine-tuned encoder checkpoints, resolved to Hugging Face model directories to embed with.

A checkpoint is named by a path relative to the server's checkpoint root and is one of:

- ``hf``: a Hugging Face model directory (``config.json`` + ``model.safetensors``) of a BERT
  encoder with the base model's hidden size, used in place (without tokenizer files the
  encoder falls back to MiniLM-L6's);
- ``safetensors``: a state dict of the base MiniLM-L6 encoder, bare or under a prefix such
  as ``bert.``/``encoder.``/``model.`` (head keys are ignored), given as a ``.safetensors``
  file or as a proxal successor directory (``config.json`` with ``encoder_config``);
- ``lora``: a PEFT adapter directory (``adapter_config.json`` +
  ``adapter_model.safetensors``) merged into the base MiniLM-L6.

Only safetensors and JSON are read: pickled weights are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from proxal.runtime.models import MINILM_L6, minilm_l6_path
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

CheckpointKind = Literal["hf", "safetensors", "lora"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_WEIGHTS_FILE = "pytorch_model.bin"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_ADAPTER_FILE = "adapter_model.bin"
EXPECTED_MODEL_TYPE = "bert"
WORD_EMBEDDINGS_KEY = "embeddings.word_embeddings.weight"
# Top-level modules of a bare BertModel; a key outside them belongs to a head.
_BERT_MODULES = ("embeddings.", "encoder.", "pooler.")
# Non-persistent buffers that older checkpoints saved; never compared.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_MAX_LISTED = 5

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint as a loadable HF model directory, with the hash of its weight files."""

    model_dir: Path
    checkpoint_hash: str
    kind: CheckpointKind


def resolve_checkpoint(spec: str, root: Path, work_dir: Path) -> ResolvedCheckpoint:
    """Validate the checkpoint at `root / spec` and return it as a HF model directory.

    Merged or converted models are saved under `work_dir`. Raises InvalidArgumentError
    for paths outside `root`, NotFoundError for missing ones and FailedPreconditionError
    for checkpoints that are not a MiniLM-L6-compatible encoder.
    """
    root = root.resolve()
    path = _locate(spec, root)
    if path.is_dir():
        _check_links(path, root, spec)
        if (path / ADAPTER_CONFIG_FILE).is_file():
            return _merge_adapter(path, spec, work_dir)
        _require_safetensors(path, spec, WEIGHTS_FILE, PICKLE_WEIGHTS_FILE)
        config = _read_json(path / CONFIG_FILE, spec)
        if "encoder_config" in config:  # a proxal successor: its encoder under `encoder.`
            _check_encoder_config(config["encoder_config"], spec)
            return _convert_state_dict(path / WEIGHTS_FILE, spec, work_dir)
        return _hf_directory(path, config, spec)
    if path.suffix == ".safetensors":
        return _convert_state_dict(path, spec, work_dir)
    if path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        raise FailedPreconditionError(
            f"checkpoint {spec!r} is a pickled torch file, which this server never loads: "
            "convert it to safetensors (safetensors.torch.save_file)"
        )
    raise FailedPreconditionError(
        f"checkpoint {spec!r} is neither a directory nor a .safetensors file"
    )


def _locate(spec: str, root: Path) -> Path:
    """`root / spec`, refusing absolute paths and paths (or symlinks) that leave `root`."""
    if not spec:
        raise InvalidArgumentError("checkpoint is required: a path under the checkpoint root")
    if "\0" in spec or Path(spec).is_absolute():
        raise InvalidArgumentError(
            f"checkpoint {spec!r} must be a relative path under the checkpoint root"
        )
    try:
        path = (root / spec).resolve()
        if not path.is_relative_to(root):
            raise InvalidArgumentError(f"checkpoint {spec!r} points outside the checkpoint root")
        if not path.exists():
            raise NotFoundError(f"checkpoint {spec!r} not found under the checkpoint root")
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop (RuntimeError)
        raise InvalidArgumentError(
            f"checkpoint {spec!r} is not a usable path under the checkpoint root: "
            f"{exc.strerror if isinstance(exc, OSError) else exc}"
        ) from exc
    return path


def _check_links(directory: Path, root: Path, spec: str) -> None:
    """Refuse a directory with a symlink (at any depth) that points outside `root`."""
    for parent, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            entry = Path(parent, name)
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise InvalidArgumentError(
                    f"checkpoint {spec!r} links {entry.relative_to(directory)} to outside "
                    "the checkpoint root"
                )


def _require_safetensors(directory: Path, spec: str, weights: str, pickled: str) -> None:
    if (directory / weights).is_file():
        return
    if (directory / pickled).is_file():
        raise FailedPreconditionError(
            f"checkpoint {spec!r} holds only {pickled} (pickle), which this server never "
            f"loads: re-save it as {weights} (save_pretrained writes safetensors)"
        )
    raise FailedPreconditionError(
        f"checkpoint {spec!r} is not a model directory: expected {CONFIG_FILE} + {WEIGHTS_FILE} "
        f"(a Hugging Face model) or {ADAPTER_CONFIG_FILE} + {ADAPTER_WEIGHTS_FILE} (an adapter)"
    )


def _read_json(path: Path, spec: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FailedPreconditionError(f"checkpoint {spec!r} has no {path.name}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FailedPreconditionError(
            f"checkpoint {spec!r}: {path.name} is not JSON: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise FailedPreconditionError(f"checkpoint {spec!r}: {path.name} is not a JSON object")
    return data


def _base_model() -> PreTrainedModel:
    model: PreTrainedModel = AutoModel.from_pretrained(minilm_l6_path())
    return model.eval()


def _check_encoder_config(config: Mapping[str, Any], spec: str) -> None:
    """A BERT encoder with the base model's hidden size, else FailedPreconditionError."""
    base = AutoConfig.from_pretrained(minilm_l6_path())
    model_type = config.get("model_type")
    if model_type != EXPECTED_MODEL_TYPE:
        raise FailedPreconditionError(
            f"checkpoint {spec!r} is a {model_type!r} model; expected a {EXPECTED_MODEL_TYPE!r} "
            f"encoder compatible with {MINILM_L6}"
        )
    hidden = config.get("hidden_size")
    if hidden != base.hidden_size:
        raise FailedPreconditionError(
            f"checkpoint {spec!r} has hidden_size {hidden}; expected {base.hidden_size}, the "
            f"dimension of {MINILM_L6} embeddings"
        )


def _hf_directory(path: Path, config: Mapping[str, Any], spec: str) -> ResolvedCheckpoint:
    """A HF directory, used in place once its config and weight shapes are validated."""
    _check_encoder_config(config, spec)
    weights = path / WEIGHTS_FILE
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            expected = AutoModel.from_config(AutoConfig.from_pretrained(path)).state_dict()
    except (ValueError, TypeError, KeyError) as exc:
        raise FailedPreconditionError(
            f"checkpoint {spec!r}: {CONFIG_FILE} is not a valid BERT configuration: {exc}"
        ) from exc
    _encoder_state_keys(_file_shapes(weights), _shapes(expected), spec)
    return ResolvedCheckpoint(path, _sha256([weights]), "hf")


def _convert_state_dict(weights: Path, spec: str, work_dir: Path) -> ResolvedCheckpoint:
    """Load a (prefixed) encoder state dict into MiniLM-L6 and save it as a HF directory."""
    stored = _file_shapes(weights)  # an unreadable file fails before the model loads
    model = _base_model()
    expected = model.state_dict()
    keys = _encoder_state_keys(stored, _shapes(expected), spec)
    state = load_file(str(weights))
    model.load_state_dict({name: state[key] for name, key in keys.items()}, strict=False)
    return ResolvedCheckpoint(_save(model, work_dir), _sha256([weights]), "safetensors")


def _merge_adapter(path: Path, spec: str, work_dir: Path) -> ResolvedCheckpoint:
    """Merge a PEFT adapter into the base MiniLM-L6 and save the result as a HF directory."""
    _require_safetensors(path, spec, ADAPTER_WEIGHTS_FILE, PICKLE_ADAPTER_FILE)
    adapter_config = _read_json(path / ADAPTER_CONFIG_FILE, spec)
    trained_on = adapter_config.get("base_model_name_or_path") or "an unnamed base model"
    weights = path / ADAPTER_WEIGHTS_FILE
    try:
        model = PeftModel.from_pretrained(_base_model(), str(path), is_trainable=False)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise FailedPreconditionError(
            f"adapter {spec!r} (trained on {trained_on}) does not fit {MINILM_L6}: {exc}"
        ) from exc
    loaded = _shapes(get_peft_model_state_dict(model))
    stored = _file_shapes(weights)
    if loaded != stored:
        problems = _differences(stored, loaded)
        raise FailedPreconditionError(
            f"adapter {spec!r} (trained on {trained_on}) does not fit {MINILM_L6}: {problems}"
        )
    try:
        merged: PreTrainedModel = model.merge_and_unload()
    except (AttributeError, ValueError) as exc:  # a tuner type without merging
        raise FailedPreconditionError(f"adapter {spec!r} cannot be merged: {exc}") from exc
    digest = _sha256([weights, path / ADAPTER_CONFIG_FILE])
    return ResolvedCheckpoint(_save(merged, work_dir), digest, "lora")


def _save(model: PreTrainedModel, work_dir: Path) -> Path:
    """`model` plus the base tokenizer as a HF directory `work_dir / "model"`."""
    out = work_dir / "model"
    model.save_pretrained(out)  # safetensors: the only format transformers 5 writes
    AutoTokenizer.from_pretrained(minilm_l6_path()).save_pretrained(out)
    return out


def _encoder_state_keys(stored: Shapes, expected: Shapes, spec: str) -> dict[str, str]:
    """Map each expected parameter name to its key in `stored`, checking strictly.

    The encoder is found by its word embeddings key, so any prefix works; keys outside the
    encoder (heads) are ignored. Missing or unexpected encoder keys and shape mismatches
    raise FailedPreconditionError; only the pooler may be missing (mean pooling skips it).
    """
    prefixes = sorted(
        key.removesuffix(WORD_EMBEDDINGS_KEY) for key in stored if key.endswith(WORD_EMBEDDINGS_KEY)
    )
    if len(prefixes) != 1:
        found = "no key" if not prefixes else f"{len(prefixes)} keys"
        raise FailedPreconditionError(
            f"checkpoint {spec!r} is not one BERT encoder: {found} end in "
            f"{WORD_EMBEDDINGS_KEY!r} (keys look like {_listed(stored)})"
        )
    prefix = prefixes[0]
    encoder = {
        key.removeprefix(prefix): key
        for key in stored
        if key.startswith(prefix) and (prefix or key.startswith(_BERT_MODULES))
    }
    for buffer in _BUFFERS:
        encoder.pop(buffer, None)
    problems = _differences({name: stored[key] for name, key in encoder.items()}, expected)
    if problems:
        raise FailedPreconditionError(
            f"checkpoint {spec!r} does not fit {MINILM_L6} "
            f"(encoder keys under prefix {prefix!r}): {problems}"
        )
    return encoder


def _differences(stored: Shapes, expected: Shapes) -> str:
    """Missing keys (unless pooler-only), unexpected keys and shape mismatches, in words."""
    parts = []
    missing = [k for k in expected if k not in stored and not k.startswith("pooler.")]
    if missing:
        parts.append(f"{len(missing)} missing keys ({_listed(missing)})")
    unexpected = [k for k in stored if k not in expected]
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
    mismatched = [
        f"{k} {list(stored[k])} vs expected {list(expected[k])}"
        for k in stored
        if k in expected and stored[k] != expected[k]
    ]
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches ({_listed(mismatched)})")
    return "; ".join(parts)


def _listed(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (", ..." if len(items) > _MAX_LISTED else "")


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a safetensors file, read from its header only."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise FailedPreconditionError(
            f"{path.name} is not a readable safetensors file: {exc}"
        ) from exc


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def _sha256(files: Iterable[Path]) -> str:
    """SHA-256 over the bytes of `files`, in order."""
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
