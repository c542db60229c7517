"""The Python client for notebooks: `from proxal import Client`.

A few typed calls over OrchestratorService (a running `proxal serve`, e.g. from `proxal
up`): create a session, take the next batch, submit labels, read the status, export the
labels; plus `simulate`, which runs `proxal simulate` in this process. Calls return frozen
dataclasses, never protos, and fail with proxal's error hierarchy
(`proxal.runtime.errors`: InvalidArgumentError, NotFoundError, ...), never `grpc.RpcError`.
Writes carry a fresh request id and are retried with it while the orchestrator is
unreachable, so a label is never counted twice (see orchestrator/rpc/session_client.py).

Training successors from here is not in this client yet: the training-job RPCs
(TrainSuccessor, WatchJob, ListModels) land separately.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.rpc.session_client import SessionClient
from proxal.runtime.server import error_from_rpc

if TYPE_CHECKING:
    from proxal.orchestrator_service.demo.simulate import SimulateOutcome

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_ADDRESS = "127.0.0.1:50053"


@dataclass(frozen=True)
class Item:
    """One text to label: its pool id and its text."""

    id: int
    text: str


@dataclass(frozen=True)
class Session:
    """A labeling session's settings and counts."""

    name: str
    pool: str
    embedding_version: str
    strategy: str
    classifier: str
    batch_size: int
    seed: int
    split: str
    classes: tuple[str, ...]
    labels: int
    rounds: int

    @classmethod
    def from_proto(cls, s: pb.Session) -> Session:
        return cls(
            s.session,
            s.pool,
            s.embedding_version,
            s.strategy,
            s.classifier,
            s.batch_size,
            s.seed,
            s.split,
            tuple(s.classes),
            s.labels,
            s.rounds,
        )


@dataclass(frozen=True)
class Status:
    """Where a session stands: counts, versions, the proxy's estimated accuracy (None until
    two classes have two labels each; see `accuracy_note`) and labels per class."""

    session: Session
    labels: int
    skipped: int
    leased: int
    remaining: int
    rounds: int
    embedding_version: str
    latest_version: str
    estimated_accuracy: float | None
    accuracy_note: str
    class_counts: dict[str, int]
    annotators: int

    @classmethod
    def from_proto(cls, s: pb.SessionStatus) -> Status:
        accuracy = s.estimated_accuracy if math.isfinite(s.estimated_accuracy) else None
        return cls(
            Session.from_proto(s.session),
            s.labels,
            s.skipped,
            s.leased,
            s.remaining,
            s.rounds,
            s.embedding_version,
            s.latest_version,
            accuracy,
            s.accuracy_note,
            {c.label: c.count for c in s.class_counts},
            s.annotators,
        )


@dataclass(frozen=True)
class Submitted:
    """What a submit wrote: `accepted` labels, the session's `total_labels` after it, and a
    `note` when some were not written."""

    accepted: int
    total_labels: int
    replayed: bool
    note: str


@dataclass(frozen=True)
class LabelRecord:
    """One exported label: the item, its text, its label and who gave it."""

    id: int
    text: str
    label: str
    annotator: str


def _domain_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn a failed call's `grpc.RpcError` into proxal's error hierarchy."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "orchestrator") from None

    return wrapper


