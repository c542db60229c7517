"""The store's record types: what its tables hold, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Statuses of an embedding run in ``embedding_versions``.
COMPLETE = "complete"
RUNNING = "running"
FAILED = "failed"
DELETED = "deleted"


def utcnow() -> str:
    """Now in UTC, ISO 8601 with microseconds (the store's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class EncoderInfo:
    """What produced an embedding version."""

    model_id: str
    backend: str
    dim: int
    max_length: int
    pooling: str = "mean"
    checkpoint_hash: str = ""
    precision: str = "fp32"
    source: str = "pretrained"  # or "checkpoint": a fine-tuned encoder
    label_count: int = 0  # labels the checkpoint was fine-tuned on
    label_set_hash: str = ""  # sha256 of the sorted (id, label) pairs


@dataclass(frozen=True)
class VersionInfo:
    """One embedding run of a pool, as recorded in ``embedding_versions``."""

    pool: str
    version: str
    table_version: int
    model_id: str
    checkpoint_hash: str
    backend: str
    pooling: str
    dim: int
    max_length: int
    status: str
    row_count: int
    truncated_texts: int
    created_at: str
    precision: str = "fp32"
    pinned: bool = False
    source: str = "pretrained"
    label_count: int = 0
    label_set_hash: str = ""

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE


@dataclass(frozen=True)
class PoolInfo:
    """A pool's size, rows per split and label classes (`Store.pool_info`)."""

    pool: str
    rows: int
    splits: dict[str, int]
    classes: list[str]


@dataclass(frozen=True)
class SessionRecord:
    """One AL session, as recorded in ``sessions``."""

    session: str
    pool: str
    embedding_version: str
    strategy: str
    batch_size: int
    seed: int
    split: str = "train"
    config: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""


@dataclass(frozen=True)
class RoundRecord:
    """One AL round of a session, as recorded in ``rounds``."""

    session: str
    round: int
    strategy: str
    embedding_version: str
    selected_ids: list[int]
    labels_total: int
    proxy_spec: dict[str, Any] = field(default_factory=dict)
    scores_summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: str = ""


@dataclass(frozen=True)
class VersionComparison:
    """How two embedding versions of a pool relate (`Store.compare_versions`)."""

    rows_a: int
    rows_b: int
    common_ids: int
    sampled: int
    mean_cosine: float  # of the same id's vectors over the sample; NaN if dims differ
    same_dim: bool


@dataclass(frozen=True)
class CleanupResult:
    """Versions `Store.cleanup_versions` removed and the complete ones it kept."""

    removed: list[str]
    kept: list[str]


@dataclass(frozen=True)
class JobRecord:
    """A successor-training job as recorded in the session database: its request and last
    progress event (JSON-ready dicts), the process running it and when it last reported."""

    job_id: str
    session: str
    state: str
    request: dict[str, Any]
    last_event: dict[str, Any]
    model_uri: str = ""
    owner: str = ""
    created_at: str = ""
    updated_at: float = 0.0  # Unix seconds
