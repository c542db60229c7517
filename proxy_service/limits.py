"""The proxy's per-request limits: how much work and memory one request may ask for.

Checked in the servicer before anything is unpacked or loaded; each is a service flag
(see `proxal.proxy_service.settings`) and is listed in docs/hardening.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxal.runtime.errors import ResourceExhaustedError

DEFAULT_MAX_K = 10_000
# Probabilities are (rows, classes) float32: BADGE holds them for every candidate.
DEFAULT_MAX_CLASSES = 1_000
DEFAULT_MAX_IDS = 2_000_000  # per packed id array (16 MB); pools are benchmarked up to 1M


@dataclass(frozen=True)
class RequestLimits:
    """Upper bounds on k, training.num_classes and the length of every id array."""

    max_k: int = DEFAULT_MAX_K
    max_classes: int = DEFAULT_MAX_CLASSES
    max_ids: int = DEFAULT_MAX_IDS

    def check_k(self, k: int) -> None:
        if k > self.max_k:
            raise ResourceExhaustedError(
                f"k={k} is over the server's limit of {self.max_k} (--max-k); select in "
                "smaller batches"
            )

    def check_classes(self, num_classes: int) -> None:
        if num_classes > self.max_classes:
            raise ResourceExhaustedError(
                f"training.num_classes={num_classes} is over the server's limit of "
                f"{self.max_classes} (--max-classes)"
            )

    def check_ids(self, field: str, data: bytes, itemsize: int = 8) -> None:
        """`data` packs values of `itemsize` bytes; at most max_ids of them."""
        count = len(data) // itemsize
        if count > self.max_ids:
            raise ResourceExhaustedError(
                f"{field} holds {count} values, over the server's limit of {self.max_ids} "
                "per array (--max-ids); split the request"
            )
