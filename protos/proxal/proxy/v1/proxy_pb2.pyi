from proxal.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifierSpec(_message.Message):
    __slots__ = ("kind", "c", "max_iter")
    KIND_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    MAX_ITER_FIELD_NUMBER: _ClassVar[int]
    kind: str
    c: float
    max_iter: int
    def __init__(self, kind: _Optional[str] = ..., c: _Optional[float] = ..., max_iter: _Optional[int] = ...) -> None: ...

class TrainingSet(_message.Message):
    __slots__ = ("ids", "labels", "num_classes")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ids: _common_pb2.Int64Array
    labels: _common_pb2.Int32Array
    num_classes: int
    def __init__(self, ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., labels: _Optional[_Union[_common_pb2.Int32Array, _Mapping]] = ..., num_classes: _Optional[int] = ...) -> None: ...

class SelectRequest(_message.Message):
    __slots__ = ("pool", "embedding_version", "training", "classifier", "strategy", "k", "seed", "candidate_ids")
    POOL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    embedding_version: str
    training: TrainingSet
    classifier: ClassifierSpec
    strategy: str
    k: int
    seed: int
    candidate_ids: _common_pb2.Int64Array
    def __init__(self, pool: _Optional[str] = ..., embedding_version: _Optional[str] = ..., training: _Optional[_Union[TrainingSet, _Mapping]] = ..., classifier: _Optional[_Union[ClassifierSpec, _Mapping]] = ..., strategy: _Optional[str] = ..., k: _Optional[int] = ..., seed: _Optional[int] = ..., candidate_ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("load_s", "fit_s", "score_s", "select_s")
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    FIT_S_FIELD_NUMBER: _ClassVar[int]
    SCORE_S_FIELD_NUMBER: _ClassVar[int]
    SELECT_S_FIELD_NUMBER: _ClassVar[int]
    load_s: float
    fit_s: float
    score_s: float
    select_s: float
    def __init__(self, load_s: _Optional[float] = ..., fit_s: _Optional[float] = ..., score_s: _Optional[float] = ..., select_s: _Optional[float] = ...) -> None: ...

class SelectResponse(_message.Message):
    __slots__ = ("ids", "scores", "strategy", "fallback_reason", "timings", "candidates")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ids: _common_pb2.Int64Array
    scores: _common_pb2.Float32Array
    strategy: str
    fallback_reason: str
    timings: Timings
    candidates: int
    def __init__(self, ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., scores: _Optional[_Union[_common_pb2.Float32Array, _Mapping]] = ..., strategy: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., candidates: _Optional[int] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("pool", "embedding_version", "training", "classifier", "seed", "ids")
    POOL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    embedding_version: str
    training: TrainingSet
    classifier: ClassifierSpec
    seed: int
    ids: _common_pb2.Int64Array
    def __init__(self, pool: _Optional[str] = ..., embedding_version: _Optional[str] = ..., training: _Optional[_Union[TrainingSet, _Mapping]] = ..., classifier: _Optional[_Union[ClassifierSpec, _Mapping]] = ..., seed: _Optional[int] = ..., ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("labels", "confidence", "timings")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    labels: _common_pb2.Int32Array
    confidence: _common_pb2.Float32Array
    timings: Timings
    def __init__(self, labels: _Optional[_Union[_common_pb2.Int32Array, _Mapping]] = ..., confidence: _Optional[_Union[_common_pb2.Float32Array, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...
