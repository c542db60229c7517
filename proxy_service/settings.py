"""The proxy service's settings: flags, then PROXAL_PROXY_* environment variables, then defaults."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxal.proxy_service.cache import AUTO, DEFAULT_FLOAT16_MIN_ROWS, PRECISIONS
from proxal.proxy_service.limits import (
    DEFAULT_MAX_CLASSES,
    DEFAULT_MAX_IDS,
    DEFAULT_MAX_K,
    RequestLimits,
)
from proxal.proxy_service.shards import ShardPart
from proxal.runtime.server import ServerSettings
from proxal.runtime.settings import add_common_args, env_default, server_settings, store_options

ENV_PREFIX = "PROXAL_PROXY"


@dataclass(frozen=True)
class ProxySettings:
    """Everything `python -m proxal.proxy_service` needs: network, store, cache sizes, limits."""

    server: ServerSettings
    store: str
    store_options: dict[str, str] | None = None  # Lance object-storage options
    cache_versions: int = 4
    cache_models: int = 16
    score_threads: int = 2
    limits: RequestLimits = field(default_factory=RequestLimits)
    precision: str = AUTO  # how versions are held: auto (by rows) | float32 | float16
    float16_min_rows: int = DEFAULT_FLOAT16_MIN_ROWS
    shard: ShardPart | None = None  # --shard I/R: hold only part I of R of every version


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _shard(value: str) -> ShardPart | None:
    if not value:
        return None
    try:
        return ShardPart.parse(value, os.environ.get("HOSTNAME") or socket.gethostname())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The service's argument parser (common flags plus cache sizes)."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="proxy_service",
        description="proxal proxy service: fits proxy classifiers on pinned embedding "
        "versions and selects the most informative unlabeled examples",
    )
    add_common_args(parser, ENV_PREFIX, env)
    parser.add_argument(
        "--cache-versions",
        type=_positive_int,
        default=env_default(ENV_PREFIX, "cache_versions", "4", env),
        help="embedding versions kept in memory (LRU)",
    )
    parser.add_argument(
        "--cache-models",
        type=_positive_int,
        default=env_default(ENV_PREFIX, "cache_models", "16", env),
        help="fitted proxy models kept in memory (LRU), so Predict after Select does not refit",
    )
    parser.add_argument(
        "--score-threads",
        type=_positive_int,
        default=env_default(ENV_PREFIX, "score_threads", str(min(os.cpu_count() or 1, 4)), env),
        help="threads that score one request's pool chunks in parallel (default: cores, <= 4)",
    )
    parser.add_argument(
        "--max-k",
        type=_positive_int,
        default=env_default(ENV_PREFIX, "max_k", str(DEFAULT_MAX_K), env),
        help="largest k a Select may ask for (env PROXAL_PROXY_MAX_K)",
    )
    parser.add_argument(
        "--max-classes",
        type=_positive_int,
        default=env_default(ENV_PREFIX, "max_classes", str(DEFAULT_MAX_CLASSES), env),
        help="largest training.num_classes accepted (env PROXAL_PROXY_MAX_CLASSES)",
    )
    parser.add_argument(
        "--max-ids",
        type=_positive_int,
        default=env_default(ENV_PREFIX, "max_ids", str(DEFAULT_MAX_IDS), env),
        help="most values in one packed id or label array of a request (env PROXAL_PROXY_MAX_IDS)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=env_default(ENV_PREFIX, "precision", AUTO, env),
        help="how versions' scoring matrices are held: auto (float16 from --float16-min-rows "
        "rows), float32 or float16; float16 picks equal float32's (env PROXAL_PROXY_PRECISION)",
    )
    parser.add_argument(
        "--float16-min-rows",
        type=_positive_int,
        default=env_default(ENV_PREFIX, "float16_min_rows", str(DEFAULT_FLOAT16_MIN_ROWS), env),
        help="auto holds versions of at least this many rows in float16 "
        "(env PROXAL_PROXY_FLOAT16_MIN_ROWS)",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        default=env_default(ENV_PREFIX, "shard", "", env),
        help="own part I of R of every version and load only its rows: I/R, or auto/R to "
        "take I from the hostname's trailing StatefulSet ordinal (proxy-3: 3); other parts "
        "are refused unless a request adopts one (env PROXAL_PROXY_SHARD)",
    )
    return parser


def from_args(args: argparse.Namespace) -> ProxySettings:
    """Settings from parsed flags."""
    return ProxySettings(
        server=server_settings(args),
        store=args.store,
        store_options=store_options(args),
        cache_versions=args.cache_versions,
        cache_models=args.cache_models,
        score_threads=args.score_threads,
        limits=RequestLimits(max_k=args.max_k, max_classes=args.max_classes, max_ids=args.max_ids),
        precision=args.precision,
        float16_min_rows=args.float16_min_rows,
        shard=args.shard,
    )
