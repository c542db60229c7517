"""The proxy's own Prometheus metrics (beside the RPC metrics of `proxal.runtime.metrics`).

- ``proxal_proxy_versions_loaded``: embedding versions held in memory (the LRU cache);
- ``proxal_proxy_versions_loaded_bytes``: their ids and vectors, in bytes;
- ``proxal_proxy_models_cached``: fitted proxy models held in memory;
- ``proxal_proxy_stage_seconds{method, stage}``: a histogram of the seconds a Select or
  Predict spent in each stage: ``load`` (getting the version: from the store, or the cache),
  ``fit`` (a model not cached yet), ``score`` and ``select``; a stage that took no time
  (a fit skipped for a cached model) is not observed. These are the timings the responses
  already carry.

The cache gauges are read when Prometheus scrapes, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.selection import Timings

STAGE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    120.0,
)  # fmt: skip


class _CacheCollector(Collector):
    """The version and model cache's gauges, read at scrape time."""

    def __init__(self, cache: VersionCache):
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        versions = self._cache.versions.values()
        yield GaugeMetricFamily(
            "proxal_proxy_versions_loaded",
            "Embedding versions held in memory.",
            value=len(versions),
        )
        yield GaugeMetricFamily(
            "proxal_proxy_versions_loaded_bytes",
            "Bytes of the embedding versions held in memory (ids and vectors).",
            value=sum(v.nbytes for v in versions),
        )
        yield GaugeMetricFamily(
            "proxal_proxy_models_cached",
            "Fitted proxy models held in memory.",
            value=len(self._cache.models.keys()),
        )


class ProxyMetrics:
    """The proxy's metrics on `registry` (a private one by default: nothing scrapes it)."""

    def __init__(self, cache: VersionCache, registry: CollectorRegistry | None = None):
        registry = CollectorRegistry() if registry is None else registry
        registry.register(_CacheCollector(cache))
        self.stages = Histogram(
            "proxal_proxy_stage_seconds",
            "Seconds a Select or Predict spent loading, fitting, scoring and selecting.",
            ["method", "stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )

    def record(self, method: str, timings: Timings) -> None:
        """Observe each stage of one `method` call ("Select", "Predict") that took time."""
        for stage, seconds in (
            ("load", timings.load_s),
            ("fit", timings.fit_s),
            ("score", timings.score_s),
            ("select", timings.select_s),
        ):
            if seconds > 0:
                self.stages.labels(method, stage).observe(seconds)
