"""Embedding a whole pool into a new, atomically committed embedding version."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from encoder_service.encoders import POOLING, Encoder
from proxal_runtime.errors import InvalidArgumentError
from proxal_store import EncoderInfo, Store, VersionInfo

MAX_BATCH_SIZE = 1024
WRITE_CHUNK_ROWS = 4096
PROGRESS_INTERVAL_S = 0.2


@dataclass(frozen=True)
class Progress:
    rows_done: int
    rows_total: int
    rows_per_second: float
    eta_seconds: float


ProgressCallback = Callable[[Progress], None]


def check_batch_size(batch_size: int) -> int:
    """Return `batch_size` if it is in 1..MAX_BATCH_SIZE, else raise InvalidArgumentError."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidArgumentError(
            f"batch_size {batch_size} is out of range: use 1..{MAX_BATCH_SIZE}"
        )
    return batch_size


def encoder_info(encoder: Encoder) -> EncoderInfo:
    """What the store records about the encoder of a run."""
    return EncoderInfo(
        model_id=encoder.model_id,
        backend=encoder.backend,
        dim=encoder.dim,
        max_length=encoder.max_length,
        pooling=POOLING,
        checkpoint_hash=encoder.checkpoint_hash,
    )


def encode_bucketed(
    encoder: Encoder,
    texts: Sequence[str],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[npt.NDArray[np.float32], int]:
    """texts (n,) -> (vectors (n, dim) in input order, number truncated).

    Batches hold texts of similar length (sorted by characters), so little compute goes to
    padding; `on_batch(rows)` is called after each batch.
    """
    order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)))
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    truncated = 0
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        batch_vectors, batch_truncated = encoder.encode([texts[i] for i in rows])
        vectors[rows] = batch_vectors
        truncated += batch_truncated
        if on_batch is not None:
            on_batch(len(rows))
    return vectors, truncated


def embed_pool(
    store: Store,
    pool: str,
    encoder: Encoder,
    batch_size: int = 64,
    progress_cb: ProgressCallback | None = None,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> VersionInfo:
    """Embed every row of `pool` (all splits) and commit it as a new complete version.

    `progress_cb` sees the start, the end, and at most one update per `progress_interval_s`
    in between. Vectors are written to the store every WRITE_CHUNK_ROWS rows; nothing is
    visible until the final commit, and an exception (including one raised by `progress_cb`)
    records the run as failed.
    """
    check_batch_size(batch_size)
    rows = store.pool_rows(pool, columns=["id", "text"])
    ids = rows.column("id").to_numpy()
    texts: list[str] = rows.column("text").to_pylist()
    total = len(texts)
    started = last_report = time.monotonic()
    done = 0

    def report(batch_rows: int) -> None:
        nonlocal done, last_report
        done += batch_rows
        now = time.monotonic()
        if progress_cb is None or (0 < done < total and now - last_report < progress_interval_s):
            return
        last_report = now
        rate = done / max(now - started, 1e-9)
        progress_cb(Progress(done, total, rate, (total - done) / rate if rate > 0 else 0.0))

    with store.begin_embedding(pool, encoder_info(encoder)) as writer:
        report(0)
        for start in range(0, total, WRITE_CHUNK_ROWS):
            stop = start + WRITE_CHUNK_ROWS
            vectors, truncated = encode_bucketed(encoder, texts[start:stop], batch_size, report)
            writer.write(ids[start:stop], vectors)
            writer.truncated_texts += truncated
        return writer.commit()
