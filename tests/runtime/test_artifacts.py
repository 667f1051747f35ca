"""LocalArtifactStore: atomic writes, digests, URIs, listing and the factory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rlhf.runtime.artifacts import (
    TMP_PREFIX,
    ArtifactStore,
    LocalArtifactStore,
    artifact_store_from_uri,
    dir_digest,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


def test_put_file_returns_ref_with_uri_digest_and_size(store, tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_bytes(b'{"text": "good", "label": 1}\n')
    ref = store.put_file(src, "datasets/sst2/v1/train.jsonl", kind="dataset")
    assert ref.uri == (store.root / "datasets/sst2/v1/train.jsonl").as_uri()
    assert ref.uri.startswith("file://")
    assert ref.kind == "dataset"
    assert ref.digest == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    assert ref.size_bytes == len(src.read_bytes())
    # The URI from the ref works wherever a key does.
    with store.open(ref.uri) as handle:
        assert handle.read() == src.read_bytes()
    assert store.exists(ref.uri) and store.exists("datasets/sst2/v1/train.jsonl")


def test_put_bytes_replaces_atomically_and_leaves_no_temp_files(store):
    store.put_bytes(b"old", "reports/r.json")
    ref = store.put_bytes(b"new", "reports/r.json")
    assert store.get("reports/r.json").read_bytes() == b"new"
    assert ref.digest == "sha256:" + hashlib.sha256(b"new").hexdigest()
    leftovers = [p for p in store.root.rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert leftovers == []


def test_put_dir_digest_depends_on_content_not_location(store, tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"n_layer": 2}')
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    first = store.put_dir(model, "models/policy/v1", kind="model")
    second = store.put_dir(model, "models/policy/v2", kind="model")
    assert first.digest == second.digest == dir_digest(model)[0]
    assert first.size_bytes == 2 + 200 + len('{"n_layer": 2}') - 2
    (model / "config.json").write_text('{"n_layer": 3}')
    replaced = store.put_dir(model, "models/policy/v1", kind="model")
    assert replaced.digest != first.digest
    assert (store.get("models/policy/v1") / "config.json").read_text() == '{"n_layer": 3}'


def test_get_copies_to_dest_and_list_is_recursive_sorted(store, tmp_path):
    store.put_bytes(b"a", "runs/b/metrics.json")
    store.put_bytes(b"b", "runs/a/metrics.json")
    store.put_bytes(b"c", "other/x.txt")
    assert store.list("runs") == ["runs/a/metrics.json", "runs/b/metrics.json"]
    assert store.list() == ["other/x.txt", "runs/a/metrics.json", "runs/b/metrics.json"]
    assert store.list("missing") == []
    copy = store.get("runs/a/metrics.json", tmp_path / "out" / "m.json")
    assert copy.read_bytes() == b"b"
    store.delete("runs")
    assert store.list("runs") == [] and not store.exists("runs/a/metrics.json")


@pytest.mark.parametrize("key", ["", "/abs/path", "a/../b", "./a", "a//b/..", "a\\b"])
def test_bad_keys_are_rejected_naming_the_key(store, key):
    with pytest.raises(ValueError, match="artifact key"):
        store.put_bytes(b"x", key)


def test_uri_outside_root_and_missing_artifacts_fail_clearly(store, tmp_path):
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.exists((tmp_path / "elsewhere.txt").as_uri())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.get("nothing/here")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        store.put_file(tmp_path / "missing.bin", "x.bin")


def test_factory_accepts_paths_and_file_uris_and_refuses_object_storage(tmp_path):
    by_path = artifact_store_from_uri(tmp_path / "a")
    by_uri = artifact_store_from_uri((tmp_path / "a").as_uri())
    assert isinstance(by_path, ArtifactStore)
    assert by_path.root == by_uri.root == (tmp_path / "a").resolve()
    with pytest.raises(ValueError, match="'s3' is not supported"):
        artifact_store_from_uri("s3://bucket/prefix")
