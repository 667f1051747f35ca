from pathlib import Path

import pytest
import yaml

from rlhf.pipelines import (
    PipelineError,
    available_pipelines,
    load_pipeline,
    parse_pipeline,
)


def test_every_shipped_pipeline_validates_full_and_quick():
    names = available_pipelines()
    assert {"sentiment-zh", "sentiment-en", "chat-en", "classify"} <= set(names)
    for name in names:
        assert load_pipeline(name).name == name
        assert load_pipeline(name, quick=True).name == name


def test_quick_overrides_merge_into_named_stages():
    full = load_pipeline("sentiment-zh")
    quick = load_pipeline("sentiment-zh", quick=True)
    assert quick.stage("ppo").config["total_steps"] < full.stage("ppo").config["total_steps"]
    assert quick.stage("ppo").config["kl_budget"] == full.stage("ppo").config["kl_budget"]
    assert quick.datasets["reviews"].max_rows < full.datasets["reviews"].max_rows


def _minimal() -> dict:
    return {
        "name": "p",
        "task": "classify",
        "datasets": {"d": {"format": "sst2", "path": "sst2/train.tsv"}},
        "stages": [{"name": "c", "kind": "classifier", "data": "d"}],
    }


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["stages"][0].update(kind="ppx"), "stages[0].kind"),
        (lambda s: s["stages"][0].update(data="missing"), "stages[0].data"),
        (lambda s: s.update(gatez={}), "gatez"),
        (lambda s: s["datasets"]["d"].update(max_rows=-1), "datasets.d.max_rows"),
        (lambda s: s["datasets"]["d"].pop("path"), "path is required"),
        (lambda s: s.update(retrain={"stages": ["nope"]}), "retrain.stages"),
    ],
)
def test_bad_spec_names_the_field(mutate, expected):
    spec = _minimal()
    mutate(spec)
    with pytest.raises(PipelineError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse_pipeline(spec)


def test_unknown_pipeline_and_bad_yaml(tmp_path: Path):
    with pytest.raises(PipelineError, match="unknown pipeline 'nope'"):
        load_pipeline("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_pipeline(bad)
    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump(_minimal()))
    assert load_pipeline(good).name == "p"


def test_a_spec_whose_gates_are_all_off_is_rejected(tmp_path: Path):
    spec = _minimal()
    spec["gates"] = {"accuracy_not_worse": False, "robustness_not_worse": False}
    with pytest.raises(PipelineError, match="gates: no enabled gate applies"):
        parse_pipeline(spec)
    # Gates that are on but read nothing this pipeline produces are as good as off.
    spec["gates"] = {"accuracy_not_worse": False, "reward_up": True, "min_win_rate": 0.5}
    with pytest.raises(PipelineError, match="gates: no enabled gate applies"):
        parse_pipeline(spec)
    spec["gates"] = {"accuracy_not_worse": True}
    assert parse_pipeline(spec).applicable_gates() == ["accuracy_not_worse"]


def test_every_shipped_generation_pipeline_gates_fluency():
    for name in available_pipelines():
        spec = load_pipeline(name)
        if any(s.kind in ("ppo", "rloo", "grpo", "dpo") for s in spec.stages):
            gates = spec.applicable_gates()
            assert {"max_ref_perplexity_ratio", "min_distinct_2"} <= set(gates), name


def test_pipeline_validate_command_fails_on_gates_off(tmp_path: Path):
    from typer.testing import CliRunner

    from rlhf.cli import _register_subcommands, app

    spec = _minimal()
    spec["gates"] = {"accuracy_not_worse": False, "robustness_not_worse": False}
    path = tmp_path / "off.yaml"
    path.write_text(yaml.safe_dump(spec))
    _register_subcommands()
    result = CliRunner().invoke(app, ["pipeline", "validate", str(path)])
    assert result.exit_code != 0
    assert "gates" in result.output


def test_validate_names_a_stage_config_key_the_stage_does_not_take(tmp_path: Path):
    from typer.testing import CliRunner

    from rlhf.cli import _register_subcommands, app

    spec = yaml.safe_load((Path(__file__).parents[1] / "pipelines" / "chat-en.yaml").read_text())
    spec["stages"][1]["config"]["max_length"] = 256  # DPO calls it max_prompt_tokens
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(spec))
    _register_subcommands()
    result = CliRunner().invoke(app, ["pipeline", "validate", str(path), "chat-en"])
    assert result.exit_code == 1
    assert "stages[1].config.max_length: DPOConfig has no field 'max_length'" in result.output
    assert "chat-en: ok" in result.output


def _with_ppo_executor(executor: dict) -> dict:
    spec = _minimal()
    spec["task"] = "sentiment"
    spec["stages"].append({"name": "ppo", "kind": "ppo", "data": "d", "executor": executor})
    return spec


@pytest.mark.parametrize(
    ("stage", "executor", "expected"),
    [
        (1, {"kind": "slurm"}, "stages[1].executor.kind: Input should be 'local', 'job'"),
        (1, {"kind": "job", "workers": 0}, "stages[1].executor.workers: Input should be"),
        (1, {"kind": "local", "workers": 2}, "workers, nodes and gpus_per_node need kind job"),
        (1, {"kind": "job", "workers": 4, "nodes": 2}, "nodes: a job runs one pod"),
        (1, {"kind": "pytorchjob", "workers": 2}, "nodes: a pytorchjob runs 2 or more pods"),
        (1, {"kind": "pytorchjob", "workers": 3, "nodes": 2}, "do not split evenly"),
        (1, {"kind": "job", "workers": 4, "gpus_per_node": 2}, "exceed gpus_per_node=2"),
        (1, {"kind": "job", "resources": {"limit": {}}}, "stages[1].executor.resources.limit"),
        (1, {"kind": "job", "replicas": 2}, "stages[1].executor.replicas: Extra inputs"),
        (0, {"kind": "job"}, "stages[0]: Value error, executor: a classifier stage runs in"),
    ],
)
def test_a_bad_stage_executor_names_the_field(stage, executor, expected):
    spec = _with_ppo_executor({"kind": "job"})
    spec["stages"][stage]["executor"] = executor
    with pytest.raises(PipelineError) as exc:
        parse_pipeline(spec)
    assert expected in str(exc.value)


def test_stage_executors_parse_and_validate_command_reports_a_bad_one(tmp_path: Path):
    from typer.testing import CliRunner

    from rlhf.cli import _register_subcommands, app

    spec = _with_ppo_executor({"kind": "pytorchjob", "workers": 8, "nodes": 2, "gpus_per_node": 4})
    executor = parse_pipeline(spec).stage("ppo").executor
    assert (executor.kind, executor.nodes, executor.processes_per_node) == ("pytorchjob", 2, 4)
    assert parse_pipeline(_minimal()).stages[0].executor is None  # the trainer's default
    spec["stages"][1]["executor"]["nodes"] = 1
    path = tmp_path / "bad-executor.yaml"
    path.write_text(yaml.safe_dump(spec))
    _register_subcommands()
    result = CliRunner().invoke(app, ["pipeline", "validate", str(path)])
    assert result.exit_code == 1
    assert (
        "stages[1].executor: Value error, nodes: a pytorchjob runs 2 or more pods" in result.output
    )
