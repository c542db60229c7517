"""A session's proxy on chosen items: suggestions for a labelling tool (no writes).

The proxy is fitted as the session's next round would fit it (its labels, classifier spec
and round seed), so the scores order items as the next NextBatch would (pointwise
strategies). Strategies that score a batch as a whole (BALD, core-set, BADGE, Mahalanobis)
have no per-item score here: margin stands in, and `strategy` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from proxal.orchestrator_service.engine.loop import classifier_of, round_seed
from proxal.orchestrator_service.engine.selectors import Selector, TrainingSet
from proxal.runtime.strategies import DEFAULT_STRATEGY, POINTWISE
from proxal.store import SessionRecord


@dataclass(frozen=True)
class Suggestion:
    """The proxy's class for an item, its probability and the acquisition score (higher =
    more informative)."""

    label: str
    probability: float
    score: float


@dataclass(frozen=True)
class ItemPredictions:
    """Suggestions for ids in the order asked (empty with a `note` while the proxy cannot be
    fitted), and what predicted them."""

    ids: list[int]
    suggestions: list[Suggestion]
    strategy: str
    round: int
    embedding_version: str
    labels: int
    model_version: str
    note: str = ""


def model_version(session: str, rounds: int, labels: int, version: str) -> str:
    """The name of the model a session fits after `rounds` rounds on `labels` labels."""
    return f"{session}@r{rounds}/l{labels}/{version}"


def scoring_strategy(strategy: str) -> str:
    """The strategy the scores are of: the session's if pointwise, else margin."""
    return strategy if strategy in POINTWISE else DEFAULT_STRATEGY


def predict_items(
    proxy: Selector,
    record: SessionRecord,
    classes: Sequence[str],
    training: TrainingSet,
    ids: Sequence[int],
    rounds: int,
) -> ItemPredictions:
    """The session's proxy (fitted on `training`, as round `rounds` would) on `ids`."""
    strategy = scoring_strategy(record.strategy)
    version = record.embedding_version
    labels = len(training.ids)
    made = ItemPredictions(
        list(ids),
        [],
        strategy,
        rounds,
        version,
        labels,
        model_version(record.session, rounds, labels, version),
    )
    if len(np.unique(training.labels)) < 2:
        return _with_note(made, "no suggestions yet: the proxy needs labels of two classes")
    out = proxy.predictions(
        record.pool,
        version,
        training,
        np.asarray(ids, dtype=np.int64),
        round_seed(record.seed, rounds),
        classifier_of(record),
        strategy,
    )
    suggestions = [
        Suggestion(classes[int(c)], float(p), float(s))
        for c, p, s in zip(out.labels, out.probabilities, out.scores, strict=True)
    ]
    return ItemPredictions(
        made.ids,
        suggestions,
        strategy,
        rounds,
        version,
        labels,
        made.model_version,
    )


def _with_note(made: ItemPredictions, note: str) -> ItemPredictions:
    return ItemPredictions(
        made.ids,
        [],
        made.strategy,
        made.round,
        made.embedding_version,
        made.labels,
        made.model_version,
        note,
    )
