"""The strategy and classifier names a session may name are the proxy's, from one list.

`proxal.runtime.strategies` is the contract the orchestrator checks CreateSession against
(it must not import the proxy service); this test holds the proxy's registries to it.
"""

from __future__ import annotations

import pytest
from proxal.proxy_service import classifiers, strategies
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.strategies import (
    CLASSIFIERS,
    DEFAULT_CLASSIFIER,
    DEFAULT_STRATEGY,
    STRATEGIES,
    check_classifier,
    check_strategy,
)


def test_the_proxy_implements_exactly_the_contract_names() -> None:
    assert set(strategies.STRATEGIES) == set(STRATEGIES)
    assert set(classifiers.KINDS) == set(CLASSIFIERS)
    assert DEFAULT_STRATEGY == "margin" and DEFAULT_CLASSIFIER == "logreg"


def test_checks_default_and_list_the_valid_names() -> None:
    assert check_strategy("") == "margin" and check_strategy("badge") == "badge"
    assert check_classifier("") == "logreg" and check_classifier("mlp") == "mlp"
    with pytest.raises(InvalidArgumentError, match="valid strategies: random, least_confidence"):
        check_strategy("margn")
    with pytest.raises(InvalidArgumentError, match="valid classifiers: logreg, mlp, lightgbm"):
        check_classifier("svm")
