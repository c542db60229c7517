"""The embedding store: versioned LanceDB tables shared by every proxal service."""

from proxal_store.store import (
    EmbeddingWriter,
    EncoderInfo,
    PoolInfo,
    RoundRecord,
    SessionRecord,
    Store,
    VersionInfo,
)

__all__ = [
    "EmbeddingWriter",
    "EncoderInfo",
    "PoolInfo",
    "RoundRecord",
    "SessionRecord",
    "Store",
    "VersionInfo",
]
