"""Cleaning, exact and normalised dedup, deterministic splits, content-hash versions."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

from rlhf.engine.data.records import DataError, LabeledText, PreferencePair, Record

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")


def clean_text(text: str) -> str:
    """Drop control and zero-width characters, collapse runs of spaces, strip ends.

    Keeps the characters themselves (no NFKC) so full-width CJK punctuation survives;
    NFKC is used only for the dedup key.
    """
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip()


def clean_record(record: Record) -> Record:
    if isinstance(record, LabeledText):
        return LabeledText(clean_text(record.text), record.label)
    # Responses keep their leading space (BPE tokenisers mark word starts with it).
    return PreferencePair(
        record.prompt, _clean_keep_lead(record.chosen), _clean_keep_lead(record.rejected)
    )


def _clean_keep_lead(text: str) -> str:
    cleaned = clean_text(text)
    return (" " + cleaned) if text[:1].isspace() and cleaned else cleaned


def clean_records(records: Iterable[Record]) -> list[Record]:
    """Clean every text field and drop records left with an empty text or response."""
    out = []
    for record in records:
        record = clean_record(record)
        if isinstance(record, LabeledText) and not record.text:
            continue
        if isinstance(record, PreferencePair) and (
            not record.chosen.strip()
            or not record.rejected.strip()
            or record.chosen == record.rejected
        ):
            continue
        out.append(record)
    return out


def normalize_for_dedup(text: str) -> str:
    """NFKC, case-folded, all whitespace collapsed: "Great  Movie!" == "great movie!"."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def record_key(record: Record, normalized: bool) -> str:
    """The text identity of a record (its label is not part of it)."""
    fields = (
        [record.text]
        if isinstance(record, LabeledText)
        else [record.prompt, record.chosen, record.rejected]
    )
    if normalized:
        fields = [normalize_for_dedup(x) for x in fields]
    return "\x1f".join(fields)


def dedup(records: Iterable[Record], mode: str = "normalized") -> list[Record]:
    """Keep the first occurrence of each text. mode: "exact" or "normalized"."""
    if mode not in ("exact", "normalized"):
        raise ValueError(f"dedup mode must be 'exact' or 'normalized', got {mode!r}")
    seen: set[str] = set()
    out = []
    for record in records:
        key = record_key(record, normalized=mode == "normalized")
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def hash_fraction(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) from a string (first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256((salt + "\x00" + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_hash(
    records: Sequence[Record],
    fractions: Mapping[str, float] | None = None,
    salt: str = "",
) -> dict[str, list[Record]]:
    """Assign each record to a split by the hash of its normalised text.

    Deterministic across runs and machines, independent of record order, and a record
    stays in its split when others are added (no leakage between dataset versions).
    Duplicates under normalisation always land in the same split.
    """
    fractions = dict(fractions or {"train": 0.8, "dev": 0.1, "test": 0.1})
    total = sum(fractions.values())
    if not fractions or any(f < 0 for f in fractions.values()) or abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    bounds = []
    acc = 0.0
    for name, fraction in fractions.items():
        acc += fraction
        bounds.append((acc, name))
    splits: dict[str, list[Record]] = {name: [] for name in fractions}
    for record in records:
        u = hash_fraction(record_key(record, normalized=True), salt)
        name = next((n for b, n in bounds if u < b), bounds[-1][1])
        splits[name].append(record)
    return splits


def dataset_version(records: Iterable[Record]) -> str:
    """ "sha256:<hex>" over the canonical JSON lines of the records, in order."""
    h = hashlib.sha256()
    for record in records:
        h.update(json.dumps(record.to_dict(), ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def label_counts(records: Iterable[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if isinstance(record, LabeledText):
            counts[record.label] = counts.get(record.label, 0) + 1
    return dict(sorted(counts.items()))


def check_splits(splits: Mapping[str, Sequence[Record]], source: str) -> None:
    """DataError for an empty split or one mixing labelled texts with preference pairs."""
    for name, records in splits.items():
        if not records:
            raise DataError(source, f"empty split {name!r} after cleaning and dedup")
        kinds = {type(r) for r in records}
        if len(kinds) > 1:
            raise DataError(source, f"split {name!r} mixes labelled texts and preference pairs")
