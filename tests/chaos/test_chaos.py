"""Faults against the real platform: five service processes, the real Kafka broker
(restarted mid-round) and Triton, driven by bench/chaos.py.

The default test plays one full round of the tiny `chaos-zh` pipeline with one service
SIGKILLed and restarted and one broker restart at seeded random points, then sends a
few hundred fuzzed requests to every RPC of the five services. The slow one plays five
rounds (the first from PrepareDataset, then retraining rounds triggered by feedback)
killing each service once, with broker restarts and a full artifact disk, and 1,000
fuzzed requests. Both check the invariants of bench/chaos.py: every round ends (done,
or FAILED with a reason), no acknowledged feedback lost or used twice, no effect twice,
no INTERNAL/UNKNOWN answer, health that tells the truth.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chaos  # noqa: E402

pytestmark = [pytest.mark.kafka, pytest.mark.triton]


def _play(tmp_path: Path, *argv: str) -> dict:
    parser_args = ["--out", str(tmp_path / "chaos"), *argv]
    args = chaos.build_parser().parse_args(parser_args)
    summary = chaos.play(args)
    print(json.dumps(summary, default=str))
    return summary


def _assert_invariants(summary: dict, rounds: int) -> None:
    details = json.dumps(summary, default=str)[:4000]
    assert summary["hangs"] == 0, details
    assert summary["rounds"] == len(summary["round_details"]) == rounds, details
    assert summary["lost"] == 0, details
    assert summary["duplicate_effects"] == 0, details
    assert summary["internal_errors"] == 0, details
    assert summary["health_violations"] == [], details
    assert summary["feedback_used"] == summary["feedback_acknowledged"], details


@pytest.mark.timeout(900)
def test_a_round_survives_a_killed_service_and_a_broker_restart(tmp_path, data_dir):
    os.environ.setdefault("RLHF_DATA_DIR", str(data_dir))
    summary = _play(
        tmp_path,
        "--rounds", "1", "--seed", "4", "--fuzz", "300",
        "--broker-every", "1", "--disk-full-round", "0", "--round-timeout", "600",
    )  # fmt: skip
    _assert_invariants(summary, 1)
    assert summary["killed"] == {"trainer": 1}  # seed 4: the trainer, in its base run
    assert summary["broker_restarts"] == 1
    assert summary["rounds_completed"] == 1
    assert summary["fuzzed_requests"] >= 280


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_five_rounds_kill_every_service_once(tmp_path, data_dir):
    os.environ.setdefault("RLHF_DATA_DIR", str(data_dir))
    summary = _play(tmp_path, "--rounds", "5", "--seed", "0", "--fuzz", "1000")
    _assert_invariants(summary, 5)
    assert sorted(summary["killed"]) == sorted(chaos.SERVICES)
    assert summary["broker_restarts"] >= 2
    assert summary["feedback_acknowledged"] >= 80
    assert summary["fuzzed_requests"] >= 1000
