"""ASVP feature checks of the engine's sessions: inline (a simulation) or in the background.

A check (`engine.asvp.FeatureAligner.check`) fine-tunes the encoder on the session's
labels so far, compares LogME(-PED) of the fine-tuned and the current features, and asks
the encoder service to re-embed the pool from the checkpoint when the gap passes the
threshold. For a live session it runs on a thread pool and never blocks NextBatch; when it
refreshes, the session switches to the new version under its lock, i.e. at a round boundary
(the switch is persisted in the session's record). An encoder that cannot be reached or a
fine-tune that fails is recorded as a failed check with the reason; the session keeps
selecting on its current version.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.engine.selectors import ClassifierSpec, Selector, TrainingSet
from proxal.runtime.errors import FailedPreconditionError
from proxal.runtime.models import MINILM_L6
from proxal.store import SessionRecord, Store

if TYPE_CHECKING:
    from proxal.orchestrator_service.engine.asvp import (
        AlignmentDecision,
        AsvpConfig,
        FeatureAligner,
    )

# Makes `version` the session's current one (in a transaction holding the session's lock).
Switch = Callable[[str, str, dict[str, Any]], None]


class HasVersion(Protocol):
    version: str


class Refresher(Protocol):
    """The encoder service's RefreshFromCheckpoint (`rpc.clients.EncoderClient`)."""

    def refresh(
        self,
        pool: str,
        checkpoint: str,
        label_count: int = 0,
        label_set_hash: str = "",
        max_length: int = 0,
    ) -> HasVersion: ...


@dataclass(frozen=True)
class AsvpRuntime:
    """What ASVP needs beyond the proxy: the encoder, its checkpoint root (shared with the
    encoder service), and the pool's texts (None: read from the store at each check)."""

    encoder: Refresher
    checkpoint_root: Path
    texts_of: Mapping[int, str] | None = None


