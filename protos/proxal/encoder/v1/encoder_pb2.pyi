from proxal.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_FORMAT_UNSPECIFIED: _ClassVar[FileFormat]
    FILE_FORMAT_JSONL: _ClassVar[FileFormat]
    FILE_FORMAT_CSV: _ClassVar[FileFormat]
FILE_FORMAT_UNSPECIFIED: FileFormat
FILE_FORMAT_JSONL: FileFormat
FILE_FORMAT_CSV: FileFormat

class PoolHeader(_message.Message):
    __slots__ = ("pool", "split", "format")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    pool: str
    split: str
    format: FileFormat
    def __init__(self, pool: _Optional[str] = ..., split: _Optional[str] = ..., format: _Optional[_Union[FileFormat, str]] = ...) -> None: ...

class IngestPoolChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PoolHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[PoolHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class IngestPoolResponse(_message.Message):
    __slots__ = ("pool", "split", "rows_added", "total_rows", "first_id", "classes")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ROWS_ADDED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    FIRST_ID_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    pool: str
    split: str
    rows_added: int
    total_rows: int
    first_id: int
    classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[str] = ..., split: _Optional[str] = ..., rows_added: _Optional[int] = ..., total_rows: _Optional[int] = ..., first_id: _Optional[int] = ..., classes: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedPoolRequest(_message.Message):
    __slots__ = ("pool", "model", "backend", "batch_size", "max_length", "precision", "workers")
    POOL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    model: str
    backend: str
    batch_size: int
    max_length: int
    precision: str
    workers: int
    def __init__(self, pool: _Optional[str] = ..., model: _Optional[str] = ..., backend: _Optional[str] = ..., batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., precision: _Optional[str] = ..., workers: _Optional[int] = ...) -> None: ...

class RefreshRequest(_message.Message):
    __slots__ = ("pool", "checkpoint", "backend", "batch_size", "max_length", "precision", "label_count", "label_set_hash")
    POOL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_HASH_FIELD_NUMBER: _ClassVar[int]
    pool: str
    checkpoint: str
    backend: str
    batch_size: int
    max_length: int
    precision: str
    label_count: int
    label_set_hash: str
    def __init__(self, pool: _Optional[str] = ..., checkpoint: _Optional[str] = ..., backend: _Optional[str] = ..., batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., precision: _Optional[str] = ..., label_count: _Optional[int] = ..., label_set_hash: _Optional[str] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ("pool", "version")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    pool: str
    version: str
    def __init__(self, pool: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteVersionResponse(_message.Message):
    __slots__ = ("pool", "version")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    pool: str
    version: str
    def __init__(self, pool: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class CompareVersionsRequest(_message.Message):
    __slots__ = ("pool", "version_a", "version_b", "sample", "seed")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VERSION_A_FIELD_NUMBER: _ClassVar[int]
    VERSION_B_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    pool: str
    version_a: str
    version_b: str
    sample: int
    seed: int
    def __init__(self, pool: _Optional[str] = ..., version_a: _Optional[str] = ..., version_b: _Optional[str] = ..., sample: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class CompareVersionsResponse(_message.Message):
    __slots__ = ("rows_a", "rows_b", "common_ids", "sampled", "mean_cosine", "same_dim")
    ROWS_A_FIELD_NUMBER: _ClassVar[int]
    ROWS_B_FIELD_NUMBER: _ClassVar[int]
    COMMON_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    MEAN_COSINE_FIELD_NUMBER: _ClassVar[int]
    SAME_DIM_FIELD_NUMBER: _ClassVar[int]
    rows_a: int
    rows_b: int
    common_ids: int
    sampled: int
    mean_cosine: float
    same_dim: bool
    def __init__(self, rows_a: _Optional[int] = ..., rows_b: _Optional[int] = ..., common_ids: _Optional[int] = ..., sampled: _Optional[int] = ..., mean_cosine: _Optional[float] = ..., same_dim: _Optional[bool] = ...) -> None: ...

class CleanupVersionsRequest(_message.Message):
    __slots__ = ("pool", "keep_latest")
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEEP_LATEST_FIELD_NUMBER: _ClassVar[int]
    pool: str
    keep_latest: int
    def __init__(self, pool: _Optional[str] = ..., keep_latest: _Optional[int] = ...) -> None: ...

class CleanupVersionsResponse(_message.Message):
    __slots__ = ("removed", "kept")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    removed: _containers.RepeatedScalarFieldContainer[str]
    kept: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, removed: _Optional[_Iterable[str]] = ..., kept: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedProgress(_message.Message):
    __slots__ = ("rows_done", "rows_total", "rows_per_second", "eta_seconds", "version")
    ROWS_DONE_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    rows_done: int
    rows_total: int
    rows_per_second: float
    eta_seconds: float
    version: _common_pb2.EmbeddingVersion
    def __init__(self, rows_done: _Optional[int] = ..., rows_total: _Optional[int] = ..., rows_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., version: _Optional[_Union[_common_pb2.EmbeddingVersion, _Mapping]] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("pool", "include_incomplete")
    POOL_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INCOMPLETE_FIELD_NUMBER: _ClassVar[int]
    pool: str
    include_incomplete: bool
    def __init__(self, pool: _Optional[str] = ..., include_incomplete: _Optional[bool] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.EmbeddingVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[_common_pb2.EmbeddingVersion, _Mapping]]] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class SplitCount(_message.Message):
    __slots__ = ("split", "rows")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    split: str
    rows: int
    def __init__(self, split: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class PoolInfo(_message.Message):
    __slots__ = ("pool", "rows", "splits", "classes")
    POOL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    pool: str
    rows: int
    splits: _containers.RepeatedCompositeFieldContainer[SplitCount]
    classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[str] = ..., rows: _Optional[int] = ..., splits: _Optional[_Iterable[_Union[SplitCount, _Mapping]]] = ..., classes: _Optional[_Iterable[str]] = ...) -> None: ...
