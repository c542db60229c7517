"""Helpers for the metrics and readiness tests: scrape /metrics, read and watch health."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_S = 60.0  # the most a test waits for a status change (readiness retries back off to 5 s)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at http://127.0.0.1:`port`/metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sample `name` with exactly these labels (KeyError naming what exists if none)."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        near = sorted(k for k in samples if k[0] == name)
        raise KeyError(f"no sample {key}; samples of {name}: {near}")
    return samples[key]


def status(channel: grpc.Channel, service: str = "") -> int:
    """The health status the server reports for `service` ("" = the whole server)."""
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def wait_for(channel: grpc.Channel, wanted: int, service: str = "") -> None:
    """Poll health until it reports `wanted` (AssertionError after WAIT_S seconds)."""
    deadline = time.monotonic() + WAIT_S
    while (seen := status(channel, service)) != wanted:
        assert time.monotonic() < deadline, f"health stayed {seen}, expected {wanted}"
        time.sleep(0.05)


def watch(channel: grpc.Channel, service: str = "") -> Any:
    """A health Watch stream (iterate for responses, `.cancel()` when done: an open stream
    holds the server's drain)."""
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_S)
