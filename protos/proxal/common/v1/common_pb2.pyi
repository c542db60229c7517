from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Int64Array(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class Int32Array(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class Float32Array(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class EmbeddingVersion(_message.Message):
    __slots__ = ("pool", "version", "table_version", "model_id", "checkpoint_hash", "backend", "pooling", "dim", "max_length", "status", "row_count", "created_at", "truncated_texts", "precision", "pinned", "source", "label_count", "label_set_hash")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_HASH_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_TEXTS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_HASH_FIELD_NUMBER: _ClassVar[int]
    pool: str
    version: str
    table_version: int
    model_id: str
    checkpoint_hash: str
    backend: str
    pooling: str
    dim: int
    max_length: int
    status: str
    row_count: int
    created_at: str
    truncated_texts: int
    precision: str
    pinned: bool
    source: str
    label_count: int
    label_set_hash: str
    def __init__(self, pool: _Optional[str] = ..., version: _Optional[str] = ..., table_version: _Optional[int] = ..., model_id: _Optional[str] = ..., checkpoint_hash: _Optional[str] = ..., backend: _Optional[str] = ..., pooling: _Optional[str] = ..., dim: _Optional[int] = ..., max_length: _Optional[int] = ..., status: _Optional[str] = ..., row_count: _Optional[int] = ..., created_at: _Optional[str] = ..., truncated_texts: _Optional[int] = ..., precision: _Optional[str] = ..., pinned: _Optional[bool] = ..., source: _Optional[str] = ..., label_count: _Optional[int] = ..., label_set_hash: _Optional[str] = ...) -> None: ...
