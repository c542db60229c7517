"""The embedding store: versioned LanceDB tables shared by every proxal service."""

from proxal.store.store import (
    CleanupResult,
    EmbeddingWriter,
    EncoderInfo,
    JobRecord,
    PoolInfo,
    RoundRecord,
    SessionRecord,
    Store,
    VersionComparison,
    VersionIndex,
    VersionInfo,
)

__all__ = [
    "CleanupResult",
    "EmbeddingWriter",
    "EncoderInfo",
    "JobRecord",
    "PoolInfo",
    "RoundRecord",
    "SessionRecord",
    "Store",
    "VersionComparison",
    "VersionIndex",
    "VersionInfo",
]
