"""A real OrchestratorService on port 0 over a store, and a Banking77 pool with labelled
sessions, for the successor-job tests (test_jobs.py, test_plasm.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import SessionRecord, Store

from tests.conftest import BANKING77, read_jsonl

CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed")
TEST_ONLY = ("atm_support",)  # a gold class of the test split that no session has


@dataclass
class Server:
    stub: pb_grpc.OrchestratorServiceStub
    address: str
    store: Store


@contextmanager
def orchestrator(store: Store) -> Iterator[Server]:
    """OrchestratorService over `store` on a free loopback port (jobs need no proxy: the
    proxy address names nothing and is never called)."""
    servicer = OrchestratorServicer(Sessions(store, ProxyClient("127.0.0.1:9")))
    running = start_server(
        ServerSettings(port=0),
        lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
        ["proxal.orchestrator.v1.OrchestratorService"],
    )
    try:
        with grpc.insecure_channel(running.address) as channel:
            yield Server(pb_grpc.OrchestratorServiceStub(channel), running.address, store)
    finally:
        running.stop(0)


def rows(
    split: str, per_class: int, classes: tuple[str, ...] = CLASSES
) -> tuple[list[str], list[str]]:
    """The first `per_class` Banking77 texts of each class of `classes` in `split`."""
    texts: list[str] = []
    labels: list[str] = []
    taken = dict.fromkeys(classes, 0)
    for row in read_jsonl(BANKING77 / f"{split}.jsonl"):
        if row["label"] in taken and taken[row["label"]] < per_class:
            taken[row["label"]] += 1
            texts.append(row["text"])
            labels.append(row["label"])
    return texts, labels


def labelled_store(store: Store) -> None:
    """Pool "bank" (20 train rows per class, 5 test rows per class plus 5 of a class only
    the test split has) and sessions: "s1" and "s2" labelled 10 per class, "one" a single
    class, "few" one label per class, "orphan" on a pool that does not exist, "empty" none."""
    train, train_gold = rows("train", 20)
    test, test_gold = rows("test", 5, CLASSES + TEST_ONLY)
    store.add_pool_rows("bank", "train", train, train_gold)
    store.add_pool_rows("bank", "test", test, test_gold)
    picked = [i for c in CLASSES for i in [j for j, g in enumerate(train_gold) if g == c][:10]]
    for name in ("s1", "s2"):
        add_session(store, name, "bank", picked, [train_gold[i] for i in picked])
    store.append_labels("s1", "bank", [picked[0]], [train_gold[picked[0]]])  # a relabel
    add_session(store, "one", "bank", picked[:3], [train_gold[picked[0]]] * 3)
    firsts = [train_gold.index(c) for c in CLASSES]
    add_session(store, "few", "bank", firsts, list(CLASSES))
    add_session(store, "orphan", "gone", [0, 1], ["a", "b"])
    store.create_session(SessionRecord("empty", "bank", "v1", "margin", 10, 0))


def add_session(store: Store, name: str, pool: str, ids: list[int], labels: list[str]) -> None:
    record = SessionRecord(name, pool, "v1", "margin", 10, 0, config={"classes": list(CLASSES)})
    store.create_session(record)
    store.append_labels(name, pool, ids, labels)


def label_counts(store: Store) -> dict[str, int]:
    return {s.session: len(store.read_labels(s.session)[0]) for s in store.list_sessions()}


def watch(stub: pb_grpc.OrchestratorServiceStub, job_id: str) -> list[pb.JobEvent]:
    """Every event of the job until it ends."""
    return list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=600))
