"""bench/quality_rl.py: several seeds in one command, with their mean and worst."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quality_rl  # noqa: E402


def test_seeds_run_in_turn_and_report_mean_and_worst(monkeypatch, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    quality_rl.add_arguments(parser)
    args = parser.parse_args(["--seeds", "0,1,2", "--out", str(tmp_path)])
    args.benchmark = "rloo"
    scorers = object(), object()
    monkeypatch.setattr(quality_rl, "load_scorers", lambda a: scorers)
    seen = []

    def fake_seed(seed_args, algorithm, seed, given):
        assert given is scorers and algorithm == "rloo"
        seen.append((seed, seed_args.out))
        return {
            "seed": seed,
            "judge_gain": [0.31, 0.27, 0.35][seed],
            "judge_gain_interval": [0.2, 0.4],
            "kl_per_sequence": [5.1, 5.9, 4.0][seed],
            "minutes": [20.0, 24.5, 22.0][seed],
        }

    monkeypatch.setattr(quality_rl, "run_seed", fake_seed)
    result = quality_rl.run(args)
    assert seen == [(s, str(tmp_path / f"seed-{s}")) for s in (0, 1, 2)]
    assert [row["seed"] for row in result["seeds"]] == [0, 1, 2]
    assert result["judge_gain_mean"] == 0.31 and result["judge_gain_min"] == 0.27
    assert result["kl_max"] == 5.9 and result["minutes_max"] == 24.5
    # The RLOO defaults were filled in for the flags left unset.
    assert args.kl_target == quality_rl.KL_DEFAULTS["rloo"]["kl_target"]
    progress = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [p["seed"] for p in progress] == [0, 1, 2]
