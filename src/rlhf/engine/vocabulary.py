"""One knob, one name: the config field names every engine config uses.

The shared names are those of ``rlhf.engine.training.TrainConfig`` (learning_rate,
autocast, output_dir, time_limit_s, ...); the classifier, reward-model, distillation,
adversarial and compress configs use them too. ``RENAMED`` maps the names retired in
favour of them to the name a spec or a config should now use; it is read only to say
so when a pipeline spec or run config still carries an old key (the old keys are
rejected like any other unknown key).
"""

from __future__ import annotations

from collections.abc import Collection

#: Retired config key -> the field that replaced it.
RENAMED: dict[str, str] = {
    "lr": "learning_rate",
    "bf16": "autocast",
    "checkpoint_dir": "output_dir",
    "out_dir": "output_dir",
    "max_steps": "total_steps",
    "max_minutes": "time_limit_s",
}

#: Keys that are still fields of some configs (a classifier's `max_length`), but in a
#: config without them usually meant this field.
SYNONYMS: dict[str, str] = {
    "max_length": "max_prompt_tokens",
}

#: What else changed with the name.
NOTES: dict[str, str] = {
    "max_minutes": "in seconds: minutes x 60",
}


def renamed_hint(key: str, known: Collection[str]) -> str:
    """``"; 'lr' is now 'learning_rate'"`` when ``key`` is a retired name of a field in
    ``known`` (``"; 'max_length': did you mean 'max_prompt_tokens'?"`` for a synonym),
    else ``""``: the tail of an unknown-key message."""
    if (new := RENAMED.get(key)) is not None and new in known:
        note = f" ({NOTES[key]})" if key in NOTES else ""
        return f"; {key!r} is now {new!r}{note}"
    if (new := SYNONYMS.get(key)) is not None and new in known:
        return f"; {key!r}: did you mean {new!r}?"
    return ""
