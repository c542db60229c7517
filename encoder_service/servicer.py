"""gRPC EncoderService: translates messages to domain calls and back, nothing more.

Errors are raised as `proxal.runtime.errors` exceptions; the server's interceptor maps
them to status codes.
"""

from __future__ import annotations

import itertools
import logging
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import grpc
from proxal.common.v1 import common_pb2
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.encoder_service.checkpoints import resolve_checkpoint
from proxal.encoder_service.encoders import (
    DEFAULT_MODEL,
    Encoder,
    EncoderCache,
    build_encoder,
    resolve_precision,
)
from proxal.encoder_service.fanout import check_workers, fan_out
from proxal.encoder_service.ingest import UploadFormat, ingest_upload
from proxal.encoder_service.metrics import EncoderMetrics
from proxal.encoder_service.pipeline import Progress, check_batch_size, embed_pool, encoder_info
from proxal.encoder_service.settings import EncoderSettings
from proxal.runtime.errors import InvalidArgumentError, ResourceExhaustedError
from proxal.runtime.limits import check_strings
from proxal.runtime.names import check_name
from proxal.store import EncoderInfo, Store, VersionInfo

log = logging.getLogger(__name__)

SERVICE_NAME: str = encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name
DEFAULT_SPLIT = "train"
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_LENGTH = 128
CHECKPOINT_SOURCE = "checkpoint"  # EncoderInfo.source of a RefreshFromCheckpoint run
DEFAULT_COMPARE_SAMPLE = 1000
MAX_COMPARE_SAMPLE = 100_000  # rows whose vectors CompareVersions reads from each version
DEFAULT_KEEP_LATEST = 1

_FORMATS: dict[int, UploadFormat | None] = {
    encoder_pb2.FILE_FORMAT_UNSPECIFIED: None,
    encoder_pb2.FILE_FORMAT_JSONL: UploadFormat.JSONL,
    encoder_pb2.FILE_FORMAT_CSV: UploadFormat.CSV,
}


class _Cancelled(Exception):
    """Stops an embedding run whose client has gone away."""


def version_message(info: VersionInfo) -> common_pb2.EmbeddingVersion:
    return common_pb2.EmbeddingVersion(
        pool=info.pool,
        version=info.version,
        table_version=info.table_version,
        model_id=info.model_id,
        checkpoint_hash=info.checkpoint_hash,
        backend=info.backend,
        pooling=info.pooling,
        dim=info.dim,
        max_length=info.max_length,
        status=info.status,
        row_count=info.row_count,
        created_at=info.created_at,
        truncated_texts=info.truncated_texts,
        precision=info.precision,
        pinned=info.pinned,
        source=info.source,
        label_count=info.label_count,
        label_set_hash=info.label_set_hash,
    )


class _Upload(NamedTuple):
    pool: str
    split: str
    format: UploadFormat | None
    data: bytes


