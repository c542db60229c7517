"""The names in the proxy contract: query strategies and proxy classifier kinds.

The proxy service implements them (`proxal.proxy_service.strategies` and
`proxal.proxy_service.classifiers`);
clients such as the orchestrator check a name against these lists before it reaches a
proxy, without importing another service. `tests/orchestrator/test_session_names.py`
checks that the proxy's registries hold exactly these names.
"""

from __future__ import annotations

from proxal.runtime.errors import InvalidArgumentError

STRATEGIES = (
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "bald",
    "mahalanobis",
    "coreset",
    "badge",
)
DEFAULT_STRATEGY = "margin"
# Strategies that score each item from its own class probabilities (or at random): the
# proxy's Predict can score single items under them.
POINTWISE = ("random", "least_confidence", "margin", "entropy")
CLASSIFIERS = ("logreg", "mlp", "lightgbm")
DEFAULT_CLASSIFIER = "logreg"
# How the first batches are chosen while the proxy cannot be fitted (SelectRequest.initial).
INITIAL_BATCHES = ("random", "kmeans")
DEFAULT_INITIAL_BATCH = "random"


def check_strategy(name: str) -> str:
    """`name`, or the default for ""; InvalidArgumentError listing the valid names."""
    name = name or DEFAULT_STRATEGY
    if name not in STRATEGIES:
        raise InvalidArgumentError(
            f"unknown strategy {name[:80]!r}; valid strategies: {', '.join(STRATEGIES)}"
        )
    return name


def check_classifier(name: str) -> str:
    """`name`, or the default for ""; InvalidArgumentError listing the valid kinds."""
    name = name or DEFAULT_CLASSIFIER
    if name not in CLASSIFIERS:
        raise InvalidArgumentError(
            f"unknown classifier {name[:80]!r}; valid classifiers: {', '.join(CLASSIFIERS)}"
        )
    return name


def check_initial_batch(name: str) -> str:
    """`name`, or "random" for ""; InvalidArgumentError listing the valid names."""
    name = name or DEFAULT_INITIAL_BATCH
    if name not in INITIAL_BATCHES:
        raise InvalidArgumentError(
            f"unknown initial batch {name[:80]!r}; valid initial batches: "
            f"{', '.join(INITIAL_BATCHES)}"
        )
    return name
