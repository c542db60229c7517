"""What a successor fine-tune is asked to do: `SuccessorConfig` and the device it runs on.

Kept apart from `successor.training` (which imports torch and transformers) so that
commands can read the defaults without loading them; torch is imported only to resolve a
device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from proxal.runtime.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

METHODS = ("full", "lp_ft", "lora", "bottleneck")
AUTO = "auto"  # a successor job's method: ASVP's LP-FT/FT rule picks lp_ft or full
JOB_METHODS = (*METHODS, AUTO)
VALIDATION_METRICS = ("macro_f1", "accuracy")


@dataclass(frozen=True)
class TrainingStep:
    """One optimizer step of a fine-tune, for progress reports.

    `phase` is "lp" or "ft" (PLASM prefixes "teacher/" or "successor/"); `epoch` counts
    from 1 across phases up to `epochs` (planned); `step` from 1 up to `total_steps`;
    `loss` is the step's batch cross-entropy.
    """

    phase: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float


# How a fine-tune reports progress: True (a tqdm bar), False (nothing), or a callback.
Progress: TypeAlias = bool | Callable[[TrainingStep], None]


@dataclass(frozen=True)
class SuccessorConfig:
    """Hyper-parameters of one fine-tuning run.

    `lr` is for the pretrained encoder, `head_lr` for the new linear head (it starts from
    random weights, so it wants a much larger step). `freeze_word_embeddings` keeps the
    30k x 384 token embedding table fixed: ~12% faster on CPU and no worse on Banking77, since
    a few hundred labelled texts touch few of its rows. `time_budget_s` stops training after
    the step that crosses it (None: no limit). `device` is "auto" (cuda if available, else
    cpu), "cpu", "cuda" or "cuda:N".

    `method` picks what is trained:

    - "full": encoder and head together from the first step.
    - "lp_ft": linear probing, then fine-tuning (Kumar et al., 2022): `lp_epochs` epochs train
      only the head (at `head_lr`) on the frozen encoder, then `epochs` epochs train everything
      with a fresh warmup; in that second phase the already-fitted head uses `lr` too.
    - "lora": LoRA adapters (peft) of rank `lora_r` on `lora_target_modules` of the encoder
      (BERT-style "query" and "value" projections), trained at `lora_lr`; the encoder's own
      weights stay frozen, the head is trained fully at `head_lr`. The adapters are merged into
      the encoder once training ends, so the saved successor is an ordinary one.
    - "bottleneck": sequential bottleneck adapters (Houlsby et al., 2019; the Pfeiffer
      placement: one per layer, after the feed-forward output) of width
      hidden / `bottleneck_reduction`, trained at `adapter_lr` with the head at `head_lr`;
      the encoder's own weights stay frozen. They cannot be merged into the weights, so the
      saved successor records them and `load_successor` rebuilds them.

    Early stopping: `validation_fraction` of the labels (stratified by class, at least one
    text, never a class's last training example) is held out; after every epoch the model is
    scored on it by `validation_metric`, training stops after `patience` epochs without
    improvement (ties on the metric go to the lower validation cross-entropy), and the best
    epoch's weights are kept. 0 (the default, which the demo's figures were measured
    with) disables it: all labels train and the last epoch is kept.
    """

    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-4
    head_lr: float = 3e-3
    weight_decay: float = 0.01
    max_length: int = 64
    seed: int = 0
    warmup_ratio: float = 0.1
    dropout: float = 0.1
    freeze_word_embeddings: bool = True
    device: str = "auto"
    time_budget_s: float | None = None
    method: str = "full"
    lp_epochs: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_lr: float = 1e-3
    lora_target_modules: tuple[str, ...] = ("query", "value")
    bottleneck_reduction: int = 16
    adapter_lr: float = 1e-3
    validation_fraction: float = 0.0
    validation_metric: str = "macro_f1"
    patience: int = 2

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InvalidArgumentError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and self.head_lr > 0):
            raise InvalidArgumentError(
                f"lr and head_lr must be > 0, got lr={self.lr}, head_lr={self.head_lr}"
            )
        if self.weight_decay < 0:
            raise InvalidArgumentError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 2 <= self.max_length <= 512:
            raise InvalidArgumentError(f"max_length must be in [2, 512], got {self.max_length}")
        if not 0 <= self.warmup_ratio < 1:
            raise InvalidArgumentError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.dropout < 1:
            raise InvalidArgumentError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise InvalidArgumentError(
                f"time_budget_s must be > 0 or None, got {self.time_budget_s}"
            )
        resolve_device(self.device)
        if self.method not in METHODS:
            raise InvalidArgumentError(
                f"method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.method == "lp_ft" and self.lp_epochs < 1:
            raise InvalidArgumentError(
                f"lp_epochs must be >= 1 for method 'lp_ft', got {self.lp_epochs}"
            )
        if self.method == "lora":
            if self.lora_r < 1:
                raise InvalidArgumentError(f"lora_r must be >= 1, got {self.lora_r}")
            if not self.lora_alpha > 0:
                raise InvalidArgumentError(f"lora_alpha must be > 0, got {self.lora_alpha}")
            if not 0 <= self.lora_dropout < 1:
                raise InvalidArgumentError(
                    f"lora_dropout must be in [0, 1), got {self.lora_dropout}"
                )
            if not self.lora_lr > 0:
                raise InvalidArgumentError(f"lora_lr must be > 0, got {self.lora_lr}")
            targets = self.lora_target_modules
            if (
                isinstance(targets, str)
                or not targets
                or not all(isinstance(t, str) and t for t in targets)
            ):
                raise InvalidArgumentError(
                    "lora_target_modules must be a non-empty tuple of module names such as "
                    f"('query', 'value'), got {targets!r}"
                )
        if self.method == "bottleneck":
            if isinstance(self.bottleneck_reduction, bool) or not (
                isinstance(self.bottleneck_reduction, int) and self.bottleneck_reduction >= 1
            ):
                raise InvalidArgumentError(
                    "bottleneck_reduction must be an integer >= 1 (the adapter width is "
                    f"hidden_size // bottleneck_reduction), got {self.bottleneck_reduction!r}"
                )
            if not self.adapter_lr > 0:
                raise InvalidArgumentError(f"adapter_lr must be > 0, got {self.adapter_lr}")
        if not 0 <= self.validation_fraction < 1:
            raise InvalidArgumentError(
                f"validation_fraction must be in [0, 1) (0 disables early stopping), "
                f"got {self.validation_fraction}"
            )
        if self.validation_metric not in VALIDATION_METRICS:
            raise InvalidArgumentError(
                f"validation_metric must be one of {', '.join(VALIDATION_METRICS)}, "
                f"got {self.validation_metric!r}"
            )
        if self.patience < 1:
            raise InvalidArgumentError(f"patience must be >= 1, got {self.patience}")


def resolve_device(device: str) -> torch.device:
    """Map "auto" to cuda when available, else cpu; reject unknown or unavailable devices."""
    import torch  # here, so the config can be built and read without torch loaded

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(
            f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}"
        ) from exc
    if resolved.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} asked for, but CUDA is not available")
    return resolved
