"""One knob, one name (issue 22): every engine config uses the training kit's field
names, and every shipped pipeline spec uses only names its stages take."""

import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import yaml

import rlhf.engine
from rlhf.engine.training import TrainConfig
from rlhf.engine.vocabulary import NOTES, RENAMED, renamed_hint
from rlhf.pipelines import available_pipelines, load_pipeline
from rlhf.workflows.compression import CompressConfig
from rlhf.workflows.stages import config_problems

ROOT = Path(__file__).parents[2]

#: Names retired in favour of the training kit's (the old name -> the one kept).
RETIRED = {
    "lr": "learning_rate",
    "bf16": "autocast",
    "checkpoint_dir": "output_dir",
    "out_dir": "output_dir",
    "max_steps": "total_steps",
    "max_minutes": "time_limit_s",
}


def engine_configs() -> list[type]:
    """Every config dataclass of the engine (`...Config`, `...Recipe`), and the compress
    stage's config, which a spec fills like the engine's."""
    found = {CompressConfig}
    for info in pkgutil.walk_packages(rlhf.engine.__path__, "rlhf.engine."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and dataclasses.is_dataclass(obj)
                and obj.__module__ == module.__name__
                and name.endswith(("Config", "Recipe"))
            ):
                found.add(obj)
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


CONFIGS = engine_configs()


def test_the_walk_finds_the_configs_of_every_trainer():
    names = {cls.__name__ for cls in CONFIGS}
    assert {
        "TrainConfig",
        "TrainLoopConfig",
        "ClassifierTrainConfig",
        "RewardModelTrainConfig",
        "DistillConfig",
        "OnlineAdversarialConfig",
        "AdversarialTrainingConfig",
        "PPOConfig",
        "RLOOConfig",
        "DPOConfig",
        "SFTConfig",
        "PretrainConfig",
        "ChineseClassifierRecipe",
        "CompressConfig",
    } <= names


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
def test_no_config_has_a_retired_field_name(cls):
    retired = sorted({f.name for f in dataclasses.fields(cls)} & set(RETIRED))
    assert not retired, f"{cls.__name__}: use {[RETIRED[n] for n in retired]} for {retired}"


def test_the_hint_map_covers_every_retired_name_and_points_at_a_real_field():
    assert RENAMED == RETIRED
    every_field = {f.name for cls in CONFIGS for f in dataclasses.fields(cls)}
    assert set(RENAMED.values()) <= every_field
    assert set(NOTES) <= set(RENAMED)
    # the kept names are the kit's where the kit has the knob
    kit = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"learning_rate", "autocast", "output_dir", "time_limit_s"} <= kit


def shipped_specs() -> list[str]:
    """The packaged specs by name, and every spec YAML under tests/ by path."""
    paths = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.yaml"))
        if isinstance(data := yaml.safe_load(path.read_text()), dict) and "stages" in data
    ]
    return available_pipelines() + paths


@pytest.mark.parametrize("spec", shipped_specs())
@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_every_shipped_spec_validates(spec, quick, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert config_problems(load_pipeline(spec, quick=quick)) == []


@pytest.mark.parametrize(("old", "new"), sorted(RETIRED.items()))
def test_validate_rejects_a_retired_name_and_says_the_new_one(old, new, tmp_path):
    spec = yaml.safe_load((ROOT / "pipelines" / "sentiment-zh.yaml").read_text())
    (index,) = [i for i, s in enumerate(spec["stages"]) if s["kind"] == "classifier"]
    spec["stages"][index]["config"][old] = 1
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(spec))
    problems = config_problems(load_pipeline(str(path)))
    assert len(problems) == 1
    assert problems[0].startswith(
        f"stages[{index}].config.{old}: ClassifierTrainConfig has no field {old!r}; "
        f"{old!r} is now {new!r}"
    )


def test_hints_only_for_names_the_config_takes():
    assert renamed_hint("lr", {"learning_rate"}) == "; 'lr' is now 'learning_rate'"
    assert "in seconds" in renamed_hint("max_minutes", {"time_limit_s"})
    assert renamed_hint("lr", {"beta"}) == ""
    assert renamed_hint("tempo", {"temperature"}) == ""
    # a classifier's max_length is a field; in DPO it usually meant the prompt's tokens
    assert "did you mean 'max_prompt_tokens'" in renamed_hint("max_length", {"max_prompt_tokens"})
