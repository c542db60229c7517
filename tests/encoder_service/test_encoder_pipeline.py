"""embed_pool on a real store: per-batch progress, atomic commit, failed runs stay hidden."""

from __future__ import annotations

import numpy as np
import pytest
from proxal.encoder_service.encoders import TORCH
from proxal.encoder_service.pipeline import Progress, embed_pool
from proxal.runtime.errors import FailedPreconditionError, NotFoundError
from proxal.store import Store


def test_progress_per_batch_and_a_complete_version(
    store: Store, encoders, banking_rows: list[dict[str, str]]
) -> None:
    rows = banking_rows[:40]
    store.add_pool_rows("p", "train", [r["text"] for r in rows], [r["label"] for r in rows])
    seen: list[Progress] = []
    encoder = encoders.get("minilm-l6", TORCH, 128)
    info = embed_pool(store, "p", encoder, 16, seen.append, progress_interval_s=0.0)
    assert [p.rows_done for p in seen] == [0, 16, 32, 40]
    assert {p.rows_total for p in seen} == {40}
    assert seen[-1].eta_seconds == 0 and seen[-1].rows_per_second > 0
    assert (info.status, info.row_count, info.dim, info.backend) == ("complete", 40, 384, TORCH)
    ids, vectors = store.read_embeddings("p", info.version)
    assert ids.tolist() == list(range(40))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_failing_run_is_recorded_failed_and_never_readable(
    store: Store, encoders, banking_rows: list[dict[str, str]]
) -> None:
    store.add_pool_rows("p", "train", [r["text"] for r in banking_rows[:20]], [None] * 20)

    def stop_after_first_batch(progress: Progress) -> None:
        if progress.rows_done:
            raise RuntimeError("stop")

    encoder = encoders.get("minilm-l6", TORCH, 128)
    with pytest.raises(RuntimeError, match="stop"):
        embed_pool(store, "p", encoder, 8, stop_after_first_batch, progress_interval_s=0.0)
    (run,) = store.list_versions("p", include_incomplete=True)
    assert run.status == "failed" and store.list_versions("p") == []
    with pytest.raises(FailedPreconditionError):
        store.read_embeddings("p", run.version)


def test_unknown_pool_is_not_found(store: Store, encoders) -> None:
    with pytest.raises(NotFoundError, match="ingest it first"):
        embed_pool(store, "missing", encoders.get("minilm-l6", TORCH, 128))
