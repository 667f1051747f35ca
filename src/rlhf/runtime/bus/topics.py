"""Topic names and the protobuf payload each one carries (one topic per event type)."""

from __future__ import annotations

from rlhf.contract import (  # noqa: F401 - the contract is defined once, there
    ADVERSARIAL_BATCH_READY,
    DATASET_PREPARED,
    FEEDBACK_RECORDED,
    MODEL_PROMOTED,
    POLICY_CHECKPOINT_READY,
    RETRAIN_REQUESTED,
    REWARD_MODEL_READY,
    ROBUSTNESS_REPORT,
    RUN_PROGRESS,
    SERVICES,
    TOPICS,
)

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX
