"""The contract between the services, written once: the services, the event topics and
the protobuf payload each topic carries (one topic per event type).

The services' subscriptions, the event bus, the CLI and the Helm chart's KafkaTopics
and Deployments use these names; tests/charts check the chart against them. Cheap to
import (no bus, no torch), so the CLI can name services in its help.
"""

from __future__ import annotations

from google.protobuf.message import Message

from rlhf.v1 import events_pb2

#: The five services, in the order a round runs through them.
SERVICES: tuple[str, ...] = ("dataprep", "reward", "adversary", "trainer", "inference")

DATASET_PREPARED = "rlhf.dataset.prepared"
REWARD_MODEL_READY = "rlhf.reward.model.ready"
ADVERSARIAL_BATCH_READY = "rlhf.adversarial.batch.ready"
ROBUSTNESS_REPORT = "rlhf.robustness.report"
POLICY_CHECKPOINT_READY = "rlhf.policy.checkpoint.ready"
MODEL_PROMOTED = "rlhf.model.promoted"
RUN_PROGRESS = "rlhf.run.progress"
FEEDBACK_RECORDED = "rlhf.feedback.recorded"
RETRAIN_REQUESTED = "rlhf.retrain.requested"

TOPICS: dict[str, type[Message]] = {
    DATASET_PREPARED: events_pb2.DatasetPrepared,
    REWARD_MODEL_READY: events_pb2.RewardModelReady,
    ADVERSARIAL_BATCH_READY: events_pb2.AdversarialBatchReady,
    ROBUSTNESS_REPORT: events_pb2.RobustnessReport,
    POLICY_CHECKPOINT_READY: events_pb2.PolicyCheckpointReady,
    MODEL_PROMOTED: events_pb2.ModelPromoted,
    RUN_PROGRESS: events_pb2.RunProgress,
    FEEDBACK_RECORDED: events_pb2.FeedbackRecorded,
    RETRAIN_REQUESTED: events_pb2.RetrainRequested,
}
