from rlhf.v1 import common_pb2 as _common_pb2
from rlhf.v1 import dataprep_pb2 as _dataprep_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainRewardRequest(_message.Message):
    __slots__ = ("dataset", "objective", "base_version", "pipeline", "config_json", "request_id")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dataset: _common_pb2.ArtifactRef
    objective: str
    base_version: str
    pipeline: str
    config_json: str
    request_id: str
    def __init__(self, dataset: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., objective: _Optional[str] = ..., base_version: _Optional[str] = ..., pipeline: _Optional[str] = ..., config_json: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class TrainRewardResponse(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model_version", "items")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    items: _containers.RepeatedCompositeFieldContainer[ScoreItem]
    def __init__(self, model_version: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ScoreItem, _Mapping]]] = ...) -> None: ...

class ScoreItem(_message.Message):
    __slots__ = ("prompt", "response")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    response: str
    def __init__(self, prompt: _Optional[str] = ..., response: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("scores", "model_version")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model_version", "texts")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_version: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label", "score", "probabilities")
    class ProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    probabilities: _containers.ScalarMap[str, float]
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., probabilities: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "model_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    model_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("model_version", "prompt", "response_a", "response_b")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    prompt: str
    response_a: str
    response_b: str
    def __init__(self, model_version: _Optional[str] = ..., prompt: _Optional[str] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("probability_a", "reward_a", "reward_b", "model_version")
    PROBABILITY_A_FIELD_NUMBER: _ClassVar[int]
    REWARD_A_FIELD_NUMBER: _ClassVar[int]
    REWARD_B_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    probability_a: float
    reward_a: float
    reward_b: float
    model_version: str
    def __init__(self, probability_a: _Optional[float] = ..., reward_a: _Optional[float] = ..., reward_b: _Optional[float] = ..., model_version: _Optional[str] = ...) -> None: ...
