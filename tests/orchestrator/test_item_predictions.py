"""Predict, LookupItems and RemoveLabels through a real OrchestratorService and proxy.

What a labelling tool (the Label Studio backend) builds on: suggestions whose scores order
items as the next NextBatch would, text -> id lookup, and taking labels away idempotently.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.engine.selectors import TrainingSet
from proxal.orchestrator_service.rpc.clients import ProxyClient

from tests.orchestrator.test_sessions import CLASSES, N_TRAIN, Stack, gold, rid, stack, submit

__all__ = ["stack"]  # the module-scoped fixture, shared with test_sessions


def create(stack: Stack, session: str, strategy: str = "margin") -> None:
    stack.stub.CreateSession(
        pb.CreateSessionRequest(
            session=session, pool="blobs", strategy=strategy, batch_size=8, seed=3
        )
    )


def test_predict_before_and_after_two_classes(stack: Stack) -> None:
    create(stack, "pred")
    cold = stack.stub.Predict(pb.PredictRequest(session="pred", ids=[0, 1, 2]))
    assert [p.id for p in cold.predictions] == [0, 1, 2]
    assert not any(p.HasField("suggestion") for p in cold.predictions)
    assert "two classes" in cold.note and cold.model_version == "pred@r0/l0/v1"
    truth = gold(stack.store)
    submit(stack, "pred", [(i, truth[i]) for i in range(30)])
    rest = list(range(30, N_TRAIN))
    warm = stack.stub.Predict(pb.PredictRequest(session="pred", ids=rest))
    assert warm.strategy == "margin" and warm.labels == 30 and not warm.note
    assert warm.model_version == "pred@r0/l30/v1"
    suggestions = [p.suggestion for p in warm.predictions]
    assert all(s.label in CLASSES for s in suggestions)
    assert all(0.0 < s.probability <= 1.0 for s in suggestions)
    assert all(-1.0 <= s.score <= 0.0 for s in suggestions)  # margin: -(p1 - p2)
    right = sum(s.label == truth[i] for i, s in zip(rest, suggestions, strict=True))
    assert right / len(rest) > 0.8  # well-separated blobs
    # the scores rank items as the next round does: its 8 picks are Predict's top 8
    scores = np.array([s.score for s in suggestions])
    top = {rest[i] for i in np.argsort(-scores, kind="stable")[:8]}
    batch = stack.stub.NextBatch(pb.NextBatchRequest(session="pred", annotator="a"))
    assert {x.id for x in batch.items} == top


def test_predict_bad_input(stack: Stack) -> None:
    create(stack, "predbad")
    for request, code in [
        (pb.PredictRequest(session="nope", ids=[1]), grpc.StatusCode.NOT_FOUND),
        (pb.PredictRequest(session="predbad", ids=[10**9]), grpc.StatusCode.NOT_FOUND),
        (pb.PredictRequest(session="predbad", ids=[]), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.PredictRequest(session="predbad", ids=list(range(1001))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stack.stub.Predict(request)
        assert info.value.code() == code, info.value.details()


def test_proxy_predict_scores_only_pointwise_strategies(stack: Stack) -> None:
    proxy = ProxyClient(stack.proxy_address)
    truth = gold(stack.store)
    ids = np.arange(40, dtype=np.int64)
    training = TrainingSet(
        ids, np.array([CLASSES.index(truth[i]) for i in ids], dtype=np.int32), len(CLASSES)
    )
    target = np.arange(40, 60, dtype=np.int64)
    plain = proxy.predictions("blobs", "v1", training, target, seed=1)
    assert plain.scores.size == 0 and plain.labels.shape == (20,)
    entropy = proxy.predictions("blobs", "v1", training, target, seed=1, strategy="entropy")
    assert entropy.scores.shape == (20,) and np.all(entropy.scores >= 0)
    with pytest.raises(grpc.RpcError) as info:
        proxy.predictions("blobs", "v1", training, target, seed=1, strategy="coreset")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pointwise" in (info.value.details() or "")
    proxy.close()


def test_lookup_items_by_exact_text(stack: Stack) -> None:
    create(stack, "look")
    reply = stack.stub.LookupItems(
        pb.LookupItemsRequest(
            session="look", texts=["train text 5", "train text 299", "test text 1", "nope"]
        )
    )
    assert list(reply.ids) == [5, 299, -1, -1]  # another split's text is not found
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.LookupItems(pb.LookupItemsRequest(session="look", texts=["x"] * 1001))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_remove_labels_is_idempotent_and_returns_items(stack: Stack) -> None:
    create(stack, "rm")
    truth = gold(stack.store)
    submit(stack, "rm", [(i, truth[i]) for i in range(6)])
    stack.stub.Skip(pb.SkipRequest(session="rm", ids=[6], request_id=rid(), annotator="a"))
    request = pb.RemoveLabelsRequest(session="rm", ids=[1, 6, 7], request_id=rid(), annotator="b")
    first = stack.stub.RemoveLabels(request)
    assert (first.accepted, first.total_labels, first.replayed) == (2, 5, False)
    assert "1 item(s) had no label" in first.note
    again = stack.stub.RemoveLabels(request)
    assert again.replayed and again.total_labels == 5
    status = stack.stub.Status(pb.StatusRequest(session="rm"))
    assert (status.labels, status.skipped, status.remaining) == (5, 0, N_TRAIN - 5)
    labels = dict(zip(*stack.store.read_labels("rm"), strict=True))
    assert sorted(labels) == [0, 2, 3, 4, 5]
    # the item can be labelled again, without relabel: it has no label now
    submit(stack, "rm", [(1, truth[1])])
    assert stack.stub.Status(pb.StatusRequest(session="rm")).labels == 6
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.RemoveLabels(pb.RemoveLabelsRequest(session="rm", ids=[10**9], request_id=rid()))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
