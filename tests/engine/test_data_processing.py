"""Cleaning, dedup, hash splits, versions, prepared datasets and `pull`."""

from __future__ import annotations

import json

import pytest

from rlhf.engine.data import (
    DataError,
    LabeledText,
    PreferencePair,
    PullError,
    Upstream,
    clean_records,
    clean_text,
    dataset_version,
    dedup,
    load_dataset,
    pull,
    save_dataset,
    split_by_hash,
)
from rlhf.engine.data import sources as data_sources


def test_clean_text_keeps_cjk_and_drops_control_chars():
    assert clean_text("  Great\u200b   movie\x07 !  ") == "Great movie !"
    assert clean_text("电影，\u3000很好") == "电影， 很好"


def test_clean_records_drops_empty_and_identical_pairs():
    records = [LabeledText("  ", "positive"), LabeledText(" ok ", "negative")]
    assert clean_records(records) == [LabeledText("ok", "negative")]
    pairs = [PreferencePair("Q", " same", " same"), PreferencePair("Q", " a  b", " c")]
    assert clean_records(pairs) == [PreferencePair("Q", " a b", " c")]


def test_exact_vs_normalized_dedup():
    records = [
        LabeledText("Great movie!", "positive"),
        LabeledText("Great movie!", "positive"),
        LabeledText("great   MOVIE!", "positive"),
        LabeledText("ｇｒｅａｔ movie!", "positive"),  # full-width letters: NFKC folds them
        LabeledText("bad movie", "negative"),
    ]
    assert len(dedup(records, "exact")) == 4
    assert dedup(records, "normalized") == [records[0], records[4]]
    with pytest.raises(ValueError, match="dedup mode"):
        dedup(records, "fuzzy")


def test_split_by_hash_is_deterministic_and_order_independent():
    records = [LabeledText(f"text number {i}", "positive") for i in range(2000)]
    a = split_by_hash(records, {"train": 0.8, "test": 0.2})
    b = split_by_hash(list(reversed(records)), {"train": 0.8, "test": 0.2})
    assert {r.text for r in a["test"]} == {r.text for r in b["test"]}
    assert 300 < len(a["test"]) < 500
    # Adding records never moves existing ones between splits.
    more = split_by_hash(records + [LabeledText("new", "negative")], {"train": 0.8, "test": 0.2})
    assert {r.text for r in a["test"]} <= {r.text for r in more["test"]}
    # Normalised duplicates land together, so dedup-then-split cannot leak.
    dup = split_by_hash(
        [LabeledText("Same Text", "positive"), LabeledText("same  text", "positive")]
    )
    assert sum(len(v) == 2 for v in dup.values()) == 1
    assert split_by_hash(records, salt="x")["train"] != split_by_hash(records)["train"]
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_hash(records, {"train": 0.5, "test": 0.2})


def test_dataset_version_is_a_content_hash():
    records = [LabeledText("a", "positive"), LabeledText("b", "negative")]
    version = dataset_version(records)
    assert version.startswith("sha256:") and len(version) == 7 + 64
    assert dataset_version(list(records)) == version
    assert dataset_version([LabeledText("a", "negative"), records[1]]) != version


def test_save_and_load_prepared_dataset(tmp_path):
    splits = {
        "train": [LabeledText("好", "positive"), LabeledText("bad", "negative")],
        "test": [LabeledText("fine", "positive")],
    }
    manifest = save_dataset(tmp_path / "ds", splits, name="demo", metadata={"source": "x"})
    assert manifest["splits"]["train"]["labels"] == {"negative": 1, "positive": 1}
    loaded = load_dataset(tmp_path / "ds")
    assert loaded.splits == splits and loaded.version == manifest["version"]
    # Tampering with a split after prepare is detected by its hash.
    with open(tmp_path / "ds" / "test.jsonl", "a") as f:
        f.write(json.dumps({"text": "sneaky", "label": "negative"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl: content hash .* does not match"):
        load_dataset(tmp_path / "ds")
    with pytest.raises(DataError, match="empty split 'dev'"):
        save_dataset(tmp_path / "e", {"train": splits["train"], "dev": []})
    with pytest.raises(DataError, match="manifest.json not found"):
        load_dataset(tmp_path / "nothing")


def _mirror(tmp_path, monkeypatch, content: bytes):
    import hashlib

    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "x.tsv").write_bytes(content)
    upstream = Upstream(
        "toy",
        "toy/x.tsv",
        "o/r",
        "abc",
        "x.tsv",
        hashlib.sha256(b"label\tsentence\n1\tgood\n").hexdigest(),
        "MIT",
    )
    monkeypatch.setattr(data_sources, "UPSTREAMS", (upstream,))
    return lambda u: (tmp_path / "mirror" / u.repo_path).as_uri()


def test_pull_verifies_checksums(tmp_path, monkeypatch):
    url_for = _mirror(tmp_path, monkeypatch, b"label\tsentence\n1\tgood\n")
    files = pull("toy", tmp_path / "data", url_for=url_for)
    assert files == [tmp_path / "data" / "toy" / "x.tsv"]
    # Present and valid: kept without downloading again (the mirror is gone).
    (tmp_path / "mirror" / "x.tsv").unlink()
    assert pull("toy", tmp_path / "data", url_for=url_for) == files


def test_pull_rejects_a_wrong_checksum(tmp_path, monkeypatch):
    url_for = _mirror(tmp_path, monkeypatch, b"tampered\n")
    with pytest.raises(PullError, match="checksum mismatch"):
        pull("toy", tmp_path / "data", url_for=url_for)
    assert not (tmp_path / "data" / "toy" / "x.tsv").exists()


def test_pull_offline_says_where_to_put_files(tmp_path):
    with pytest.raises(PullError) as info:
        pull("sst2", tmp_path, url_for=lambda u: "http://127.0.0.1:9/" + u.repo_path, timeout=2)
    message = str(info.value)
    assert "copy the files there by hand" in message
    assert str(tmp_path / "sst2" / "train.tsv") in message and "sha256" in message
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        pull("nope", tmp_path)
