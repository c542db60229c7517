"""The encoder service's settings: one frozen value built from flags and environment.

Flags win over `PROXAL_ENCODER_*` variables, which win over the defaults.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxal.encoder_service.encoders import (
    AUTO,
    BACKENDS,
    DEFAULT_MODEL,
    MODELS,
    PRECISIONS,
    TORCH,
    check_precision,
)
from proxal.encoder_service.ingest import DEFAULT_MAX_TEXT_CHARS
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.server import ServerSettings
from proxal.runtime.settings import (
    DEFAULT_STORE,
    add_common_args,
    env_default,
    parse,
    server_settings,
    store_options,
)

PREFIX = "PROXAL_ENCODER"
DEFAULT_ONNX_CACHE = "~/.cache/proxal/onnx"
DEFAULT_MAX_UPLOAD_MB = 256
DEFAULT_WRITE_CHUNK_ROWS = 4096
DEFAULT_MAX_EMBED_WORKERS = os.cpu_count() or 1
DEFAULT_CLAIM_LEASE_S = 30.0


@dataclass(frozen=True)
class EncoderSettings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: str = DEFAULT_STORE
    store_options: dict[str, str] | None = None  # Lance object-storage options
    backend: str = TORCH  # used when an EmbedPool request names none
    precision: str = AUTO  # used when a request names none; auto: the machine's default
    onnx_cache: Path = field(default_factory=lambda: Path(DEFAULT_ONNX_CACHE).expanduser())
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS  # longest text IngestPool accepts
    write_chunk_rows: int = DEFAULT_WRITE_CHUNK_ROWS  # rows per durable chunk of a run
    checkpoint_root: Path = field(default_factory=Path.cwd)  # RefreshFromCheckpoint paths
    max_embed_workers: int = DEFAULT_MAX_EMBED_WORKERS  # cap on EmbedPool.workers
    claim_lease_s: float = DEFAULT_CLAIM_LEASE_S  # a fan-out worker's claim lapses after this


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The common service flags plus the encoder's own (see `proxal-encoder --help`)."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="proxal-encoder",
        description="proxal encoder service: ingests pools and embeds them into the store",
    )
    add_common_args(parser, PREFIX, env)
    parser.add_argument(
        "--backend",
        default=env_default(PREFIX, "backend", TORCH, env),
        help=f"encoder backend when a request names none: {' | '.join(BACKENDS)} "
        "(env PROXAL_ENCODER_BACKEND)",
    )
    parser.add_argument(
        "--precision",
        default=env_default(PREFIX, "precision", AUTO, env),
        help=f"precision when a request names none: {AUTO} (the machine's default: fp16 on "
        "a CUDA GPU, bf16 on a CPU with AMX or AVX-512 BF16, else fp32; int8 for onnx on "
        f"CPU) | {' | '.join(PRECISIONS)} (env PROXAL_ENCODER_PRECISION)",
    )
    parser.add_argument(
        "--onnx-cache",
        default=env_default(PREFIX, "onnx_cache", DEFAULT_ONNX_CACHE, env),
        help="directory of exported ONNX models (env PROXAL_ENCODER_ONNX_CACHE)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=int(env_default(PREFIX, "max_upload_mb", str(DEFAULT_MAX_UPLOAD_MB), env)),
        help="largest IngestPool upload accepted, in MiB (env PROXAL_ENCODER_MAX_UPLOAD_MB)",
    )
    parser.add_argument(
        "--max-text-chars",
        type=int,
        default=int(env_default(PREFIX, "max_text_chars", str(DEFAULT_MAX_TEXT_CHARS), env)),
        help="longest text an upload may hold, in characters (env PROXAL_ENCODER_MAX_TEXT_CHARS)",
    )
    parser.add_argument(
        "--write-chunk-rows",
        type=int,
        default=int(env_default(PREFIX, "write_chunk_rows", str(DEFAULT_WRITE_CHUNK_ROWS), env)),
        help="rows per durable chunk of an embedding run; a killed run resumes after its last "
        "chunk (env PROXAL_ENCODER_WRITE_CHUNK_ROWS; use ~50000 on object storage)",
    )
    parser.add_argument(
        "--checkpoint-root",
        default=env_default(PREFIX, "checkpoint_root", ".", env),
        help="directory that RefreshFromCheckpoint paths are relative to; nothing outside it "
        "is read (env PROXAL_ENCODER_CHECKPOINT_ROOT; default: the current directory)",
    )
    parser.add_argument(
        "--max-embed-workers",
        type=int,
        default=int(env_default(PREFIX, "max_embed_workers", str(DEFAULT_MAX_EMBED_WORKERS), env)),
        help="most worker processes one EmbedPool run may fan out to (env "
        "PROXAL_ENCODER_MAX_EMBED_WORKERS; default: the CPU count)",
    )
    parser.add_argument(
        "--claim-lease-s",
        type=float,
        default=float(env_default(PREFIX, "claim_lease_s", str(DEFAULT_CLAIM_LEASE_S), env)),
        help="seconds a fan-out worker's id-range claim outlives its last renewal (env "
        "PROXAL_ENCODER_CLAIM_LEASE_S)",
    )
    return parser


def parse_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> EncoderSettings:
    """Parse flags (and configure logging); exits with a usage error on invalid values."""
    parser = build_parser(env)
    args = parse(parser, argv)
    if args.backend not in BACKENDS:
        parser.error(f"--backend must be one of {', '.join(BACKENDS)}, got {args.backend!r}")
    if args.precision != AUTO:
        try:
            check_precision(MODELS[DEFAULT_MODEL], args.backend, args.precision)
        except InvalidArgumentError as exc:
            parser.error(f"--precision {args.precision}: {exc}")
    if args.max_upload_mb < 1:
        parser.error(f"--max-upload-mb must be at least 1, got {args.max_upload_mb}")
    if args.max_text_chars < 1:
        parser.error(f"--max-text-chars must be at least 1, got {args.max_text_chars}")
    if args.write_chunk_rows < 1:
        parser.error(f"--write-chunk-rows must be at least 1, got {args.write_chunk_rows}")
    if args.max_embed_workers < 1:
        parser.error(f"--max-embed-workers must be at least 1, got {args.max_embed_workers}")
    if not args.claim_lease_s > 0:
        parser.error(f"--claim-lease-s must be > 0, got {args.claim_lease_s}")
    checkpoint_root = Path(args.checkpoint_root).expanduser().resolve()
    if not checkpoint_root.is_dir():
        parser.error(f"--checkpoint-root must be a directory, got {args.checkpoint_root!r}")
    return EncoderSettings(
        server=server_settings(args),
        store=args.store,
        store_options=store_options(args),
        backend=args.backend,
        precision=args.precision,
        onnx_cache=Path(args.onnx_cache).expanduser(),
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        max_text_chars=args.max_text_chars,
        write_chunk_rows=args.write_chunk_rows,
        checkpoint_root=checkpoint_root,
        max_embed_workers=args.max_embed_workers,
        claim_lease_s=args.claim_lease_s,
    )