def _read_upload(chunks: Iterator[encoder_pb2.IngestPoolChunk], max_bytes: int) -> _Upload:
    """The validated header of the first chunk and the concatenated data of all chunks."""
    first = next(chunks, None)
    if first is None or not first.HasField("header"):
        raise InvalidArgumentError(
            "the first IngestPoolChunk must carry the header (pool, split, format)"
        )
    header = first.header
    check_strings(header, prefix="header.")
    pool = check_name("pool", header.pool)
    split = check_name("split", header.split or DEFAULT_SPLIT)
    if header.format not in _FORMATS:
        raise InvalidArgumentError(f"unknown file format {header.format}; use JSONL or CSV")
    data = bytearray()
    for index, chunk in enumerate(itertools.chain([first], chunks)):
        if index and chunk.HasField("header"):
            raise InvalidArgumentError("only the first IngestPoolChunk may carry a header")
        data += chunk.data
        if len(data) > max_bytes:
            raise ResourceExhaustedError(
                f"the upload is larger than the server's limit of {max_bytes} bytes "
                "(--max-upload-mb); split it into several splits or raise the limit"
            )
    return _Upload(pool, split, _FORMATS[header.format], bytes(data))


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(
        self,
        store: Store,
        settings: EncoderSettings,
        encoders: EncoderCache | None = None,
        metrics: EncoderMetrics | None = None,
    ):
        self._store = store
        self._settings = settings
        self._encoders = encoders or EncoderCache(settings.onnx_cache)
        self._metrics = metrics or EncoderMetrics()
        self._default_loaded = False

    def check_ready(self) -> None:
        """Readiness: the store answers and the default model (the `--backend`, 128 tokens,
        the default precision) is loaded; raises otherwise. It loads once, on the first check."""
        self._store.check_reachable()
        if not self._default_loaded:
            precision = self._precision("", "", DEFAULT_MODEL)
            self._encoders.get(DEFAULT_MODEL, self._settings.backend, DEFAULT_MAX_LENGTH, precision)
            self._default_loaded = True

    def _precision(self, backend: str, requested: str, model: str) -> str:
        """The precision a run uses: `requested`, else the `--precision` setting, where
        "auto" is the machine's default (logged with why; the version records the choice)."""
        resolved = resolve_precision(
            backend or self._settings.backend,
            requested or self._settings.precision,
            model or DEFAULT_MODEL,
        )
        if resolved.reason != "requested":
            log.info("precision %s (%s)", resolved.precision, resolved.reason)
        return resolved.precision

    def IngestPool(
        self, request_iterator: Iterator[encoder_pb2.IngestPoolChunk], context: grpc.ServicerContext
    ) -> encoder_pb2.IngestPoolResponse:
        upload = _read_upload(request_iterator, self._settings.max_upload_bytes)
        result = ingest_upload(
            self._store,
            upload.pool,
            upload.split,
            upload.data,
            upload.format,
            self._settings.max_text_chars,
        )
        return encoder_pb2.IngestPoolResponse(
            pool=result.pool,
            split=result.split,
            rows_added=result.rows_added,
            total_rows=result.total_rows,
            first_id=result.first_id,
            classes=result.classes,
        )

    def EmbedPool(
        self, request: encoder_pb2.EmbedPoolRequest, context: grpc.ServicerContext
    ) -> Iterator[encoder_pb2.EmbedProgress]:
        check_strings(request)
        batch_size = check_batch_size(request.batch_size or DEFAULT_BATCH_SIZE)
        # NOT_FOUND and a bad worker count before loading a model
        rows = self._store.pool_rows(request.pool, columns=["id"]).num_rows
        workers = check_workers(request.workers, rows, self._settings.max_embed_workers)
        encoder = self._encoders.get(
            request.model or DEFAULT_MODEL,
            request.backend or self._settings.backend,
            request.max_length or DEFAULT_MAX_LENGTH,
            self._precision(request.backend, request.precision, request.model),
        )
        yield from self._stream_run(request.pool, encoder, batch_size, context, workers=workers)

    def RefreshFromCheckpoint(
        self, request: encoder_pb2.RefreshRequest, context: grpc.ServicerContext
    ) -> Iterator[encoder_pb2.EmbedProgress]:
        check_strings(request)
        batch_size = check_batch_size(request.batch_size or DEFAULT_BATCH_SIZE)
        if request.label_count < 0:
            raise InvalidArgumentError(f"label_count must be >= 0, got {request.label_count}")
        self._store.pool_rows(request.pool, columns=["id"])  # NOT_FOUND before loading a model
        # A bad checkpoint fails here, before a run (and its version row) exists. The merged
        # model only has to outlive loading: the encoder holds it in memory afterwards.
        with tempfile.TemporaryDirectory(prefix="proxal-refresh-") as work_dir:
            checkpoint = resolve_checkpoint(
                request.checkpoint, self._settings.checkpoint_root, Path(work_dir)
            )
            encoder = build_encoder(
                DEFAULT_MODEL,
                request.backend or self._settings.backend,
                request.max_length or DEFAULT_MAX_LENGTH,
                self._settings.onnx_cache,
                self._precision(request.backend, request.precision, DEFAULT_MODEL),
                model_path=checkpoint.model_dir,
            )
        info = replace(
            encoder_info(encoder),
            model_id=request.checkpoint,
            checkpoint_hash=checkpoint.checkpoint_hash,
            source=CHECKPOINT_SOURCE,
            label_count=request.label_count,
            label_set_hash=request.label_set_hash,
        )
        yield from self._stream_run(request.pool, encoder, batch_size, context, info)

    def _stream_run(
        self,
        pool: str,
        encoder: Encoder,
        batch_size: int,
        context: grpc.ServicerContext,
        info: EncoderInfo | None = None,
        workers: int = 1,
    ) -> Iterator[encoder_pb2.EmbedProgress]:
        """Embed `pool` on a worker thread (fanned out to `workers` processes if > 1),
        streaming its progress and then its version."""
        # The run happens on its own thread so progress streams while it works; a client
        # that goes away stops it at the next batch (and the store records it failed).
        updates: queue.Queue[Progress | VersionInfo | BaseException] = queue.Queue()
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        tracked = self._metrics.run(pool)

        def report(progress: Progress) -> None:
            if cancelled.is_set():
                raise _Cancelled
            tracked.progress(progress.rows_done, progress.rows_total)
            updates.put(progress)

        def run() -> None:
            try:
                if workers > 1:
                    result = fan_out(
                        self._store, pool, encoder, workers, batch_size, self._settings, report
                    )
                else:
                    result = embed_pool(
                        self._store,
                        pool,
                        encoder,
                        batch_size,
                        report,
                        chunk_rows=self._settings.write_chunk_rows,
                        info=info,
                    )
                updates.put(result)
            except BaseException as exc:
                updates.put(exc)
            finally:
                tracked.done()

        threading.Thread(target=run, name=f"embed-{pool}").start()
        rate = 0.0
        while True:
            item = updates.get()
            if isinstance(item, _Cancelled):
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, VersionInfo):
                yield encoder_pb2.EmbedProgress(
                    rows_done=item.row_count,
                    rows_total=item.row_count,
                    rows_per_second=rate,
                    version=version_message(item),
                )
                return
            rate = item.rows_per_second
            yield encoder_pb2.EmbedProgress(
                rows_done=item.rows_done,
                rows_total=item.rows_total,
                rows_per_second=item.rows_per_second,
                eta_seconds=item.eta_seconds,
            )

    def ListVersions(
        self, request: encoder_pb2.ListVersionsRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.ListVersionsResponse:
        check_strings(request)
        versions = self._store.list_versions(request.pool, request.include_incomplete)
        return encoder_pb2.ListVersionsResponse(versions=[version_message(v) for v in versions])

    def GetVersion(
        self, request: encoder_pb2.VersionRequest, context: grpc.ServicerContext
    ) -> common_pb2.EmbeddingVersion:
        check_strings(request)
        return version_message(self._store.get_version(request.pool, request.version))

    def PinVersion(
        self, request: encoder_pb2.VersionRequest, context: grpc.ServicerContext
    ) -> common_pb2.EmbeddingVersion:
        check_strings(request)
        return version_message(self._store.pin_version(request.pool, request.version))

    def UnpinVersion(
        self, request: encoder_pb2.VersionRequest, context: grpc.ServicerContext
    ) -> common_pb2.EmbeddingVersion:
        check_strings(request)
        return version_message(self._store.unpin_version(request.pool, request.version))

    def DeleteVersion(
        self, request: encoder_pb2.VersionRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.DeleteVersionResponse:
        check_strings(request)
        info = self._store.delete_version(request.pool, request.version)
        return encoder_pb2.DeleteVersionResponse(pool=info.pool, version=info.version)

    def CompareVersions(
        self, request: encoder_pb2.CompareVersionsRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.CompareVersionsResponse:
        check_strings(request)
        if not 0 <= request.sample <= MAX_COMPARE_SAMPLE:
            raise InvalidArgumentError(
                f"sample must be in 1..{MAX_COMPARE_SAMPLE} (0 means {DEFAULT_COMPARE_SAMPLE}), "
                f"got {request.sample}"
            )
        result = self._store.compare_versions(
            request.pool,
            request.version_a,
            request.version_b,
            sample=request.sample or DEFAULT_COMPARE_SAMPLE,
            seed=request.seed,
        )
        return encoder_pb2.CompareVersionsResponse(
            rows_a=result.rows_a,
            rows_b=result.rows_b,
            common_ids=result.common_ids,
            sampled=result.sampled,
            mean_cosine=result.mean_cosine,
            same_dim=result.same_dim,
        )

    def CleanupVersions(
        self, request: encoder_pb2.CleanupVersionsRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.CleanupVersionsResponse:
        check_strings(request)
        # proto3 cannot tell 0 from unset: 0 means the default; use DeleteVersion for the last.
        result = self._store.cleanup_versions(
            request.pool, request.keep_latest or DEFAULT_KEEP_LATEST
        )
        return encoder_pb2.CleanupVersionsResponse(removed=result.removed, kept=result.kept)

    def GetPool(
        self, request: encoder_pb2.GetPoolRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.PoolInfo:
        check_strings(request)
        info = self._store.pool_info(request.pool)
        return encoder_pb2.PoolInfo(
            pool=info.pool,
            rows=info.rows,
            splits=[encoder_pb2.SplitCount(split=s, rows=n) for s, n in info.splits.items()],
            classes=info.classes,
        )
