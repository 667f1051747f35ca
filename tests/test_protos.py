"""The contracts: generated code is fresh, and each service has the RPCs the design sketches."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from rlhf import protogen
from rlhf.v1 import (
    adversary_pb2,
    dataprep_pb2,
    events_pb2,
    inference_pb2,
    reward_pb2,
    trainer_pb2,
)

# The "gRPC API (examples)" column of docs/ARCHITECTURE.md, per service.
SKETCHED_RPCS = {
    (dataprep_pb2, "DataPrepService"): {"RegisterSource", "PrepareDataset", "GetDataset"},
    (trainer_pb2, "TrainerService"): {"StartRun", "GetRun", "CancelRun", "ListModels"},
    (reward_pb2, "RewardModelService"): {"Train", "Score", "Classify", "Compare"},
    (adversary_pb2, "AdversaryService"): {"Attack", "RedTeam", "GetReport"},
    (inference_pb2, "InferenceService"): {"Generate", "Chat", "Classify", "RecordFeedback"},
}

# Event payloads named in the design (topic rlhf.<event> carries message <Payload>).
EVENT_PAYLOADS = [
    "DatasetPrepared",
    "RewardModelReady",
    "AdversarialBatchReady",
    "RobustnessReport",
    "PolicyCheckpointReady",
    "ModelPromoted",
    "RunProgress",
    "FeedbackRecorded",
    "RetrainRequested",
]


def test_generated_code_is_up_to_date():
    result = subprocess.run(
        [sys.executable, "-m", "rlhf.protogen", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_detects_stale_generated_code(tmp_path, monkeypatch):
    """--check must fail when the committed code differs from what the protos give."""
    committed = protogen.OUTPUT_ROOT / protogen.PACKAGE_DIR
    copy = tmp_path / protogen.PACKAGE_DIR
    shutil.copytree(committed, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(protogen, "OUTPUT_ROOT", tmp_path)
    assert protogen.stale_files() == []
    stale = copy / "dataprep_pb2.py"
    stale.write_text(stale.read_text() + "\n# hand edit\n")
    (copy / "removed_pb2.py").write_text("# generated from a proto that no longer exists\n")
    assert protogen.stale_files() == ["dataprep_pb2.py", "removed_pb2.py"]
    assert protogen.main(["--check"]) == 1


@pytest.mark.parametrize(
    ("module", "service"), list(SKETCHED_RPCS), ids=[name for _, name in SKETCHED_RPCS]
)
def test_service_has_the_sketched_rpcs(module, service):
    assert service in module.DESCRIPTOR.services_by_name, f"{module.__name__} lacks {service}"
    methods = set(module.DESCRIPTOR.services_by_name[service].methods_by_name)
    missing = SKETCHED_RPCS[(module, service)] - methods
    assert not missing, f"{service} lacks {sorted(missing)}"


def test_every_service_in_the_protos_is_one_of_the_five_stages():
    modules = {module for module, _ in SKETCHED_RPCS}
    declared = {
        service.full_name
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    assert declared == {f"rlhf.v1.{service}" for _, service in SKETCHED_RPCS}
    assert not events_pb2.DESCRIPTOR.services_by_name, "events.proto holds payloads only"


@pytest.mark.parametrize("payload", EVENT_PAYLOADS)
def test_event_payload_exists(payload):
    assert payload in events_pb2.DESCRIPTOR.message_types_by_name
