"""Readiness: a server's gRPC health says SERVING only while it can do its work.

A server starts NOT_SERVING. `Readiness` runs the service's check on a background thread
(the server answers health probes meanwhile), retrying with exponential backoff until it
passes, then sets every service of the server to SERVING. It goes on checking every
`recheck_s` seconds and turns NOT_SERVING again (with a log line naming the cause) when a
dependency is lost. On shutdown `RunningServer.stop` sets NOT_SERVING before draining; the
health servicer ignores any later SERVING, so a check finishing then cannot undo it.

A check is a callable that returns when ready and raises otherwise; the exception's
message says what is missing (e.g. "the store at s3://... does not answer: ...").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], None]
RECHECK_S = 10.0  # seconds between checks once ready
FIRST_RETRY_S = 0.1  # seconds before the first retry of a failed check; doubles each time
MAX_RETRY_S = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def all_of(*checks: ReadinessCheck) -> ReadinessCheck:
    """One check that runs `checks` in order and fails at the first that fails."""

    def check() -> None:
        for one in checks:
            one()

    return check


class Readiness:
    """Keeps the health status of `services` (and of the server, "") true to `check`."""

    def __init__(
        self,
        health_servicer: health.HealthServicer,
        services: Sequence[str],
        check: ReadinessCheck | None,
        registry: CollectorRegistry | None = None,
        recheck_s: float = RECHECK_S,
    ):
        self._health = health_servicer
        self._names = [*services, ""]
        self._check = check
        self._recheck_s = recheck_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)
        self.problem = "not checked yet"  # why the server is not ready ("" once it is)
        self._gauge = Gauge(
            "proxal_ready",
            "1 while the server's readiness check passes (gRPC health SERVING), else 0.",
            registry=registry,
        )
        self._set(False)

    def start(self) -> None:
        """Start checking; without a check, the server is ready at once."""
        if self._check is None:
            self._report("")
        else:
            self._thread.start()

    def stop(self) -> None:
        """Stop checking after the check in flight, if any (the status stays as it is;
        shutdown sets NOT_SERVING itself). `join` waits for that check."""
        self._stop.set()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the check has passed (True) or `timeout` seconds went by (False)."""
        return self._ready.wait(timeout)

    def _set(self, ready: bool) -> None:
        for name in self._names:
            self._health.set(name, SERVING if ready else NOT_SERVING)
        self._gauge.set(1 if ready else 0)
        if ready:
            self._ready.set()
        else:
            self._ready.clear()

    def _run(self) -> None:
        retry = FIRST_RETRY_S
        while not self._stop.is_set():
            try:
                if self._check is not None:
                    self._check()
                problem = ""
            except Exception as exc:  # a check says why in its message; any failure counts
                problem = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            if self._stop.is_set():
                return
            self._report(problem)
            if problem:
                self._stop.wait(retry)
                retry = min(retry * 2, MAX_RETRY_S)
            else:
                retry = FIRST_RETRY_S
                self._stop.wait(self._recheck_s)

    def _report(self, problem: str) -> None:
        """Set the status for the latest check's outcome, logging each change."""
        was_ready, self.problem = self.ready, problem
        if not problem and not was_ready:
            log.info("ready: %s SERVING", ", ".join(n for n in self._names if n))
        elif problem and was_ready:
            log.warning("not ready any more (NOT_SERVING): %s", problem)
        elif problem:
            log.info("not ready yet (NOT_SERVING, retrying): %s", problem)
        self._set(not problem)
