"""Models the benchmarks need, built by the benchmarks themselves and cached.

The RL, red-team and robustness benchmarks score with a reward classifier and a
held-out judge. Given no `--reward-model` / `--judge-model`, they call `prepared(name)`:
the model is read from the cache when a previous run trained it, else trained now with
the classifier benchmark's recipe (the same command a user would run by hand) and
cached. Cache: `$RLHF_CACHE_DIR/bench-models/<name>` (default `~/.cache/rlhf`).

| name | recipe (`bench/quality.py classifier ...`) |
|---|---|
| classifier-sst2 | MiniLM on SST-2 (12 min budget): the reward model |
| judge-imdb | `--judge`: MiniLM on the IMDB sample only: the held-out judge |
| classifier-chnsenticorp | `--lang zh`: the Chinese sentiment classifier |
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RECIPES: dict[str, list[str]] = {
    "classifier-sst2": [],
    "judge-imdb": ["--judge"],
    "classifier-chnsenticorp": ["--lang", "zh"],
}


def cache_root() -> Path:
    root = os.environ.get("RLHF_CACHE_DIR") or Path.home() / ".cache" / "rlhf"
    return Path(root) / "bench-models"


def prepared(name: str, data_dir: str | Path | None = None, log=print) -> Path:
    """The directory of model `name`, trained now if the cache has none."""
    if name not in RECIPES:
        raise ValueError(f"unknown prepared model {name!r}; known: {', '.join(RECIPES)}")
    out = cache_root() / name
    report = out / "bench.json"
    if report.is_file() and (out / "config.json").is_file():
        return out
    sys.path.insert(0, str(Path(__file__).parent))
    import quality_classifier

    parser = argparse.ArgumentParser()
    quality_classifier.add_arguments(parser)
    argv = ["--out", str(out), *RECIPES[name]]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    log(f"{name}: not in {cache_root()}; training it once ({' '.join(argv)})")
    result = quality_classifier.run(parser.parse_args(argv))
    if not (out / "config.json").is_file():
        raise RuntimeError(f"{name}: the classifier benchmark saved no model in {out}")
    report.write_text(json.dumps(result, indent=2, default=str))
    return out


def model_or_prepared(given: str | None, name: str, data_dir=None, log=print) -> str:
    """`given` when the user named a model, else the prepared (cached or trained) one."""
    return given if given else str(prepared(name, data_dir, log))
