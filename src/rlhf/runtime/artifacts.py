"""Artifact store: where datasets, checkpoints, tokenizers and reports live.

Events and RPCs carry `ArtifactRef`s (URI + content digest), never the bytes. Keys are
relative POSIX paths ("datasets/sst2/3f2a/train.jsonl"); every store maps a key to a
URI with its own scheme. Writes are atomic: a reader sees the old artifact or the
complete new one, never a partial file.

`LocalArtifactStore` (file://) is the only implementation today. Object storage
(s3://, gs://) goes behind the same `ArtifactStore` interface later;
`artifact_store_from_uri` refuses those schemes until then rather than pretend.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from rlhf.v1.common_pb2 import ArtifactRef

TMP_PREFIX = ".rlhf-tmp-"
_CHUNK = 1024 * 1024


def validate_key(key: str) -> str:
    """A clean relative POSIX path; ValueError naming the key otherwise."""
    if not key or key.startswith("/") or "\\" in key:
        raise ValueError(f"artifact key {key!r} must be a non-empty relative POSIX path")
    parts = key.split("/")  # not PurePosixPath: it would silently drop "." and "//"
    if any(part in ("", ".", "..") or part.startswith(TMP_PREFIX) for part in parts):
        raise ValueError(f"artifact key {key!r} must not contain '.', '..' or temp names")
    return key


def file_digest(path: Path) -> str:
    """ "sha256:<hex>" of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def dir_digest(path: Path) -> tuple[str, int]:
    """ "sha256:<hex>" over the sorted (relative path, file digest) pairs, and total size.

    Independent of file order and timestamps, so the same content gives the same
    digest wherever it was written.
    """
    digest = hashlib.sha256()
    size = 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{file_digest(file)}\n".encode())
        size += file.stat().st_size
    return f"sha256:{digest.hexdigest()}", size


class ArtifactStore(ABC):
    """Interface every store implements. Arguments named `key` also accept the URI
    that `uri_for` returned for that key (as found in an ArtifactRef)."""

    scheme: str

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """The URI an ArtifactRef carries for `key`."""

    @abstractmethod
    def key_for(self, uri_or_key: str) -> str:
        """The key behind a URI of this store (a key is returned unchanged)."""

    @abstractmethod
    def put_file(self, src: Path | str, key: str, *, kind: str = "") -> ArtifactRef:
        """Copy a local file to `key` atomically (replacing what was there)."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str, *, kind: str = "") -> ArtifactRef:
        """Write bytes to `key` atomically."""

    @abstractmethod
    def put_dir(self, src: Path | str, key: str, *, kind: str = "") -> ArtifactRef:
        """Copy a local directory tree (a saved model, a dataset) to `key`."""

    @abstractmethod
    def get(self, key: str, dest: Path | str | None = None) -> Path:
        """A local path holding the artifact: `dest` when given (copied there),
        otherwise a path owned by the store that callers must treat as read-only."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open a file artifact for binary reading."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys of all files under `prefix` (recursively), sorted."""

    @abstractmethod
    def ref(self, key: str, *, kind: str = "") -> ArtifactRef:
        """An ArtifactRef (URI, digest, size) for an existing artifact."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a file or directory artifact; missing keys are ignored."""


class LocalArtifactStore(ArtifactStore):
    """Artifacts under a root directory, addressed by file:// URIs.

    Files are written to a temp name in the target directory and renamed into place.
    Directories are copied to a temp directory and renamed; replacing an existing
    directory swaps it out first, so for a moment the key is absent (never partial).
    """

    scheme = "file"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def uri_for(self, key: str) -> str:
        return (self.root / validate_key(key)).as_uri()

    def key_for(self, uri_or_key: str) -> str:
        if "://" not in uri_or_key:
            return validate_key(uri_or_key)
        parsed = urlparse(uri_or_key)
        if parsed.scheme != "file":
            raise ValueError(f"{uri_or_key!r} is not a file:// URI of {self!r}")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"{uri_or_key!r} is outside the artifact root {self.root}")
        return validate_key(path.relative_to(self.root).as_posix())

    def path(self, key: str) -> Path:
        """The filesystem path of a key (or file:// URI) in this store."""
        return self.root / self.key_for(key)

    def _temp_sibling(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{target.name}"

    def put_file(self, src: Path | str, key: str, *, kind: str = "") -> ArtifactRef:
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"put_file: {src} is not a file")
        target = self.path(key)
        tmp = self._temp_sibling(target)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return self.ref(key, kind=kind)

    def put_bytes(self, data: bytes, key: str, *, kind: str = "") -> ArtifactRef:
        target = self.path(key)
        tmp = self._temp_sibling(target)
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return self.ref(key, kind=kind)

    def put_dir(self, src: Path | str, key: str, *, kind: str = "") -> ArtifactRef:
        src = Path(src)
        if not src.is_dir():
            raise NotADirectoryError(f"put_dir: {src} is not a directory")
        target = self.path(key)
        tmp = self._temp_sibling(target)
        old = self._temp_sibling(target)
        try:
            shutil.copytree(src, tmp)
            if target.exists():
                os.replace(target, old)  # a directory cannot be replaced in one rename
            try:
                os.replace(tmp, target)
            except OSError:
                if old.exists() and not target.exists():
                    os.replace(old, target)  # put the previous version back
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return self.ref(key, kind=kind)

    def get(self, key: str, dest: Path | str | None = None) -> Path:
        source = self.path(key)
        if not source.exists():
            raise FileNotFoundError(f"artifact {self.uri_for(self.key_for(key))} does not exist")
        if dest is None:
            return source
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, dest)
        return dest

    def open(self, key: str) -> BinaryIO:
        path = self.path(key)
        if path.is_dir():
            raise IsADirectoryError(f"artifact {self.uri_for(self.key_for(key))} is a directory")
        return open(path, "rb")  # noqa: SIM115 - the caller closes it

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self.path(prefix) if prefix else self.root
        if base.is_file():
            return [self.key_for(prefix)]
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            rel = path.relative_to(self.root)
            if path.is_file() and not any(p.startswith(TMP_PREFIX) for p in rel.parts):
                keys.append(rel.as_posix())
        return sorted(keys)

    def ref(self, key: str, *, kind: str = "") -> ArtifactRef:
        path = self.path(key)
        if path.is_dir():
            digest, size = dir_digest(path)
        elif path.is_file():
            digest, size = file_digest(path), path.stat().st_size
        else:
            raise FileNotFoundError(f"artifact {self.uri_for(self.key_for(key))} does not exist")
        return ArtifactRef(
            uri=self.uri_for(self.key_for(key)), kind=kind, digest=digest, size_bytes=size
        )

    def delete(self, key: str) -> None:
        path = self.path(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def artifact_store_from_uri(uri: str | Path) -> ArtifactStore:
    """The store for a root location: a local path or file:// URI.

    Object storage schemes (s3://, gs://, ...) are not implemented yet and fail with a
    clear error instead of a store that would silently lose data.
    """
    text = str(uri)
    if "://" not in text:
        return LocalArtifactStore(text)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"artifact store URI {text!r}: file:// URIs must be local")
        return LocalArtifactStore(unquote(parsed.path))
    raise ValueError(
        f"artifact store URI {text!r}: scheme {parsed.scheme!r} is not supported yet "
        "(only local paths and file:// URIs)"
    )