@dataclass(frozen=True)
class CheckRecord:
    """One finished check: action "refresh", "keep", "skip" or "failed" (with `reason`)."""

    round: int
    labels: int
    action: str
    version_before: str
    version_after: str
    logme_current: float = math.nan
    logme_finetuned: float = math.nan
    gap: float = math.nan
    threshold: float = math.nan
    seconds: float = 0.0
    finished_at: float = 0.0
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckRecord:
        values: dict[str, Any] = {k: math.nan if v is None else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class CheckStatus:
    """A session's ASVP state for Status."""

    enabled: bool
    lineage: tuple[str, ...]
    running: bool = False
    phase: str = ""  # "fine-tune" or "refresh" while a check runs
    last: CheckRecord | None = None
    checks: int = 0
    failed: int = 0
    next_due: str = ""


@dataclass
class _SessionChecks:
    aligner: FeatureAligner
    running: bool = False
    phase: str = ""
    history: list[CheckRecord] = field(default_factory=list)


class FeatureChecks:
    """The ASVP checks of every session of an engine."""

    def __init__(
        self,
        store: Store,
        selector: Selector,
        runtime: AsvpRuntime | None,
        switch: Switch,
        background: bool,
        workers: int,
    ) -> None:
        self.store = store
        self.selector = selector
        self.runtime = runtime
        self.switch = switch
        self.background = background
        self._sessions: dict[str, _SessionChecks] = {}
        self._guard = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="asvp") if background else None

    def check_available(self, pool: str, version: str) -> None:
        """FailedPreconditionError when ASVP cannot run on this pool version here."""
        if self.runtime is None:
            raise FailedPreconditionError(
                "ASVP needs the encoder service to re-embed the pool, and this orchestrator "
                "has none: start it with --encoder HOST:PORT (proxal serve --encoder ...)"
            )
        info = self.store.get_version(pool, version)
        if not (info.model_id == MINILM_L6 or info.source == "checkpoint"):
            raise FailedPreconditionError(
                f"ASVP fine-tunes the encoder, and version {version!r} of pool {pool!r} was "
                f"embedded with {info.model_id!r} ({info.backend}), which cannot be fine-tuned: "
                f"embed the pool with {MINILM_L6!r} (proxal embed --model {MINILM_L6}) and "
                "create the session on that version, or create it without ASVP"
            )

    def at_round(
        self, record: SessionRecord, rnd: int, training: TrainingSet
    ) -> AlignmentDecision | None:
        """Run the check due at round `rnd`: inline → its decision (the session is switched
        already when it refreshed); in the background → None (started if due and idle)."""
        from proxal.orchestrator_service.engine.loop import asvp_of

        config = asvp_of(record)
        if config is None or self.runtime is None:
            return None
        state = self._state(record, config, len(training.ids))
        if state.running or not state.aligner.due(rnd, len(training.ids)):
            return None
        state.running, state.phase = True, "fine-tune"
        job = (record, rnd, training, state)
        if self._pool is None:
            return self._run(*job)
        self._pool.submit(self._run, *job)
        return None

    def _run(
        self, record: SessionRecord, rnd: int, training: TrainingSet, state: _SessionChecks
    ) -> AlignmentDecision | None:
        """One check; a refresh switches the session (`switch` takes its lock)."""
        t0 = time.perf_counter()
        version = record.embedding_version
        decision = None
        try:
            if self.runtime is not None and self.runtime.texts_of is None:
                state.aligner.texts_of = self.store.pool_texts(record.pool, training.ids.tolist())
            decision = state.aligner.check(rnd, version, training.ids, training.labels)
            check = _from_decision(decision, time.perf_counter() - t0, time.time())
            if decision.version_after != version:
                self.switch(record.session, decision.version_after, check.as_dict())
        except Exception as exc:
            if self._pool is None:
                raise
            check = CheckRecord(
                rnd,
                len(training.ids),
                "failed",
                version,
                version,
                seconds=time.perf_counter() - t0,
                finished_at=time.time(),
                reason=_reason(exc),
            )
        finally:
            state.running, state.phase = False, ""
        state.history.append(check)
        return decision

    def _state(self, record: SessionRecord, config: AsvpConfig, labels: int) -> _SessionChecks:
        with self._guard:
            state = self._sessions.get(record.session)
            if state is None:
                state = _SessionChecks(self._aligner(record, config, max(labels, 1)))
                self._sessions[record.session] = state
            return state

    def _aligner(self, record: SessionRecord, config: AsvpConfig, labels: int) -> FeatureAligner:
        """A FeatureAligner for one session, wired to the store, the selector and the encoder."""
        from proxal.orchestrator_service.engine.asvp import FeatureAligner
        from proxal.orchestrator_service.engine.loop import classifier_of

        assert self.runtime is not None
        runtime = self.runtime
        num_classes = len(record.config["classes"])
        spec: ClassifierSpec = classifier_of(record)
        pool, seed = record.pool, record.seed
        max_length = self.store.get_version(pool, record.embedding_version).max_length
        state_of = self._sessions

        def lookup(version: str, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
            return self.store.lookup(pool, version, ids)

        def predict(
            version: str,
            train_ids: npt.NDArray[np.int64],
            train_labels: npt.NDArray[np.int32],
            ids: npt.NDArray[np.int64],
        ) -> npt.NDArray[np.int64]:
            training = TrainingSet(train_ids, train_labels, num_classes)
            predicted = self.selector.predict(pool, version, training, ids, seed, spec)
            return np.asarray(predicted, dtype=np.int64)

        def refresh(checkpoint: str, label_count: int, label_hash: str) -> str:
            if record.session in state_of:
                state_of[record.session].phase = "refresh"
            answer = runtime.encoder.refresh(
                pool, checkpoint, label_count, label_hash, max_length=max_length
            )
            return answer.version

        return FeatureAligner(
            config,
            runtime.texts_of or {},
            num_classes,
            runtime.checkpoint_root,
            lookup,
            predict,
            refresh,
            name=record.session,
            initial_labels=labels,
        )

    def decisions(self, session: str) -> list[AlignmentDecision]:
        """Every check's decision of a session, in order (a simulation's report)."""
        state = self._sessions.get(session)
        return [] if state is None else list(state.aligner.decisions)

    def status(self, record: SessionRecord, rounds: int, labels: int) -> CheckStatus:
        """The last check, whether one runs, when the next is due, and the lineage."""
        from proxal.orchestrator_service.engine.loop import asvp_of, lineage_of

        lineage = tuple(lineage_of(record))
        config = asvp_of(record)
        if config is None:
            return CheckStatus(False, lineage)
        state = self._sessions.get(record.session)
        last = state.history[-1] if state and state.history else None
        stored = record.config.get("last_check")
        if last is None and isinstance(stored, dict):
            last = CheckRecord.from_dict(stored)
        running = bool(state and state.running)
        since = state.aligner.last_labels if state else max(labels, 1)
        return CheckStatus(
            True,
            lineage,
            running=running,
            phase=state.phase if state else "",
            last=last,
            checks=len(state.history) if state else 0,
            failed=sum(c.action == "failed" for c in state.history) if state else 0,
            next_due="after the running check" if running else next_due(config, rounds, since),
        )

    def forget(self, session: str) -> None:
        with self._guard:
            self._sessions.pop(session, None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def next_due(config: AsvpConfig, rounds: int, last_labels: int) -> str:
    """When the next check runs: the next round index that is due, and/or a label count."""
    parts = []
    if config.every_rounds > 0:
        every = config.every_rounds
        due = max(rounds, 1)
        due += (-due) % every
        parts.append(f"at round {due}")
    if config.growth_factor > 0:
        parts.append(f"at {math.ceil(config.growth_factor * last_labels)} labels")
    return " or ".join(parts)


def _from_decision(decision: AlignmentDecision, seconds: float, now: float) -> CheckRecord:
    return CheckRecord(
        decision.round,
        decision.labels,
        decision.action,
        decision.version_before,
        decision.version_after,
        decision.logme_current,
        decision.logme_finetuned,
        decision.gap,
        decision.threshold,
        seconds,
        now,
        decision.note,
    )


def _reason(exc: BaseException) -> str:
    """One line saying why a check failed (an RpcError's code and details when it is one)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"encoder service: {getattr(code(), 'name', code())}: {details()}"
    return f"{type(exc).__name__}: {exc}"
