"""A local S3-compatible server (moto) on loopback, for tests and benchmarks of the store on
object storage. Needs the `moto[server]` and `boto3` packages (the `dev` extra)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LocalS3:
    """A running moto server: its endpoint, the store's `storage_options` for it, a boto3
    client, and the bucket it was started with."""

    endpoint: str
    options: dict[str, str]
    client: Any
    bucket: str

    def store_flags(self) -> list[str]:
        """The services' `--store-option KEY=VALUE` flags for this server."""
        return [f"--store-option={k}={v}" for k, v in self.options.items()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_s3(bucket: str, log: Path | None = None, timeout_s: float = 30.0) -> Iterator[LocalS3]:
    """Start `python -m moto.server` on a free loopback port, create `bucket`, yield the
    server, and terminate it on exit. `log` receives the server's output (default: none)."""
    import boto3

    out = log.open("wb") if log is not None else subprocess.DEVNULL
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        options = {
            "aws_endpoint": endpoint,
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
            "aws_region": "us-east-1",
            "allow_http": "true",
        }
        yield LocalS3(endpoint, options, client, bucket)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if log is not None:
            out.close()  # type: ignore[union-attr]
