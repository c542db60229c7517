"""Embedding a whole pool into a new, atomically committed embedding version."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from proxal.encoder_service.batching import encode_bucketed
from proxal.encoder_service.encoders import POOLING, Encoder
from proxal.runtime.errors import InvalidArgumentError
from proxal.store import EmbeddingWriter, EncoderInfo, Store, VersionInfo

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
        precision=encoder.precision,
    )


def embed_pool(
    store: Store,
    pool: str,
    encoder: Encoder,
    batch_size: int = 64,
    progress_cb: ProgressCallback | None = None,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
    chunk_rows: int = WRITE_CHUNK_ROWS,
    info: EncoderInfo | None = None,
) -> VersionInfo:
    """Embed every row of `pool` (all splits) and commit it as a new complete version.

    `info` is what the version records about its encoder (default: `encoder_info(encoder)`;
    a checkpoint run adds its source and label lineage).

    `progress_cb` sees the start, the end, and at most one update per `progress_interval_s`
    in between. Vectors are written to the store every `chunk_rows` rows and each chunk is
    recorded durably, so a run whose process dies can be resumed (`resume_run`); nothing is
    visible until the final commit, and an exception (including one raised by
    `progress_cb`) records the run as failed.
    """
    check_batch_size(batch_size)
    with store.begin_embedding(pool, info or encoder_info(encoder)) as writer:
        return _complete(
            store, writer, encoder, batch_size, progress_cb, progress_interval_s, chunk_rows
        )


def resume_run(
    store: Store,
    pool: str,
    version: str,
    encoder: Encoder,
    batch_size: int = 64,
    progress_cb: ProgressCallback | None = None,
    chunk_rows: int = WRITE_CHUNK_ROWS,
) -> VersionInfo:
    """Finish a run whose process died: embed only the ids it had not written, then commit."""
    check_batch_size(batch_size)
    with store.resume_embedding(pool, version) as writer:
        return _complete(
            store, writer, encoder, batch_size, progress_cb, PROGRESS_INTERVAL_S, chunk_rows
        )


def missing_rows(
    store: Store, writer: EmbeddingWriter, id_range: tuple[int, int] | None = None
) -> tuple[npt.NDArray[np.int64], list[str], int]:
    """The pool rows `writer` has not written, optionally only ids start..end-1 of
    `id_range`: (ids (m,) int64, their texts, number of pool rows in the range)."""
    rows = store.pool_rows(writer.pool, columns=["id", "text"])
    all_ids = rows.column("id").to_numpy()
    wanted = np.ones(len(all_ids), dtype=bool)
    if id_range is not None:
        wanted = (all_ids >= id_range[0]) & (all_ids < id_range[1])
    todo = np.flatnonzero(wanted & ~np.isin(all_ids, writer.done_ids))
    all_texts: list[str] = rows.column("text").to_pylist()
    return all_ids[todo], [all_texts[i] for i in todo], int(wanted.sum())


def write_chunks(
    writer: EmbeddingWriter,
    encoder: Encoder,
    ids: npt.NDArray[np.int64],
    texts: Sequence[str],
    batch_size: int,
    chunk_rows: int,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Embed `texts` (n,) and write them under `ids` (n,), one durable chunk per
    `chunk_rows` rows; `on_batch(rows)` after each batch."""
    for start in range(0, len(ids), chunk_rows):
        stop = start + chunk_rows
        vectors, truncated = encode_bucketed(encoder, texts[start:stop], batch_size, on_batch)
        writer.write(ids[start:stop], vectors, truncated)


def _complete(
    store: Store,
    writer: EmbeddingWriter,
    encoder: Encoder,
    batch_size: int,
    progress_cb: ProgressCallback | None,
    progress_interval_s: float,
    chunk_rows: int,
) -> VersionInfo:
    """Embed the pool rows `writer` has not written yet, chunk by chunk, and commit."""
    ids, texts, _ = missing_rows(store, writer)
    total = writer.expected_rows
    started = last_report = time.monotonic()
    done = writer.rows_written
    resumed_from = done

    def report(batch_rows: int) -> None:
        nonlocal done, last_report
        done += batch_rows
        now = time.monotonic()
        if progress_cb is None or (0 < done < total and now - last_report < progress_interval_s):
            return
        last_report = now
        rate = (done - resumed_from) / max(now - started, 1e-9)
        progress_cb(Progress(done, total, rate, (total - done) / rate if rate > 0 else 0.0))

    report(0)
    write_chunks(writer, encoder, ids, texts, batch_size, chunk_rows, report)
    return writer.commit()
