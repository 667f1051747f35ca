"""Data shipped inside the package: `path: package:<dir>/<file>` in a pipeline spec."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from rlhf.engine.data import DataError, LabeledText, load_dataset
from rlhf.pipelines import DataSource, load_pipeline
from rlhf.workflows.datasets import package_data_path, prepare_source, read_source

REVIEWS = "package:reviews_en/reviews.jsonl"
ROOT = Path(__file__).resolve().parents[2]


def test_package_path_resolves_inside_the_package():
    path = package_data_path(REVIEWS)
    assert path.is_file()
    assert path.parent.name == "reviews_en"
    assert (path.parent / "PROVENANCE.md").is_file()
    assert path.parent.parent.joinpath("__init__.py").is_file()  # rlhf/datasets


@pytest.mark.parametrize(
    "ref",
    [
        "package:../pipelines.py",
        "package:reviews_en/../../pipelines.py",
        "package:/etc/passwd",
        "package:reviews_en\\reviews.jsonl",
        "package:reviews_en//reviews.jsonl",
        "package:./reviews_en/reviews.jsonl",
        "package:",
    ],
)
def test_paths_leaving_the_package_are_refused(ref):
    with pytest.raises(DataError, match="relative to rlhf.datasets"):
        package_data_path(ref)


def test_missing_package_file_names_it():
    with pytest.raises(DataError, match="no such file in the rlhf.datasets package"):
        read_source(DataSource(format="jsonl", path="package:reviews_en/nope.jsonl"), Path("/x"))


def test_symlink_out_of_the_package_is_refused(tmp_path):
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"text": "x y z", "label": "positive"}\n')
    link = package_data_path(REVIEWS).parent / "link-for-test.jsonl"
    link.symlink_to(outside)
    try:
        with pytest.raises(DataError, match="outside"):
            package_data_path("package:reviews_en/link-for-test.jsonl")
    finally:
        link.unlink()


def test_reviews_are_balanced_short_and_unique():
    records = read_source(DataSource(format="jsonl", path=REVIEWS), Path("/no/data/dir"))
    assert 500 <= len(records) <= 700
    assert all(isinstance(r, LabeledText) for r in records)
    counts = Counter(r.label for r in records)
    assert counts["positive"] == counts["negative"]
    assert all(8 <= len(r.text.split()) <= 40 for r in records)
    assert len({r.text.lower() for r in records}) == len(records)
    raw = package_data_path(REVIEWS).read_text(encoding="utf-8").splitlines()
    assert all(set(json.loads(line)) == {"text", "label"} for line in raw)


@pytest.mark.parametrize(("quick", "share"), [(False, (0.12, 0.28)), (True, (0.03, 0.1))])
def test_reviews_en_pipeline_prepares_without_a_data_dir(tmp_path, quick, share):
    source = load_pipeline("reviews-en", quick=quick).datasets["reviews"]
    assert source.path == REVIEWS
    manifest = prepare_source("reviews", source, tmp_path / "no-data", tmp_path / "out")
    dataset = load_dataset(Path(manifest["path"]))
    train, validation = list(dataset["train"]), list(dataset["validation"])
    assert len(train) + len(validation) == 650
    assert share[0] < len(validation) / 650 < share[1]
    assert {r.label for r in validation} == {"positive", "negative"}


def test_package_data_is_installed_with_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["rlhf.datasets"]
    assert {"*/*.jsonl", "*/*.md"} <= set(patterns)
