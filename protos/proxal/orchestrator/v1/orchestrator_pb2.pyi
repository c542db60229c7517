from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_JSONL: _ClassVar[ExportFormat]
    EXPORT_FORMAT_CSV: _ClassVar[ExportFormat]
    EXPORT_FORMAT_LABEL_STUDIO: _ClassVar[ExportFormat]
    EXPORT_FORMAT_PARQUET: _ClassVar[ExportFormat]
    EXPORT_FORMAT_HF_DATASET: _ClassVar[ExportFormat]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_JSONL: ExportFormat
EXPORT_FORMAT_CSV: ExportFormat
EXPORT_FORMAT_LABEL_STUDIO: ExportFormat
EXPORT_FORMAT_PARQUET: ExportFormat
EXPORT_FORMAT_HF_DATASET: ExportFormat
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState

class CreateSessionRequest(_message.Message):
    __slots__ = ("session", "pool", "embedding_version", "strategy", "batch_size", "seed", "split", "classes", "lease_seconds", "classifier", "classifier_c", "classifier_max_iter", "classifier_balanced", "ups", "asvp", "initial_batch", "class_balanced")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_C_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_MAX_ITER_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_BALANCED_FIELD_NUMBER: _ClassVar[int]
    UPS_FIELD_NUMBER: _ClassVar[int]
    ASVP_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BATCH_FIELD_NUMBER: _ClassVar[int]
    CLASS_BALANCED_FIELD_NUMBER: _ClassVar[int]
    session: str
    pool: str
    embedding_version: str
    strategy: str
    batch_size: int
    seed: int
    split: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    lease_seconds: float
    classifier: str
    classifier_c: float
    classifier_max_iter: int
    classifier_balanced: bool
    ups: UpsSettings
    asvp: AsvpSettings
    initial_batch: str
    class_balanced: bool
    def __init__(self, session: _Optional[str] = ..., pool: _Optional[str] = ..., embedding_version: _Optional[str] = ..., strategy: _Optional[str] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., split: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., lease_seconds: _Optional[float] = ..., classifier: _Optional[str] = ..., classifier_c: _Optional[float] = ..., classifier_max_iter: _Optional[int] = ..., classifier_balanced: _Optional[bool] = ..., ups: _Optional[_Union[UpsSettings, _Mapping]] = ..., asvp: _Optional[_Union[AsvpSettings, _Mapping]] = ..., initial_batch: _Optional[str] = ..., class_balanced: _Optional[bool] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session", "pool", "embedding_version", "strategy", "batch_size", "seed", "split", "labels", "rounds", "classes", "created_at", "lease_seconds", "classifier", "problem", "classifier_c", "classifier_max_iter", "classifier_balanced", "ups", "asvp", "lineage", "initial_batch", "class_balanced")
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
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_C_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_MAX_ITER_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_BALANCED_FIELD_NUMBER: _ClassVar[int]
    UPS_FIELD_NUMBER: _ClassVar[int]
    ASVP_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BATCH_FIELD_NUMBER: _ClassVar[int]
    CLASS_BALANCED_FIELD_NUMBER: _ClassVar[int]
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
    lease_seconds: float
    classifier: str
    problem: str
    classifier_c: float
    classifier_max_iter: int
    classifier_balanced: bool
    ups: UpsSettings
    asvp: AsvpSettings
    lineage: _containers.RepeatedScalarFieldContainer[str]
    initial_batch: str
    class_balanced: bool
    def __init__(self, session: _Optional[str] = ..., pool: _Optional[str] = ..., embedding_version: _Optional[str] = ..., strategy: _Optional[str] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., split: _Optional[str] = ..., labels: _Optional[int] = ..., rounds: _Optional[int] = ..., classes: _Optional[_Iterable[str]] = ..., created_at: _Optional[str] = ..., lease_seconds: _Optional[float] = ..., classifier: _Optional[str] = ..., problem: _Optional[str] = ..., classifier_c: _Optional[float] = ..., classifier_max_iter: _Optional[int] = ..., classifier_balanced: _Optional[bool] = ..., ups: _Optional[_Union[UpsSettings, _Mapping]] = ..., asvp: _Optional[_Union[AsvpSettings, _Mapping]] = ..., lineage: _Optional[_Iterable[str]] = ..., initial_batch: _Optional[str] = ..., class_balanced: _Optional[bool] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session", "force")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    session: str
    force: bool
    def __init__(self, session: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ("session", "labels", "skipped", "label_events", "lease_events", "rounds")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LABEL_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    session: str
    labels: int
    skipped: int
    label_events: int
    lease_events: int
    rounds: int
    def __init__(self, session: _Optional[str] = ..., labels: _Optional[int] = ..., skipped: _Optional[int] = ..., label_events: _Optional[int] = ..., lease_events: _Optional[int] = ..., rounds: _Optional[int] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("session", "skip_stopping")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SKIP_STOPPING_FIELD_NUMBER: _ClassVar[int]
    session: str
    skip_stopping: bool
    def __init__(self, session: _Optional[str] = ..., skip_stopping: _Optional[bool] = ...) -> None: ...

class ClassCount(_message.Message):
    __slots__ = ("label", "count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    count: int
    def __init__(self, label: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class SessionStatus(_message.Message):
    __slots__ = ("session", "labels", "skipped", "leased", "remaining", "rounds", "embedding_version", "latest_version", "estimated_accuracy", "accuracy_note", "class_counts", "annotators", "labeled_classes", "accuracy_classes", "asvp", "lineage", "stopping")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_NOTE_FIELD_NUMBER: _ClassVar[int]
    CLASS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATORS_FIELD_NUMBER: _ClassVar[int]
    LABELED_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ASVP_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    session: Session
    labels: int
    skipped: int
    leased: int
    remaining: int
    rounds: int
    embedding_version: str
    latest_version: str
    estimated_accuracy: float
    accuracy_note: str
    class_counts: _containers.RepeatedCompositeFieldContainer[ClassCount]
    annotators: int
    labeled_classes: int
    accuracy_classes: int
    asvp: AsvpStatus
    lineage: _containers.RepeatedScalarFieldContainer[str]
    stopping: _containers.RepeatedCompositeFieldContainer[StoppingSignal]
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., labels: _Optional[int] = ..., skipped: _Optional[int] = ..., leased: _Optional[int] = ..., remaining: _Optional[int] = ..., rounds: _Optional[int] = ..., embedding_version: _Optional[str] = ..., latest_version: _Optional[str] = ..., estimated_accuracy: _Optional[float] = ..., accuracy_note: _Optional[str] = ..., class_counts: _Optional[_Iterable[_Union[ClassCount, _Mapping]]] = ..., annotators: _Optional[int] = ..., labeled_classes: _Optional[int] = ..., accuracy_classes: _Optional[int] = ..., asvp: _Optional[_Union[AsvpStatus, _Mapping]] = ..., lineage: _Optional[_Iterable[str]] = ..., stopping: _Optional[_Iterable[_Union[StoppingSignal, _Mapping]]] = ...) -> None: ...

class StoppingSignal(_message.Message):
    __slots__ = ("name", "rule", "value", "threshold", "stop", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    rule: str
    value: float
    threshold: float
    stop: bool
    note: str
    def __init__(self, name: _Optional[str] = ..., rule: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., stop: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class NextBatchRequest(_message.Message):
    __slots__ = ("session", "k", "annotator")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    session: str
    k: int
    annotator: str
    def __init__(self, session: _Optional[str] = ..., k: _Optional[int] = ..., annotator: _Optional[str] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "text", "suggestion")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SUGGESTION_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    suggestion: Suggestion
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., suggestion: _Optional[_Union[Suggestion, _Mapping]] = ...) -> None: ...

class Suggestion(_message.Message):
    __slots__ = ("label", "probability", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    score: float
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class NextBatchResponse(_message.Message):
    __slots__ = ("items", "strategy", "fallback_reason", "round", "lease_id", "lease_expires_at", "resumed")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    strategy: str
    fallback_reason: str
    round: int
    lease_id: str
    lease_expires_at: float
    resumed: bool
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., strategy: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., round: _Optional[int] = ..., lease_id: _Optional[str] = ..., lease_expires_at: _Optional[float] = ..., resumed: _Optional[bool] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("id", "label", "annotator")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    id: int
    label: str
    annotator: str
    def __init__(self, id: _Optional[int] = ..., label: _Optional[str] = ..., annotator: _Optional[str] = ...) -> None: ...

class SubmitLabelsRequest(_message.Message):
    __slots__ = ("session", "labels", "request_id", "annotator", "relabel")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    RELABEL_FIELD_NUMBER: _ClassVar[int]
    session: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    request_id: str
    annotator: str
    relabel: bool
    def __init__(self, session: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., request_id: _Optional[str] = ..., annotator: _Optional[str] = ..., relabel: _Optional[bool] = ...) -> None: ...

class SubmitLabelsResponse(_message.Message):
    __slots__ = ("accepted", "total_labels", "replayed", "already_labeled", "note")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LABELS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_LABELED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    total_labels: int
    replayed: bool
    already_labeled: int
    note: str
    def __init__(self, accepted: _Optional[int] = ..., total_labels: _Optional[int] = ..., replayed: _Optional[bool] = ..., already_labeled: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class SkipRequest(_message.Message):
    __slots__ = ("session", "ids", "request_id", "annotator")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    session: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    annotator: str
    def __init__(self, session: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ..., request_id: _Optional[str] = ..., annotator: _Optional[str] = ...) -> None: ...

class UndoRequest(_message.Message):
    __slots__ = ("session", "request_id", "annotator")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    session: str
    request_id: str
    annotator: str
    def __init__(self, session: _Optional[str] = ..., request_id: _Optional[str] = ..., annotator: _Optional[str] = ...) -> None: ...

class UndoneItem(_message.Message):
    __slots__ = ("id", "text", "label")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    label: str
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class UndoResponse(_message.Message):
    __slots__ = ("undone_request_id", "items", "lease_id", "lease_expires_at", "total_labels", "replayed")
    UNDONE_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LABELS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    undone_request_id: str
    items: _containers.RepeatedCompositeFieldContainer[UndoneItem]
    lease_id: str
    lease_expires_at: float
    total_labels: int
    replayed: bool
    def __init__(self, undone_request_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[UndoneItem, _Mapping]]] = ..., lease_id: _Optional[str] = ..., lease_expires_at: _Optional[float] = ..., total_labels: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ReleaseLeaseRequest(_message.Message):
    __slots__ = ("session", "annotator")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    session: str
    annotator: str
    def __init__(self, session: _Optional[str] = ..., annotator: _Optional[str] = ...) -> None: ...

class ReleaseLeaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: int
    def __init__(self, released: _Optional[int] = ...) -> None: ...

class ImportLabelsRequest(_message.Message):
    __slots__ = ("session", "labels", "request_id", "overwrite", "annotator")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    session: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    request_id: str
    overwrite: bool
    annotator: str
    def __init__(self, session: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., request_id: _Optional[str] = ..., overwrite: _Optional[bool] = ..., annotator: _Optional[str] = ...) -> None: ...

class ExportLabelsRequest(_message.Message):
    __slots__ = ("session", "format")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    session: str
    format: ExportFormat
    def __init__(self, session: _Optional[str] = ..., format: _Optional[_Union[ExportFormat, str]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("session", "ids")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    session: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, session: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("id", "suggestion")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUGGESTION_FIELD_NUMBER: _ClassVar[int]
    id: int
    suggestion: Suggestion
    def __init__(self, id: _Optional[int] = ..., suggestion: _Optional[_Union[Suggestion, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "strategy", "round", "embedding_version", "labels", "model_version", "note")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    strategy: str
    round: int
    embedding_version: str
    labels: int
    model_version: str
    note: str
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., strategy: _Optional[str] = ..., round: _Optional[int] = ..., embedding_version: _Optional[str] = ..., labels: _Optional[int] = ..., model_version: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class LookupItemsRequest(_message.Message):
    __slots__ = ("session", "texts")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    session: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupItemsResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RemoveLabelsRequest(_message.Message):
    __slots__ = ("session", "ids", "request_id", "annotator")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    session: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    annotator: str
    def __init__(self, session: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ..., request_id: _Optional[str] = ..., annotator: _Optional[str] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class PlasmOptions(_message.Message):
    __slots__ = ("enabled", "filter", "pool_sample", "heldout")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    POOL_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    filter: str
    pool_sample: int
    heldout: float
    def __init__(self, enabled: _Optional[bool] = ..., filter: _Optional[str] = ..., pool_sample: _Optional[int] = ..., heldout: _Optional[float] = ...) -> None: ...

class TrainSuccessorRequest(_message.Message):
    __slots__ = ("session", "method", "epochs", "batch_size", "max_length", "validation_fraction", "patience", "seed", "test_split", "skip_onnx", "plasm", "device", "time_budget_s", "model")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEST_SPLIT_FIELD_NUMBER: _ClassVar[int]
    SKIP_ONNX_FIELD_NUMBER: _ClassVar[int]
    PLASM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    session: str
    method: str
    epochs: int
    batch_size: int
    max_length: int
    validation_fraction: float
    patience: int
    seed: int
    test_split: str
    skip_onnx: bool
    plasm: PlasmOptions
    device: str
    time_budget_s: float
    model: str
    def __init__(self, session: _Optional[str] = ..., method: _Optional[str] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., validation_fraction: _Optional[float] = ..., patience: _Optional[int] = ..., seed: _Optional[int] = ..., test_split: _Optional[str] = ..., skip_onnx: _Optional[bool] = ..., plasm: _Optional[_Union[PlasmOptions, _Mapping]] = ..., device: _Optional[str] = ..., time_budget_s: _Optional[float] = ..., model: _Optional[str] = ...) -> None: ...

class TrainSuccessorResponse(_message.Message):
    __slots__ = ("job_id", "state", "queued_ahead", "device", "model_uri")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AHEAD_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    queued_ahead: int
    device: str
    model_uri: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., queued_ahead: _Optional[int] = ..., device: _Optional[str] = ..., model_uri: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "state", "session", "method", "device", "phase", "epoch", "epochs", "step", "total_steps", "loss", "message", "elapsed_s", "model_uri")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    session: str
    method: str
    device: str
    phase: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    message: str
    elapsed_s: float
    model_uri: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., session: _Optional[str] = ..., method: _Optional[str] = ..., device: _Optional[str] = ..., phase: _Optional[str] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., message: _Optional[str] = ..., elapsed_s: _Optional[float] = ..., model_uri: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("session", "job_id", "method", "uri", "files", "test_accuracy", "test_macro_f1", "labels", "created_at", "device", "train_seconds", "metrics_json")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_MACRO_F1_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    session: str
    job_id: str
    method: str
    uri: str
    files: _containers.RepeatedScalarFieldContainer[str]
    test_accuracy: float
    test_macro_f1: float
    labels: int
    created_at: str
    device: str
    train_seconds: float
    metrics_json: str
    def __init__(self, session: _Optional[str] = ..., job_id: _Optional[str] = ..., method: _Optional[str] = ..., uri: _Optional[str] = ..., files: _Optional[_Iterable[str]] = ..., test_accuracy: _Optional[float] = ..., test_macro_f1: _Optional[float] = ..., labels: _Optional[int] = ..., created_at: _Optional[str] = ..., device: _Optional[str] = ..., train_seconds: _Optional[float] = ..., metrics_json: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class UpsSettings(_message.Message):
    __slots__ = ("gamma", "temperature", "full_rounds", "full_every")
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    FULL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    FULL_EVERY_FIELD_NUMBER: _ClassVar[int]
    gamma: float
    temperature: float
    full_rounds: int
    full_every: int
    def __init__(self, gamma: _Optional[float] = ..., temperature: _Optional[float] = ..., full_rounds: _Optional[int] = ..., full_every: _Optional[int] = ...) -> None: ...

class AsvpSettings(_message.Message):
    __slots__ = ("every_rounds", "growth_factor", "threshold", "use_ped", "finetune_method", "finetune_epochs", "max_length", "finetune_batch_size", "time_budget_s", "keep_checkpoints")
    EVERY_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    GROWTH_FACTOR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    USE_PED_FIELD_NUMBER: _ClassVar[int]
    FINETUNE_METHOD_FIELD_NUMBER: _ClassVar[int]
    FINETUNE_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    FINETUNE_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    KEEP_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    every_rounds: int
    growth_factor: float
    threshold: float
    use_ped: bool
    finetune_method: str
    finetune_epochs: int
    max_length: int
    finetune_batch_size: int
    time_budget_s: float
    keep_checkpoints: bool
    def __init__(self, every_rounds: _Optional[int] = ..., growth_factor: _Optional[float] = ..., threshold: _Optional[float] = ..., use_ped: _Optional[bool] = ..., finetune_method: _Optional[str] = ..., finetune_epochs: _Optional[int] = ..., max_length: _Optional[int] = ..., finetune_batch_size: _Optional[int] = ..., time_budget_s: _Optional[float] = ..., keep_checkpoints: _Optional[bool] = ...) -> None: ...

class FeatureCheck(_message.Message):
    __slots__ = ("round", "labels", "action", "version_before", "version_after", "logme_current", "logme_finetuned", "gap", "threshold", "seconds", "finished_at", "reason")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_BEFORE_FIELD_NUMBER: _ClassVar[int]
    VERSION_AFTER_FIELD_NUMBER: _ClassVar[int]
    LOGME_CURRENT_FIELD_NUMBER: _ClassVar[int]
    LOGME_FINETUNED_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    round: int
    labels: int
    action: str
    version_before: str
    version_after: str
    logme_current: float
    logme_finetuned: float
    gap: float
    threshold: float
    seconds: float
    finished_at: float
    reason: str
    def __init__(self, round: _Optional[int] = ..., labels: _Optional[int] = ..., action: _Optional[str] = ..., version_before: _Optional[str] = ..., version_after: _Optional[str] = ..., logme_current: _Optional[float] = ..., logme_finetuned: _Optional[float] = ..., gap: _Optional[float] = ..., threshold: _Optional[float] = ..., seconds: _Optional[float] = ..., finished_at: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class AsvpStatus(_message.Message):
    __slots__ = ("enabled", "running", "phase", "last_check", "checks", "failed_checks", "next_due")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECK_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_DUE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    running: bool
    phase: str
    last_check: FeatureCheck
    checks: int
    failed_checks: int
    next_due: str
    def __init__(self, enabled: _Optional[bool] = ..., running: _Optional[bool] = ..., phase: _Optional[str] = ..., last_check: _Optional[_Union[FeatureCheck, _Mapping]] = ..., checks: _Optional[int] = ..., failed_checks: _Optional[int] = ..., next_due: _Optional[str] = ...) -> None: ...
