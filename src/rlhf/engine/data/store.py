"""Prepared datasets on disk: one `<split>.jsonl` per split plus `manifest.json`.

The manifest records each split's content hash and counts, so a reader can verify it
got exactly the version an event or a model's lineage names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.engine.data.processing import check_splits, dataset_version, label_counts
from rlhf.engine.data.records import DataError, LabeledText, Record, record_from_dict

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class PreparedDataset:
    """Splits of one dataset version, with the manifest that describes them."""

    splits: dict[str, list[Record]]
    manifest: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    def __getitem__(self, split: str) -> list[Record]:
        if split not in self.splits:
            raise KeyError(f"no split {split!r}; have {sorted(self.splits)}")
        return self.splits[split]


def combined_version(split_versions: Mapping[str, str]) -> str:
    """The version of a whole dataset: a hash over its splits' names and versions."""
    import hashlib

    payload = json.dumps(dict(sorted(split_versions.items())), sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def save_dataset(
    directory: str | Path,
    splits: Mapping[str, Sequence[Record]],
    *,
    name: str = "dataset",
    metadata: Mapping | None = None,
) -> dict:
    """Write the splits and a manifest; returns the manifest. Overwrites atomically per file."""
    directory = Path(directory)
    check_splits(splits, str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    split_info = {}
    for split, records in splits.items():
        path = directory / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record.to_dict(), ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(tmp, path)
        split_info[split] = {
            "file": path.name,
            "count": len(records),
            "version": dataset_version(records),
            "labels": label_counts(records),
        }
    kind = (
        "labeled_text"
        if isinstance(next(iter(splits.values()))[0], LabeledText)
        else ("preference_pair")
    )
    manifest = {
        "format": FORMAT_VERSION,
        "name": name,
        "kind": kind,
        "version": combined_version({s: i["version"] for s, i in split_info.items()}),
        "splits": split_info,
        "metadata": dict(metadata or {}),
    }
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def load_dataset(directory: str | Path, *, verify: bool = True) -> PreparedDataset:
    """Read a prepared dataset; with `verify`, check every split against its hash."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise DataError(manifest_path, "not a prepared dataset: manifest.json not found")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(manifest_path, f"malformed JSON: {exc.msg}", line=exc.lineno) from exc
    if not isinstance(manifest.get("splits"), dict):
        raise DataError(manifest_path, "missing or not an object", key="splits")
    splits: dict[str, list[Record]] = {}
    for split, info in manifest["splits"].items():
        path = directory / info.get("file", f"{split}.jsonl")
        if not path.is_file():
            raise DataError(path, f"split {split!r} listed in the manifest is missing")
        records = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(path, f"malformed JSON: {exc.msg}", line=lineno) from exc
                records.append(record_from_dict(obj, path, lineno))
        if verify and dataset_version(records) != info.get("version"):
            raise DataError(
                path,
                f"content hash {dataset_version(records)} does not match the "
                f"manifest's {info.get('version')} (file changed after prepare)",
            )
        splits[split] = records
    return PreparedDataset(splits, manifest)
