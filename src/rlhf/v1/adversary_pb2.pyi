from rlhf.v1 import common_pb2 as _common_pb2
from rlhf.v1 import dataprep_pb2 as _dataprep_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttackRequest(_message.Message):
    __slots__ = ("target_version", "dataset", "method", "max_edits", "min_similarity", "max_examples", "query_budget", "pipeline", "request_id")
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MAX_EDITS_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MAX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    QUERY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    target_version: str
    dataset: _common_pb2.ArtifactRef
    method: str
    max_edits: int
    min_similarity: float
    max_examples: int
    query_budget: int
    pipeline: str
    request_id: str
    def __init__(self, target_version: _Optional[str] = ..., dataset: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., method: _Optional[str] = ..., max_edits: _Optional[int] = ..., min_similarity: _Optional[float] = ..., max_examples: _Optional[int] = ..., query_budget: _Optional[int] = ..., pipeline: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AttackResponse(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RedTeamRequest(_message.Message):
    __slots__ = ("policy_version", "reward_model_version", "judge_version", "prompts", "samples_per_prompt", "pipeline", "request_id")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    REWARD_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JUDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_PROMPT_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    policy_version: str
    reward_model_version: str
    judge_version: str
    prompts: _common_pb2.ArtifactRef
    samples_per_prompt: int
    pipeline: str
    request_id: str
    def __init__(self, policy_version: _Optional[str] = ..., reward_model_version: _Optional[str] = ..., judge_version: _Optional[str] = ..., prompts: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., samples_per_prompt: _Optional[int] = ..., pipeline: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class AdversarialExample(_message.Message):
    __slots__ = ("original", "perturbed", "label", "predicted_before", "predicted_after", "edits", "similarity", "success")
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    PERTURBED_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_AFTER_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    original: str
    perturbed: str
    label: str
    predicted_before: str
    predicted_after: str
    edits: int
    similarity: float
    success: bool
    def __init__(self, original: _Optional[str] = ..., perturbed: _Optional[str] = ..., label: _Optional[str] = ..., predicted_before: _Optional[str] = ..., predicted_after: _Optional[str] = ..., edits: _Optional[int] = ..., similarity: _Optional[float] = ..., success: _Optional[bool] = ...) -> None: ...

class AttackReport(_message.Message):
    __slots__ = ("run_id", "target_version", "clean_accuracy", "robust_accuracy", "attack_success_rate", "mean_edits", "min_similarity", "mean_similarity", "examples", "dataset")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLEAN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ROBUST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ATTACK_SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_EDITS_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MEAN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    target_version: str
    clean_accuracy: float
    robust_accuracy: float
    attack_success_rate: float
    mean_edits: float
    min_similarity: float
    mean_similarity: float
    examples: _containers.RepeatedCompositeFieldContainer[AdversarialExample]
    dataset: _common_pb2.ArtifactRef
    def __init__(self, run_id: _Optional[str] = ..., target_version: _Optional[str] = ..., clean_accuracy: _Optional[float] = ..., robust_accuracy: _Optional[float] = ..., attack_success_rate: _Optional[float] = ..., mean_edits: _Optional[float] = ..., min_similarity: _Optional[float] = ..., mean_similarity: _Optional[float] = ..., examples: _Optional[_Iterable[_Union[AdversarialExample, _Mapping]]] = ..., dataset: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...
