from rlhf.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_KIND_UNSPECIFIED: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_THUMBS: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_RATING: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_PREFERENCE: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_LABEL: _ClassVar[FeedbackKind]
FEEDBACK_KIND_UNSPECIFIED: FeedbackKind
FEEDBACK_KIND_THUMBS: FeedbackKind
FEEDBACK_KIND_RATING: FeedbackKind
FEEDBACK_KIND_PREFERENCE: FeedbackKind
FEEDBACK_KIND_LABEL: FeedbackKind

class DatasetPrepared(_message.Message):
    __slots__ = ("run_id", "stage", "pipeline", "dataset", "version", "task", "splits", "row_counts", "profile")
    class SplitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.ArtifactRef
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...
    class RowCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    pipeline: str
    dataset: str
    version: str
    task: str
    splits: _containers.MessageMap[str, _common_pb2.ArtifactRef]
    row_counts: _containers.ScalarMap[str, int]
    profile: str
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., pipeline: _Optional[str] = ..., dataset: _Optional[str] = ..., version: _Optional[str] = ..., task: _Optional[str] = ..., splits: _Optional[_Mapping[str, _common_pb2.ArtifactRef]] = ..., row_counts: _Optional[_Mapping[str, int]] = ..., profile: _Optional[str] = ...) -> None: ...

class RewardModelReady(_message.Message):
    __slots__ = ("run_id", "stage", "pipeline", "model", "metrics", "profile", "judge_version")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    JUDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    pipeline: str
    model: _common_pb2.ModelVersion
    metrics: _containers.ScalarMap[str, float]
    profile: str
    judge_version: str
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., pipeline: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., profile: _Optional[str] = ..., judge_version: _Optional[str] = ...) -> None: ...

class AdversarialBatchReady(_message.Message):
    __slots__ = ("run_id", "stage", "pipeline", "target_version", "dataset", "examples", "attack_success_rate", "profile")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    ATTACK_SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    pipeline: str
    target_version: str
    dataset: _common_pb2.ArtifactRef
    examples: int
    attack_success_rate: float
    profile: str
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., pipeline: _Optional[str] = ..., target_version: _Optional[str] = ..., dataset: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., examples: _Optional[int] = ..., attack_success_rate: _Optional[float] = ..., profile: _Optional[str] = ...) -> None: ...

class RobustnessReport(_message.Message):
    __slots__ = ("run_id", "stage", "target_version", "clean_accuracy", "robust_accuracy", "attack_success_rate", "mean_edits", "min_similarity", "mean_similarity", "report", "pipeline", "examples")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLEAN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ROBUST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ATTACK_SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_EDITS_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MEAN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    target_version: str
    clean_accuracy: float
    robust_accuracy: float
    attack_success_rate: float
    mean_edits: float
    min_similarity: float
    mean_similarity: float
    report: _common_pb2.ArtifactRef
    pipeline: str
    examples: int
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., target_version: _Optional[str] = ..., clean_accuracy: _Optional[float] = ..., robust_accuracy: _Optional[float] = ..., attack_success_rate: _Optional[float] = ..., mean_edits: _Optional[float] = ..., min_similarity: _Optional[float] = ..., mean_similarity: _Optional[float] = ..., report: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., pipeline: _Optional[str] = ..., examples: _Optional[int] = ...) -> None: ...

class PolicyCheckpointReady(_message.Message):
    __slots__ = ("run_id", "stage", "pipeline", "model", "step")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    pipeline: str
    model: _common_pb2.ModelVersion
    step: int
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., pipeline: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ..., step: _Optional[int] = ...) -> None: ...

class ModelPromoted(_message.Message):
    __slots__ = ("run_id", "stage", "pipeline", "model", "previous_version", "canary_percent")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    pipeline: str
    model: _common_pb2.ModelVersion
    previous_version: str
    canary_percent: int
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., pipeline: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ..., previous_version: _Optional[str] = ..., canary_percent: _Optional[int] = ...) -> None: ...

class RunProgress(_message.Message):
    __slots__ = ("status", "service", "pipeline")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.RunStatus
    service: str
    pipeline: str
    def __init__(self, status: _Optional[_Union[_common_pb2.RunStatus, _Mapping]] = ..., service: _Optional[str] = ..., pipeline: _Optional[str] = ...) -> None: ...

class FeedbackRecorded(_message.Message):
    __slots__ = ("feedback_id", "stage", "pipeline", "model_version", "kind", "prompt", "response", "thumbs_up", "rating", "chosen", "rejected", "label", "confidence", "labeller")
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    THUMBS_UP_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LABELLER_FIELD_NUMBER: _ClassVar[int]
    feedback_id: str
    stage: str
    pipeline: str
    model_version: str
    kind: FeedbackKind
    prompt: str
    response: str
    thumbs_up: bool
    rating: int
    chosen: str
    rejected: str
    label: str
    confidence: float
    labeller: str
    def __init__(self, feedback_id: _Optional[str] = ..., stage: _Optional[str] = ..., pipeline: _Optional[str] = ..., model_version: _Optional[str] = ..., kind: _Optional[_Union[FeedbackKind, str]] = ..., prompt: _Optional[str] = ..., response: _Optional[str] = ..., thumbs_up: _Optional[bool] = ..., rating: _Optional[int] = ..., chosen: _Optional[str] = ..., rejected: _Optional[str] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., labeller: _Optional[str] = ...) -> None: ...

class RetrainRequested(_message.Message):
    __slots__ = ("run_id", "stage", "pipeline", "reason", "feedback_dataset", "feedback_count", "window_id", "base_version", "profile", "window")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_DATASET_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    pipeline: str
    reason: str
    feedback_dataset: _common_pb2.ArtifactRef
    feedback_count: int
    window_id: str
    base_version: str
    profile: str
    window: _common_pb2.FeedbackWindow
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., pipeline: _Optional[str] = ..., reason: _Optional[str] = ..., feedback_dataset: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., feedback_count: _Optional[int] = ..., window_id: _Optional[str] = ..., base_version: _Optional[str] = ..., profile: _Optional[str] = ..., window: _Optional[_Union[_common_pb2.FeedbackWindow, _Mapping]] = ...) -> None: ...
