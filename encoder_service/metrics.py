"""The encoder's own Prometheus metrics (beside the RPC metrics of `proxal.runtime.metrics`).

- ``proxal_encoder_texts_embedded_total{pool}``: texts embedded by EmbedPool and
  RefreshFromCheckpoint runs (a run that fails counts the texts it had embedded);
- ``proxal_encoder_runs_in_progress``: embedding runs streaming now;
- ``proxal_encoder_run_progress_ratio{pool}``: rows done / rows in the pool of the pool's
  latest run (1 once it finished; it stays at its last value when a run fails).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class EncoderMetrics:
    """The encoder's metrics on `registry` (a private one by default: nothing scrapes it)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        registry = CollectorRegistry() if registry is None else registry
        self.texts = Counter(
            "proxal_encoder_texts_embedded",
            "Texts embedded by embedding runs (EmbedPool, RefreshFromCheckpoint).",
            ["pool"],
            registry=registry,
        )
        self.running = Gauge(
            "proxal_encoder_runs_in_progress", "Embedding runs in progress.", registry=registry
        )
        self.progress = Gauge(
            "proxal_encoder_run_progress_ratio",
            "Rows done / rows of the pool's latest embedding run (0..1).",
            ["pool"],
            registry=registry,
        )

    def run(self, pool: str) -> RunMetrics:
        """A tracker for one run of `pool`; call `done` when the run ends, however it ends."""
        self.running.inc()
        self.progress.labels(pool).set(0.0)
        return RunMetrics(self, pool)


class RunMetrics:
    """Turns one run's progress reports (rows done so far, rows in all) into the metrics."""

    def __init__(self, metrics: EncoderMetrics, pool: str):
        self._metrics = metrics
        self._pool = pool
        self._counted: int | None = None  # rows done at the last report (None: no report yet)
        self._open = True

    def progress(self, rows_done: int, rows_total: int) -> None:
        """A progress report: count the rows embedded since the previous one (the first
        report, at the run's start, sets where a resumed run began)."""
        if self._counted is not None and rows_done > self._counted:
            self._metrics.texts.labels(self._pool).inc(rows_done - self._counted)
        self._counted = rows_done
        if rows_total > 0:
            self._metrics.progress.labels(self._pool).set(min(rows_done / rows_total, 1.0))

    def done(self) -> None:
        """The run ended (committed, failed or cancelled)."""
        if self._open:
            self._open = False
            self._metrics.running.dec()
