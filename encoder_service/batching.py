"""Length-bucketed batching of texts through an encoder; needs no store (the GPU check
and bench/encoder.py use it where LanceDB is not installed)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from proxal.encoder_service.encoders import Encoder


def encode_bucketed(
    encoder: Encoder,
    texts: Sequence[str],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[npt.NDArray[np.float32], int]:
    """texts (n,) -> (vectors (n, dim) in input order, number truncated).

    Batches hold texts of similar length (sorted by characters), so little compute goes to
    padding. Tokenisation overlaps inference: the next batch is tokenised on a second thread
    while the current one runs (`Encoder.encode` tokenises outside its inference lock).
    `on_batch(rows)` is called after each batch, in order.
    """
    order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)))
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    truncated = 0
    pending: deque[tuple[npt.NDArray[np.intp], Future[tuple[npt.NDArray[np.float32], int]]]]
    pending = deque()

    def finish() -> None:
        nonlocal truncated
        rows, future = pending.popleft()
        batch_vectors, batch_truncated = future.result()
        vectors[rows] = batch_vectors
        truncated += batch_truncated
        if on_batch is not None:
            on_batch(len(rows))

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode") as workers:
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            pending.append((rows, workers.submit(encoder.encode, [texts[i] for i in rows])))
            if len(pending) == 2:  # at most one batch in flight ahead: memory stays bounded
                finish()
        while pending:
            finish()
    return vectors, truncated