class Client:
    """OrchestratorService at `address` (host:port), as `annotator`.

    TLS and the bearer token come from the environment, as for the CLI (PROXAL_TLS_CA,
    PROXAL_AUTH_TOKEN, ...). Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        address: str = "",
        annotator: str = "notebook",
        timeout: float = 60.0,
        retry_seconds: float = 30.0,
    ):
        """`address` empty: PROXAL_ORCHESTRATOR, else 127.0.0.1:50053 (`proxal up`'s)."""
        address = address or os.environ.get("PROXAL_ORCHESTRATOR", "") or DEFAULT_ADDRESS
        self.address = address
        self._rpc = SessionClient(address, annotator, timeout, retry_seconds)

    @_domain_errors
    def create_session(
        self,
        name: str,
        pool: str,
        *,
        classes: Sequence[str] = (),
        strategy: str = "margin",
        classifier: str = "logreg",
        batch_size: int = 10,
        seed: int = 0,
        split: str = "train",
        embedding_version: str = "",
        lease_seconds: float = 0.0,
    ) -> Session:
        """A new session labelling `split` of `pool`; `classes` default to the split's gold
        labels (a split without them needs `classes`)."""
        request = pb.CreateSessionRequest(
            session=name,
            pool=pool,
            classes=list(classes),
            strategy=strategy,
            classifier=classifier,
            batch_size=batch_size,
            seed=seed,
            split=split,
            embedding_version=embedding_version,
            lease_seconds=lease_seconds,
        )
        return Session.from_proto(self._rpc.create(request))

    @_domain_errors
    def get_session(self, name: str) -> Session:
        return Session.from_proto(self._rpc.session(name))

    @_domain_errors
    def list_sessions(self, pool: str = "") -> list[Session]:
        return [Session.from_proto(s) for s in self._rpc.list_sessions(pool)]

    @_domain_errors
    def next_batch(self, session: str, k: int = 0) -> list[Item]:
        """The next items to label (leased to this client's annotator); `k` 0: the session's
        batch size. Empty when nothing is left."""
        return [Item(i.id, i.text) for i in self._rpc.next_batch(session, k).items]

    @_domain_errors
    def submit(
        self,
        session: str,
        labels: Mapping[int, str] | Iterable[tuple[int, str]],
        relabel: bool = False,
    ) -> Submitted:
        """Label items: {id: label} or (id, label) pairs; `relabel` to change given labels."""
        pairs = list(labels.items() if isinstance(labels, Mapping) else labels)
        reply = self._rpc.submit(session, pairs, relabel=relabel)
        return Submitted(reply.accepted, reply.total_labels, reply.replayed, reply.note)

    @_domain_errors
    def skip(self, session: str, ids: Sequence[int]) -> Submitted:
        reply = self._rpc.skip(session, ids)
        return Submitted(reply.accepted, reply.total_labels, reply.replayed, reply.note)

    @_domain_errors
    def status(self, session: str) -> Status:
        return Status.from_proto(self._rpc.status(session))

    @_domain_errors
    def export(self, session: str) -> list[LabelRecord]:
        """The session's current labels, with their texts and annotators."""
        data = self._rpc.export(session, "jsonl")
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        return [
            LabelRecord(int(r["id"]), str(r["text"]), str(r["label"]), str(r["annotator"]))
            for r in rows
        ]

    @_domain_errors
    def export_file(self, session: str, path: str | Path, fmt: str = "") -> Path:
        """Write the labels to `path`: JSONL, CSV or Label Studio JSON (from the suffix
        .jsonl, .csv, .json, or `fmt`) → the path."""
        from proxal.orchestrator_service.sessions.label_files import format_of

        path = Path(path)
        path.write_bytes(self._rpc.export(session, format_of(path, fmt)))
        return path

    @_domain_errors
    def delete_session(self, name: str, force: bool = False) -> int:
        """Delete a session (one with labels only with `force`) → labels deleted with it."""
        return self._rpc.delete(name, force).labels

    @staticmethod
    def simulate(
        train: str | Path,
        test: str | Path | None = None,
        *,
        test_fraction: float | None = None,
        text_field: str = "text",
        label_field: str = "label",
        out: str | Path = "proxal-simulate",
        **loop: Any,
    ) -> SimulateOutcome:
        """`proxal simulate` in this process (it starts its own encoder and proxy) → the
        outcome: `report` (report.md's path), `ssr` per strategy, `doc` (report.json).
        `loop`: LoopConfig fields (strategies, seeds, initial_size, batch_size, rounds,
        ups, asvp) and `random_factor`."""
        from proxal.orchestrator_service.demo.simulate import (
            DataSource,
            SimulateConfig,
            run_simulate,
        )
        from proxal.orchestrator_service.engine.simulation import LoopConfig
        from proxal.orchestrator_service.sessions.pool_files import Fields

        factor = float(loop.pop("random_factor", 2.0))
        config = SimulateConfig(
            data=DataSource(
                train=Path(train),
                test=None if test is None else Path(test),
                test_fraction=test_fraction,
                fields=Fields(text=text_field, label=label_field),
            ),
            out_dir=Path(out),
            loop=LoopConfig(**loop),
            random_factor=factor,
        )
        return run_simulate(config)

    def close(self) -> None:
        self._rpc.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
