"""Topic names and the protobuf payload each one carries (one topic per event type)."""

from __future__ import annotations

from google.protobuf.message import Message

from rlhf.v1 import events_pb2

TOPICS: dict[str, type[Message]] = {
    "rlhf.dataset.prepared": events_pb2.DatasetPrepared,
    "rlhf.reward.model.ready": events_pb2.RewardModelReady,
    "rlhf.adversarial.batch.ready": events_pb2.AdversarialBatchReady,
    "rlhf.robustness.report": events_pb2.RobustnessReport,
    "rlhf.policy.checkpoint.ready": events_pb2.PolicyCheckpointReady,
    "rlhf.model.promoted": events_pb2.ModelPromoted,
    "rlhf.run.progress": events_pb2.RunProgress,
    "rlhf.feedback.recorded": events_pb2.FeedbackRecorded,
    "rlhf.retrain.requested": events_pb2.RetrainRequested,
}

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX
