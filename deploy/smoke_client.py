"""The smoke run's client: the demo's active-learning loop against a running stack.

deploy/smoke.sh pipes this file into the orchestrator container (`docker exec -i ...
python - ARGS`), which has the proxal package, Banking77 (package data) and the store's
settings (PROXAL_STORE, PROXAL_STORE_OPTIONS) in its environment. Over gRPC it

1. ingests a small Banking77 pool (evenly spaced train and test rows) into the encoder,
2. embeds it with the encoder (MiniLM-L6, the encoder's backend),
3. creates a labeling session on the orchestrator, then for each round asks NextBatch,
   labels the batch from the gold labels (the simulated annotator) and calls SubmitLabels
   with a fresh request_id and an annotator name,
4. after each round scores the proxy, fitted on the labels so far, on the test rows
   through the proxy replicas (round-robin), and asks the orchestrator's Status RPC for its
   estimated accuracy where the server implements it.

It prints one line per step and round and a final JSON line (prefix ``SMOKE_RESULT``), and
exits non-zero when something is wrong. Standard library, grpc and the proxal package only.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

import grpc
import numpy as np
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.engine.simulation import PoolData
from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient, TrainingSet
from proxal.orchestrator_service.rpc.progress import describe
from proxal.store import Store

ANNOTATOR = "smoke-annotator"
DATA = importlib.resources.files("proxal.orchestrator_service.demo") / "data" / "banking77"


def _subset(split: str, limit: int, tmp: Path) -> Path:
    """`limit` evenly spaced rows of a split (the files are sorted by label)."""
    lines = (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp / f"{split}.jsonl"
    out.write_text("".join(lines[:: max(1, len(lines) // limit)][:limit]), encoding="utf-8")
    return out


def _store() -> Store:
    options = dict(
        item.split("=", 1) for item in os.environ.get("PROXAL_STORE_OPTIONS", "").split(",") if item
    )
    return Store(os.environ["PROXAL_STORE"], options or None)


def _accuracy(
    proxy: ProxyClient, data: PoolData, gold_of: dict[int, int], labelled: list[int]
) -> float:
    training = TrainingSet(
        ids=np.array(labelled, dtype=np.int64),
        labels=np.array([gold_of[i] for i in labelled], dtype=np.int32),
        num_classes=len(data.classes),
    )
    predicted = proxy.predict(data.pool, data.version, training, data.test_ids, seed=0)
    return float(np.mean(predicted == data.test_gold))


def _status(stub: pb_grpc.OrchestratorServiceStub, session: str) -> str:
    """The orchestrator's own estimate, or why there is none (the RPC may be unimplemented)."""
    try:
        status = stub.Status(pb.StatusRequest(session=session), timeout=60)
    except grpc.RpcError as exc:
        code = exc.code().name if isinstance(exc, grpc.Call) else "ERROR"
        return f"Status: {code}"
    return (
        f"Status: labels={status.labels} remaining={status.remaining} "
        f"estimated_accuracy={status.estimated_accuracy:.3f} {status.accuracy_note}".rstrip()
    )


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smoke_client")
    parser.add_argument("--encoder", required=True, help="host:port")
    parser.add_argument("--orchestrator", required=True, help="host:port")
    parser.add_argument("--proxy", required=True, help="the proxy replicas, as the orchestrator")
    parser.add_argument("--train", type=int, default=1000, help="train rows in the pool")
    parser.add_argument("--test", type=int, default=500, help="test rows in the pool")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--strategy", default="margin")
    parser.add_argument("--pool", default="banking77")
    parser.add_argument("--min-accuracy", type=float, default=0.10)
    return parser.parse_args(argv)


class SmokeFailure(Exception):
    """A check of the smoke run failed; the message says which."""


