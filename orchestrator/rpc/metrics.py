"""The orchestrator's own Prometheus metrics (beside the RPC metrics of `proxal.runtime.metrics`).

- ``proxal_orchestrator_labels_acknowledged_total{kind}``: labels (``kind="label"``: from
  SubmitLabels, ``"import"``: ImportLabels) and skips (``"skip"``) this process committed
  and acknowledged; a replayed retry is not counted again. Per process: sum over replicas.
- ``proxal_orchestrator_sessions``: sessions in the database;
- ``proxal_orchestrator_leases_open``: leases granted and neither released nor expired (a
  lease whose items were all labelled counts until it expires or its annotator releases it).

The two gauges are counted in the session database when Prometheus scrapes (two COUNT
queries). Every replica on one database reports the same values: aggregate them with
``max``, not ``sum``. A scrape while the database is down leaves them out (and logs why).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from proxal.runtime.errors import ProxalError
from proxal.store import Store

log = logging.getLogger(__name__)
LABEL, IMPORT, SKIP = "label", "import", "skip"


class _SessionCollector(Collector):
    """Sessions and open leases, counted in the store's database at scrape time."""

    def __init__(self, store: Store):
        self._store = store

    def collect(self) -> Iterator[Metric]:
        try:
            sessions, leases = self._store.count_sessions_and_leases()
        except ProxalError as exc:
            log.warning("metrics: cannot count sessions and leases: %s", exc)
            return
        yield GaugeMetricFamily(
            "proxal_orchestrator_sessions", "Labeling sessions in the database.", value=sessions
        )
        yield GaugeMetricFamily(
            "proxal_orchestrator_leases_open",
            "Leases granted and neither released nor expired.",
            value=leases,
        )


class OrchestratorMetrics:
    """The orchestrator's metrics on `registry` (a private one by default); the session
    gauges only when a `store` is given."""

    def __init__(self, registry: CollectorRegistry | None = None, store: Store | None = None):
        registry = CollectorRegistry() if registry is None else registry
        if store is not None:
            registry.register(_SessionCollector(store))
        self.acknowledged = Counter(
            "proxal_orchestrator_labels_acknowledged",
            "Labels and skips committed and acknowledged, by request kind.",
            ["kind"],
            registry=registry,
        )

    def acknowledged_labels(self, kind: str, accepted: int, replayed: bool) -> None:
        """Count `accepted` items of one committed write (nothing for a replayed retry)."""
        if not replayed and accepted > 0:
            self.acknowledged.labels(kind).inc(accepted)
