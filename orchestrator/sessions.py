"""Labeling sessions: the domain code behind OrchestratorService.

A session names a pool, a pinned embedding version, a strategy and the classes. All of its
state lives in the store (sessions, labels, rounds tables), so a restarted orchestrator
carries on where it was. A label is acknowledged only after the store committed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from orchestrator.clients import ProxyClient, TrainingSet
from proxal_runtime.errors import InvalidArgumentError, NotFoundError
from proxal_runtime.names import check_name
from proxal_runtime.server import error_from_rpc
from proxal_store import RoundRecord, SessionRecord, Store

MAX_BATCH = 1000


@dataclass(frozen=True)
class SessionStatus:
    record: SessionRecord
    classes: list[str]
    labels: int
    rounds: int


@dataclass(frozen=True)
class Batch:
    items: list[tuple[int, str]]  # (id, text)
    strategy: str
    fallback_reason: str
    round: int


class Sessions:
    """Create sessions, hand out batches chosen by the proxy, take labels."""

    def __init__(self, store: Store, proxy: ProxyClient):
        self.store = store
        self.proxy = proxy

    def create(
        self,
        session: str,
        pool: str,
        embedding_version: str = "",
        strategy: str = "margin",
        batch_size: int = 10,
        seed: int = 0,
        split: str = "train",
        classes: Sequence[str] = (),
    ) -> SessionStatus:
        check_name("session", session)
        check_name("split", split)
        if not 1 <= batch_size <= MAX_BATCH:
            raise InvalidArgumentError(f"batch_size must be in 1..{MAX_BATCH}, got {batch_size}")
        info = self.store.pool_info(pool)
        if split not in info.splits:
            raise NotFoundError(
                f"pool {pool!r} has no split {split!r}; splits: {list(info.splits)}"
            )
        version = (
            self.store.get_version(pool, embedding_version).version
            if embedding_version
            else self.store.latest_version(pool).version
        )
        class_list = list(classes) or info.classes
        if len(class_list) < 2 or len(set(class_list)) != len(class_list):
            raise InvalidArgumentError(
                "a session needs at least two distinct classes: pass `classes`, or ingest a pool "
                "with gold labels"
            )
        record = self.store.create_session(
            SessionRecord(
                session=session,
                pool=pool,
                embedding_version=version,
                strategy=strategy or "margin",
                batch_size=batch_size,
                seed=seed,
                split=split,
                config={"classes": class_list},
            )
        )
        return SessionStatus(record, class_list, labels=0, rounds=0)

    def status(self, session: str) -> SessionStatus:
        record = self.store.get_session(session)
        ids, _ = self.store.read_labels(session)
        return SessionStatus(
            record,
            list(record.config["classes"]),
            labels=len(ids),
            rounds=len(self.store.read_rounds(session)),
        )

    def next_batch(self, session: str, k: int = 0) -> Batch:
        """The next k unlabeled items of the session's split, chosen by its strategy."""
        state = self.status(session)
        record = state.record
        k = k or record.batch_size
        if not 1 <= k <= MAX_BATCH:
            raise InvalidArgumentError(f"k must be in 1..{MAX_BATCH}, got {k}")
        index = {c: i for i, c in enumerate(state.classes)}
        ids, labels = self.store.read_labels(session)
        rows = self.store.pool_rows(record.pool, split=record.split, columns=["id", "text"])
        candidates = rows.column("id").to_numpy()
        training = TrainingSet(
            ids=ids,
            labels=np.array([index[x] for x in labels], dtype=np.int32),
            num_classes=len(state.classes),
        )
        try:
            selection = self.proxy.select(
                record.pool,
                record.embedding_version,
                training,
                record.strategy,
                k,
                seed=record.seed * 100_003 + state.rounds,
                candidate_ids=candidates,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "proxy service") from exc
        text_of = dict(zip(candidates.tolist(), rows.column("text").to_pylist(), strict=True))
        chosen = selection.ids.tolist()
        self.store.record_round(
            RoundRecord(
                session=session,
                round=state.rounds,
                strategy=selection.strategy,
                embedding_version=record.embedding_version,
                selected_ids=chosen,
                labels_total=len(ids),
                timings=selection.timings,
                scores_summary={
                    "max": float(selection.scores.max()),
                    "min": float(selection.scores.min()),
                },
            )
        )
        return Batch(
            [(i, text_of[i]) for i in chosen],
            selection.strategy,
            selection.fallback_reason,
            state.rounds,
        )

    def submit(self, session: str, labels: Sequence[tuple[int, str]]) -> tuple[int, int]:
        """Validate and commit labels; returns (accepted, total labels of the session)."""
        record = self.store.get_session(session)
        classes = set(record.config["classes"])
        if not labels:
            raise InvalidArgumentError("no labels in the request")
        bad = sorted({lab for _, lab in labels if lab not in classes})
        if bad:
            raise InvalidArgumentError(
                f"unknown label(s) {bad[:5]}; the session's classes are {sorted(classes)[:20]}"
            )
        ids = np.array([i for i, _ in labels], dtype=np.int64)
        known = self.store.pool_rows(record.pool, split=record.split, columns=["id"])
        missing = np.setdiff1d(ids, known.column("id").to_numpy())
        if missing.size:
            raise NotFoundError(
                f"{missing.size} id(s) are not in split {record.split!r} of pool "
                f"{record.pool!r}: {missing[:5].tolist()}"
            )
        self.store.append_labels(session, record.pool, ids.tolist(), [lab for _, lab in labels])
        total, _ = self.store.read_labels(session)
        return len(labels), len(total)