def _ingest_and_embed(encoder: EncoderClient, args: argparse.Namespace, result: dict) -> str:
    """Ingest the pool's subsets and embed them → the embedding version."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for split, limit in (("train", args.train), ("test", args.test)):
            response = encoder.ingest_file(args.pool, split, _subset(split, limit, Path(tmp)))
            print(f"ingest: {response.rows_added} {split} rows, {len(response.classes)} classes")
    result["ingest_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    version = encoder.embed(args.pool)
    result["embed_s"] = round(time.perf_counter() - t0, 2)
    print(f"embed: {describe(version)} in {result['embed_s']} s")
    result["embedding"] = {
        "version": version.version,
        "rows": version.row_count,
        "dim": version.dim,
        "model": version.model_id,
        "backend": version.backend,
    }
    return str(version.version)


def _create_session(
    stub: pb_grpc.OrchestratorServiceStub, args: argparse.Namespace, version: str
) -> str:
    """A new session on the pool → its name; it must pin `version`."""
    session = f"smoke-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    request = pb.CreateSessionRequest(
        session=session, pool=args.pool, strategy=args.strategy, batch_size=args.batch_size
    )
    created = stub.CreateSession(request, timeout=120)
    print(
        f"session {created.session}: pool {created.pool}, version {created.embedding_version}, "
        f"{len(created.classes)} classes, strategy {created.strategy}, batch {created.batch_size}"
        f" ({time.perf_counter() - t0:.2f} s)"
    )
    if created.embedding_version != version:
        raise SmokeFailure(f"session pinned {created.embedding_version}, expected {version}")
    return session


class Round:
    """One round of the scripted annotator: NextBatch, label from gold, SubmitLabels, score."""

    def __init__(
        self, stub: pb_grpc.OrchestratorServiceStub, proxy: ProxyClient, data: PoolData
    ) -> None:
        self.stub, self.proxy, self.data = stub, proxy, data
        self.gold_of = dict(zip(data.train_ids.tolist(), data.train_gold.tolist(), strict=True))
        self.labelled: list[int] = []

    def run(self, session: str, batch_size: int) -> dict[str, object]:
        """One round → its row (timings, labels, test accuracy); SmokeFailure if it is wrong."""
        t0 = time.perf_counter()
        request = pb.NextBatchRequest(session=session, annotator=ANNOTATOR)
        batch = self.stub.NextBatch(request, timeout=300)
        next_s = time.perf_counter() - t0
        ids = [item.id for item in batch.items]
        if len(ids) != batch_size or len(set(ids)) != len(ids) or set(ids) & set(self.labelled):
            raise SmokeFailure(
                f"round {batch.round}: batch of {len(ids)} ids, {len(set(ids))} distinct"
            )
        t0 = time.perf_counter()
        submitted = self._submit(session, ids)
        submit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        accuracy = _accuracy(self.proxy, self.data, self.gold_of, self.labelled)
        predict_s = time.perf_counter() - t0
        fallback = f" (fallback: {batch.fallback_reason})" if batch.fallback_reason else ""
        print(
            f"round {batch.round}: {batch.strategy}{fallback}, {len(ids)} items, "
            f"NextBatch {next_s:.2f} s, SubmitLabels {submit_s:.2f} s, "
            f"labels {submitted.total_labels}, test accuracy {accuracy:.3f} "
            f"(Predict {predict_s:.2f} s); {_status(self.stub, session)}",
            flush=True,
        )
        return {
            "round": batch.round,
            "strategy": batch.strategy,
            "fallback": batch.fallback_reason,
            "labels": submitted.total_labels,
            "next_batch_s": round(next_s, 3),
            "submit_s": round(submit_s, 3),
            "predict_s": round(predict_s, 3),
            "test_accuracy": round(accuracy, 4),
        }

    def _submit(self, session: str, ids: list[int]) -> pb.SubmitLabelsResponse:
        labels = [pb.Label(id=i, label=self.data.classes[self.gold_of[i]]) for i in ids]
        request = pb.SubmitLabelsRequest(
            session=session, labels=labels, request_id=str(uuid.uuid4()), annotator=ANNOTATOR
        )
        submitted = self.stub.SubmitLabels(request, timeout=120)
        self.labelled += ids
        if submitted.accepted != len(ids) or submitted.total_labels != len(self.labelled):
            raise SmokeFailure(
                f"SubmitLabels accepted {submitted.accepted}, total {submitted.total_labels}"
            )
        return submitted


def _run(args: argparse.Namespace, channel: grpc.Channel) -> dict[str, object]:
    """The whole smoke run → its result; SmokeFailure when a check fails."""
    t_all = time.perf_counter()
    result: dict[str, object] = {"pool": args.pool, "strategy": args.strategy}
    stub = pb_grpc.OrchestratorServiceStub(channel)
    with closing(EncoderClient(args.encoder, timeout=1800)) as encoder:
        version = _ingest_and_embed(encoder, args, result)
    data = PoolData.from_store(_store(), args.pool, version)
    session = _create_session(stub, args, version)
    with closing(ProxyClient(args.proxy, timeout=300)) as proxy:
        rounds = Round(stub, proxy, data)
        rows = [rounds.run(session, args.batch_size) for _ in range(args.rounds)]
    final = stub.GetSession(pb.GetSessionRequest(session=session), timeout=60)
    result["rounds"] = rows
    result["session"] = {"labels": final.labels, "rounds": final.rounds}
    result["total_s"] = round(time.perf_counter() - t_all, 2)
    first, last = rows[0]["test_accuracy"], rows[-1]["test_accuracy"]
    print(
        f"progress: {final.labels} labels in {final.rounds} rounds; proxy test accuracy "
        f"{first:.3f} -> {last:.3f} on {len(data.test_ids)} test rows "
        f"(chance {1 / len(data.classes):.3f}); client total {result['total_s']} s"
    )
    print("SMOKE_RESULT " + json.dumps(result), flush=True)
    if final.labels != len(rounds.labelled) or final.rounds != args.rounds:
        raise SmokeFailure(f"GetSession says {final.labels} labels, {final.rounds} rounds")
    if not isinstance(last, float) or last < args.min_accuracy:
        raise SmokeFailure(f"test accuracy {last} below {args.min_accuracy}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    with grpc.insecure_channel(args.orchestrator) as channel:
        try:
            _run(args, channel)
        except SmokeFailure as exc:
            print(f"FAIL: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
