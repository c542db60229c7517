"""Progress bars for long steps seen from the client side (rich output via tqdm)."""

from __future__ import annotations

from proxal.common.v1 import common_pb2
from proxal.encoder.v1 import encoder_pb2
from proxal.orchestrator_service.rpc.clients import EncoderClient
from tqdm import tqdm


def embed_with_progress(
    client: EncoderClient,
    pool: str,
    backend: str = "",
    precision: str = "",
    model: str = "",
    batch_size: int = 0,
    max_length: int = 0,
) -> common_pb2.EmbeddingVersion:
    """EmbedPool with a progress bar fed by the server's stream (rows, rate, ETA)."""
    # delay: a call refused at once (bad pool, server down) leaves no empty bar behind
    with tqdm(desc=f"embedding {pool}", unit="text", delay=0.5) as bar:

        def update(message: encoder_pb2.EmbedProgress) -> None:
            bar.total = message.rows_total
            bar.n = message.rows_done
            bar.set_postfix(  # one refresh per message: a log file gets one line each
                rate=f"{message.rows_per_second:.0f}/s",
                eta=f"{message.eta_seconds:.0f}s",
                refresh=False,
            )
            bar.refresh()

        return client.embed(
            pool,
            backend=backend,
            precision=precision,
            model=model,
            batch_size=batch_size,
            max_length=max_length,
            on_progress=update,
        )


def describe(version: common_pb2.EmbeddingVersion) -> str:
    """One line about a version, e.g. for the CLI's listing."""
    lineage = (
        f", from checkpoint {version.checkpoint_hash[:12]} ({version.label_count} labels)"
        if version.source == "checkpoint"
        else ""
    )
    pinned = ", pinned" if version.pinned else ""
    return (
        f"{version.version}: {version.status}, {version.row_count} x {version.dim}, "
        f"{version.model_id} {version.backend}/{version.precision or 'fp32'}, "
        f"{version.truncated_texts} truncated, created {version.created_at}{lineage}{pinned}"
    )
