"""Resuming embedding runs whose encoder process died (SIGKILL, OOM, a lost node).

Each run records every written chunk durably (see `Store.resume_embedding`), so on start
the encoder service finishes what the previous process left running: only the missing ids
are embedded, and the version is committed once, complete. Runs from a fine-tuned
checkpoint cannot be rebuilt from the store alone and are recorded failed instead.
"""

from __future__ import annotations

import logging
import threading

from proxal.encoder_service.encoders import EncoderCache
from proxal.encoder_service.pipeline import resume_run
from proxal.encoder_service.settings import EncoderSettings
from proxal.store import Store, VersionInfo

log = logging.getLogger(__name__)


def resume_interrupted(store: Store, settings: EncoderSettings) -> list[VersionInfo]:
    """Finish every run left running in `store`; returns the versions completed."""
    encoders = EncoderCache(settings.onnx_cache)
    completed = []
    for run in store.interrupted_runs():
        if run.source != "pretrained":
            log.warning(
                "run %s/%s came from a checkpoint; recording it failed (re-run the refresh)",
                run.pool,
                run.version,
            )
            store.resume_embedding(run.pool, run.version).abort()
            continue
        log.info(
            "resuming embedding run %s/%s (%s, %s)",
            run.pool,
            run.version,
            run.model_id,
            run.backend,
        )
        try:
            encoder = encoders.get(run.model_id, run.backend, run.max_length)
            info = resume_run(
                store, run.pool, run.version, encoder, chunk_rows=settings.write_chunk_rows
            )
        except Exception:
            log.exception("could not resume %s/%s; it is recorded failed", run.pool, run.version)
            continue
        log.info("resumed run %s/%s is complete: %d rows", info.pool, info.version, info.row_count)
        completed.append(info)
    return completed


def start_recovery(store: Store, settings: EncoderSettings) -> threading.Thread:
    """Run `resume_interrupted` on a background thread (the server serves meanwhile)."""
    thread = threading.Thread(
        target=resume_interrupted, args=(store, settings), name="resume-runs", daemon=True
    )
    thread.start()
    return thread
