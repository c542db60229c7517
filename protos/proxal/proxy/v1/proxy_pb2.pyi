from proxal.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifierSpec(_message.Message):
    __slots__ = ("kind", "c", "max_iter", "balanced")
    KIND_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    MAX_ITER_FIELD_NUMBER: _ClassVar[int]
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    kind: str
    c: float
    max_iter: int
    balanced: bool
    def __init__(self, kind: _Optional[str] = ..., c: _Optional[float] = ..., max_iter: _Optional[int] = ..., balanced: _Optional[bool] = ...) -> None: ...

class TrainingSet(_message.Message):
    __slots__ = ("ids", "labels", "num_classes")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ids: _common_pb2.Int64Array
    labels: _common_pb2.Int32Array
    num_classes: int
    def __init__(self, ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., labels: _Optional[_Union[_common_pb2.Int32Array, _Mapping]] = ..., num_classes: _Optional[int] = ...) -> None: ...

class IdRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class ShardPart(_message.Message):
    __slots__ = ("index", "count")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    index: int
    count: int
    def __init__(self, index: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class Shard(_message.Message):
    __slots__ = ("range", "ids", "part")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    range: IdRange
    ids: _common_pb2.Int64Array
    part: ShardPart
    def __init__(self, range: _Optional[_Union[IdRange, _Mapping]] = ..., ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., part: _Optional[_Union[ShardPart, _Mapping]] = ...) -> None: ...

class Subsampling(_message.Message):
    __slots__ = ("gamma", "temperature", "previous_ids", "previous_scores")
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_IDS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SCORES_FIELD_NUMBER: _ClassVar[int]
    gamma: float
    temperature: float
    previous_ids: _common_pb2.Int64Array
    previous_scores: _common_pb2.Float32Array
    def __init__(self, gamma: _Optional[float] = ..., temperature: _Optional[float] = ..., previous_ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., previous_scores: _Optional[_Union[_common_pb2.Float32Array, _Mapping]] = ...) -> None: ...

class SelectRequest(_message.Message):
    __slots__ = ("pool", "embedding_version", "training", "classifier", "strategy", "k", "seed", "candidate_ids", "shard", "subsampling", "return_scores", "mc_samples", "initial", "class_balanced", "precision", "adopt")
    POOL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SUBSAMPLING_FIELD_NUMBER: _ClassVar[int]
    RETURN_SCORES_FIELD_NUMBER: _ClassVar[int]
    MC_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    CLASS_BALANCED_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    ADOPT_FIELD_NUMBER: _ClassVar[int]
    pool: str
    embedding_version: str
    training: TrainingSet
    classifier: ClassifierSpec
    strategy: str
    k: int
    seed: int
    candidate_ids: _common_pb2.Int64Array
    shard: Shard
    subsampling: Subsampling
    return_scores: bool
    mc_samples: int
    initial: str
    class_balanced: bool
    precision: str
    adopt: bool
    def __init__(self, pool: _Optional[str] = ..., embedding_version: _Optional[str] = ..., training: _Optional[_Union[TrainingSet, _Mapping]] = ..., classifier: _Optional[_Union[ClassifierSpec, _Mapping]] = ..., strategy: _Optional[str] = ..., k: _Optional[int] = ..., seed: _Optional[int] = ..., candidate_ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., shard: _Optional[_Union[Shard, _Mapping]] = ..., subsampling: _Optional[_Union[Subsampling, _Mapping]] = ..., return_scores: _Optional[bool] = ..., mc_samples: _Optional[int] = ..., initial: _Optional[str] = ..., class_balanced: _Optional[bool] = ..., precision: _Optional[str] = ..., adopt: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("ids", "scores", "strategy", "fallback_reason", "timings", "candidates", "scored_ids", "scored_scores", "predicted_labels", "predicted_probabilities", "precision", "rescored")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SCORED_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORED_SCORES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABELS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RESCORED_FIELD_NUMBER: _ClassVar[int]
    ids: _common_pb2.Int64Array
    scores: _common_pb2.Float32Array
    strategy: str
    fallback_reason: str
    timings: Timings
    candidates: int
    scored_ids: _common_pb2.Int64Array
    scored_scores: _common_pb2.Float32Array
    predicted_labels: _common_pb2.Int32Array
    predicted_probabilities: _common_pb2.Float32Array
    precision: str
    rescored: int
    def __init__(self, ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., scores: _Optional[_Union[_common_pb2.Float32Array, _Mapping]] = ..., strategy: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., candidates: _Optional[int] = ..., scored_ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., scored_scores: _Optional[_Union[_common_pb2.Float32Array, _Mapping]] = ..., predicted_labels: _Optional[_Union[_common_pb2.Int32Array, _Mapping]] = ..., predicted_probabilities: _Optional[_Union[_common_pb2.Float32Array, _Mapping]] = ..., precision: _Optional[str] = ..., rescored: _Optional[int] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("id", "label")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    id: int
    label: int
    def __init__(self, id: _Optional[int] = ..., label: _Optional[int] = ...) -> None: ...

class SequentialRequest(_message.Message):
    __slots__ = ("start", "label")
    START_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    start: SelectRequest
    label: Label
    def __init__(self, start: _Optional[_Union[SelectRequest, _Mapping]] = ..., label: _Optional[_Union[Label, _Mapping]] = ...) -> None: ...

class SequentialResponse(_message.Message):
    __slots__ = ("id", "score", "strategy", "fallback_reason", "timings", "labels", "latency_s")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    id: int
    score: float
    strategy: str
    fallback_reason: str
    timings: Timings
    labels: int
    latency_s: float
    def __init__(self, id: _Optional[int] = ..., score: _Optional[float] = ..., strategy: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., labels: _Optional[int] = ..., latency_s: _Optional[float] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("pool", "embedding_version", "training", "classifier", "seed", "ids", "strategy")
    POOL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    pool: str
    embedding_version: str
    training: TrainingSet
    classifier: ClassifierSpec
    seed: int
    ids: _common_pb2.Int64Array
    strategy: str
    def __init__(self, pool: _Optional[str] = ..., embedding_version: _Optional[str] = ..., training: _Optional[_Union[TrainingSet, _Mapping]] = ..., classifier: _Optional[_Union[ClassifierSpec, _Mapping]] = ..., seed: _Optional[int] = ..., ids: _Optional[_Union[_common_pb2.Int64Array, _Mapping]] = ..., strategy: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("labels", "confidence", "timings", "scores")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    labels: _common_pb2.Int32Array
    confidence: _common_pb2.Float32Array
    timings: Timings
    scores: _common_pb2.Float32Array
    def __init__(self, labels: _Optional[_Union[_common_pb2.Int32Array, _Mapping]] = ..., confidence: _Optional[_Union[_common_pb2.Float32Array, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., scores: _Optional[_Union[_common_pb2.Float32Array, _Mapping]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("shard", "precision", "float16_min_rows")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    FLOAT16_MIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardPart
    precision: str
    float16_min_rows: int
    def __init__(self, shard: _Optional[_Union[ShardPart, _Mapping]] = ..., precision: _Optional[str] = ..., float16_min_rows: _Optional[int] = ...) -> None: ...
