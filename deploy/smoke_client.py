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
DATA = importlib.resources.files("orchestrator") / "data" / "banking77"


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


def main() -> int:
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
    args = parser.parse_args()

    t_all = time.perf_counter()
    result: dict[str, object] = {"pool": args.pool, "strategy": args.strategy}
    encoder = EncoderClient(args.encoder, timeout=1800)
    proxy = ProxyClient(args.proxy, timeout=300)
    channel = grpc.insecure_channel(args.orchestrator)
    stub = pb_grpc.OrchestratorServiceStub(channel)

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

    data = PoolData.from_store(_store(), args.pool, version.version)
    gold_of = dict(zip(data.train_ids.tolist(), data.train_gold.tolist(), strict=True))

    session = f"smoke-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    created = stub.CreateSession(
        pb.CreateSessionRequest(
            session=session,
            pool=args.pool,
            strategy=args.strategy,
            batch_size=args.batch_size,
            seed=0,
        ),
        timeout=120,
    )
    print(
        f"session {created.session}: pool {created.pool}, version {created.embedding_version}, "
        f"{len(created.classes)} classes, strategy {created.strategy}, batch {created.batch_size}"
        f" ({time.perf_counter() - t0:.2f} s)"
    )
    if created.embedding_version != version.version:
        print(f"FAIL: session pinned {created.embedding_version}, expected {version.version}")
        return 1

    rounds = []
    labelled: list[int] = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        batch = stub.NextBatch(
            pb.NextBatchRequest(session=session, annotator=ANNOTATOR), timeout=300
        )
        next_s = time.perf_counter() - t0
        ids = [item.id for item in batch.items]
        if len(ids) != args.batch_size or len(set(ids)) != len(ids) or set(ids) & set(labelled):
            print(f"FAIL: round {batch.round}: batch of {len(ids)} ids, {len(set(ids))} distinct")
            return 1
        labels = [pb.Label(id=i, label=data.classes[gold_of[i]]) for i in ids]
        t0 = time.perf_counter()
        submitted = stub.SubmitLabels(
            pb.SubmitLabelsRequest(
                session=session,
                labels=labels,
                request_id=str(uuid.uuid4()),
                annotator=ANNOTATOR,
            ),
            timeout=120,
        )
        submit_s = time.perf_counter() - t0
        labelled += ids
        if submitted.accepted != len(ids) or submitted.total_labels != len(labelled):
            print(
                f"FAIL: SubmitLabels accepted {submitted.accepted}, total {submitted.total_labels}"
            )
            return 1
        t0 = time.perf_counter()
        accuracy = _accuracy(proxy, data, gold_of, labelled)
        predict_s = time.perf_counter() - t0
        status = _status(stub, session)
        row = {
            "round": batch.round,
            "strategy": batch.strategy,
            "fallback": batch.fallback_reason,
            "labels": submitted.total_labels,
            "next_batch_s": round(next_s, 3),
            "submit_s": round(submit_s, 3),
            "predict_s": round(predict_s, 3),
            "test_accuracy": round(accuracy, 4),
        }
        rounds.append(row)
        fallback = f" (fallback: {batch.fallback_reason})" if batch.fallback_reason else ""
        print(
            f"round {batch.round}: {batch.strategy}{fallback}, {len(ids)} items, "
            f"NextBatch {next_s:.2f} s, SubmitLabels {submit_s:.2f} s, "
            f"labels {submitted.total_labels}, test accuracy {accuracy:.3f} "
            f"(Predict {predict_s:.2f} s); {status}",
            flush=True,
        )

    final = stub.GetSession(pb.GetSessionRequest(session=session), timeout=60)
    result["rounds"] = rounds
    result["session"] = {"labels": final.labels, "rounds": final.rounds}
    result["total_s"] = round(time.perf_counter() - t_all, 2)
    first, last = rounds[0]["test_accuracy"], rounds[-1]["test_accuracy"]
    chance = 1 / len(data.classes)
    print(
        f"progress: {final.labels} labels in {final.rounds} rounds; proxy test accuracy "
        f"{first:.3f} -> {last:.3f} on {len(data.test_ids)} test rows "
        f"(chance {chance:.3f}); client total {result['total_s']} s"
    )
    print("SMOKE_RESULT " + json.dumps(result), flush=True)
    encoder.close()
    proxy.close()
    channel.close()
    if final.labels != len(labelled) or final.rounds != args.rounds:
        print(f"FAIL: GetSession says {final.labels} labels, {final.rounds} rounds")
        return 1
    if not isinstance(last, float) or last < args.min_accuracy:
        print(f"FAIL: test accuracy {last} below {args.min_accuracy}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
