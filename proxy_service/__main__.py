"""`python -m proxal.proxy_service`: serve ProxyService over the store until SIGTERM/SIGINT."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from proxal.proxy.v1 import proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.metrics import ProxyMetrics
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.proxy_service.settings import ProxySettings, build_parser, from_args
from proxal.proxy_service.shards import PartsCollector, ShardOwner
from proxal.runtime.errors import ProxalError
from proxal.runtime.metrics import new_registry
from proxal.runtime.server import RunningServer, serve_forever, start_or_exit
from proxal.runtime.settings import parse
from proxal.store import Store
from threadpoolctl import threadpool_limits


def start(settings: ProxySettings, store: Store) -> RunningServer:
    """Serve ProxyService over `store`, with its metrics; health turns SERVING once the
    store answers (`ProxyServicer.check_ready`)."""
    cache = VersionCache(
        store,
        settings.cache_versions,
        settings.cache_models,
        precision=settings.precision,
        float16_min_rows=settings.float16_min_rows,
    )
    registry = new_registry()
    shards = None
    if settings.shard is not None:
        shards = ShardOwner(store, settings.shard, settings.cache_versions)
        registry.register(PartsCollector(shards))
    servicer = ProxyServicer(
        cache,
        settings.score_threads,
        limits=settings.limits,
        metrics=ProxyMetrics(cache, registry),
        shards=shards,
    )
    return start_or_exit(
        settings.server,
        lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
        "proxal-proxy",
        readiness=servicer.check_ready,
        registry=registry,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, open the store, serve until signalled; returns the exit status."""
    settings = from_args(parse(build_parser(), argv))
    # Requests run in parallel on the worker pool, so BLAS threads inside each would only
    # oversubscribe the cores: on a busy 2-core machine a 1,000 x 384, 77-class fit takes
    # 0.1 s with one BLAS thread and 3-4 s with two. Scoring a large pool splits it into
    # chunks on --score-threads threads instead, each calling single-threaded BLAS.
    threadpool_limits(limits=1, user_api="blas")
    try:  # the proxy only reads: a missing store is a mistyped --store, not a new one
        store = Store(settings.store, settings.store_options, create=False)
    except ProxalError as exc:
        raise SystemExit(f"proxal-proxy: {exc}") from None
    serve_forever(start(settings, store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
