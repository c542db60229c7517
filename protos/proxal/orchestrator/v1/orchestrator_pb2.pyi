from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSessionRequest(_message.Message):
    __slots__ = ("session", "pool", "embedding_version", "strategy", "batch_size", "seed", "split", "classes")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    session: str
    pool: str
    embedding_version: str
    strategy: str
    batch_size: int
    seed: int
    split: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session: _Optional[str] = ..., pool: _Optional[str] = ..., embedding_version: _Optional[str] = ..., strategy: _Optional[str] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., split: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session", "pool", "embedding_version", "strategy", "batch_size", "seed", "split", "labels", "rounds", "classes", "created_at")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    session: str
    pool: str
    embedding_version: str
    strategy: str
    batch_size: int
    seed: int
    split: str
    labels: int
    rounds: int
    classes: _containers.RepeatedScalarFieldContainer[str]
    created_at: str
    def __init__(self, session: _Optional[str] = ..., pool: _Optional[str] = ..., embedding_version: _Optional[str] = ..., strategy: _Optional[str] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., split: _Optional[str] = ..., labels: _Optional[int] = ..., rounds: _Optional[int] = ..., classes: _Optional[_Iterable[str]] = ..., created_at: _Optional[str] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class NextBatchRequest(_message.Message):
    __slots__ = ("session", "k")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    session: str
    k: int
    def __init__(self, session: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class NextBatchResponse(_message.Message):
    __slots__ = ("items", "strategy", "fallback_reason", "round")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    strategy: str
    fallback_reason: str
    round: int
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., strategy: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("id", "label")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    id: int
    label: str
    def __init__(self, id: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class SubmitLabelsRequest(_message.Message):
    __slots__ = ("session", "labels")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    session: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, session: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class SubmitLabelsResponse(_message.Message):
    __slots__ = ("accepted", "total_labels")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LABELS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    total_labels: int
    def __init__(self, accepted: _Optional[int] = ..., total_labels: _Optional[int] = ...) -> None: ...
