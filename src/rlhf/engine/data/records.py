"""Record types shared by every reader, and the one error type for bad data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Label schema of every sentiment data set here: index = class id of the classifier.
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "positive")


class DataError(ValueError):
    """Bad input data. The message names the file and the line (or key) at fault."""

    def __init__(
        self, source: str | Path, message: str, *, line: int | None = None, key: str | None = None
    ) -> None:
        where = str(source)
        if line is not None:
            where += f", line {line}"
        if key is not None:
            where += f", key {key!r}"
        super().__init__(f"{where}: {message}")
        self.source = str(source)
        self.line = line
        self.key = key


@dataclass(frozen=True, slots=True)
class LabeledText:
    """One text with a class label (a name from the data set's label schema)."""

    text: str
    label: str

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "label": self.label}


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """A prompt with a preferred (chosen) and a dispreferred (rejected) response.

    For dialogues the prompt is the whole conversation up to and including the last
    "\\n\\nAssistant:" turn marker; chosen/rejected are the final assistant replies.
    """

    prompt: str
    chosen: str
    rejected: str

    def to_dict(self) -> dict[str, str]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


Record = LabeledText | PreferencePair


def record_from_dict(obj: dict, source: str | Path = "<dict>", line: int | None = None) -> Record:
    """Rebuild a record saved with `to_dict` (the kind is told by its keys)."""
    if not isinstance(obj, dict):
        raise DataError(source, f"expected a JSON object, got {type(obj).__name__}", line=line)
    if {"prompt", "chosen", "rejected"} <= obj.keys():
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(obj[key], str):
                raise DataError(source, "must be a string", line=line, key=key)
        return PreferencePair(obj["prompt"], obj["chosen"], obj["rejected"])
    if {"text", "label"} <= obj.keys():
        if not isinstance(obj["text"], str):
            raise DataError(source, "must be a string", line=line, key="text")
        return LabeledText(obj["text"], str(obj["label"]))
    raise DataError(
        source,
        f"neither a labelled text (text, label) nor a preference pair (prompt, chosen, "
        f"rejected): keys {sorted(obj)}",
        line=line,
    )
