"""Model registry: every model version with its lineage, gates and promotion state.

Records are `rlhf.v1.ModelVersion` messages stored as JSON under `<root>/models/`, one
file per version, written atomically; a file lock serialises writers, so several
services sharing one artifact volume can register versions safely. Version ids are
`<name>-v<N>`, N counting up per name.

A registration may carry a key (`RunContext.key`: the run id and the stage): a run
resumed after its process died between registering and finishing registers again, and
gets the version its first attempt registered instead of a second one. Keys live in
`<root>/keys/`, one file each naming its version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from rlhf.v1 import common_pb2

_KINDS = {
    "policy": common_pb2.MODEL_KIND_POLICY,
    "reward": common_pb2.MODEL_KIND_REWARD,
    "classifier": common_pb2.MODEL_KIND_CLASSIFIER,
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ModelNotFound(KeyError):
    """No model version with that id."""


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)

    # -- writing ------------------------------------------------------------------
    def register(
        self,
        name: str,
        kind: str,
        artifact_uri: str,
        *,
        run_id: str = "",
        pipeline: str = "",
        parent_version: str = "",
        reward_model_version: str = "",
        datasets: list[common_pb2.ArtifactRef] | None = None,
        config: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        gates: dict[str, bool] | None = None,
        feedback_windows: list[common_pb2.FeedbackWindow] | None = None,
        key: str = "",
    ) -> common_pb2.ModelVersion:
        """Record a new version of `name` and return it (not promoted).

        With a `key`, registering is idempotent: the version an earlier call with the
        same key registered is returned as it is (a resumed run mints no second one)."""
        if not _NAME.match(name):
            raise ValueError(f"model name {name!r} must match {_NAME.pattern}")
        if kind not in _KINDS:
            raise ValueError(f"model kind {kind!r} must be one of {sorted(_KINDS)}")
        with self._locked():
            existing = self._registered_as(key) if key else None
            if existing is not None:
                return existing
            number = 1 + max(
                (self._number(p.stem, name) for p in self.models_dir.glob("*.json")), default=0
            )
            model = common_pb2.ModelVersion(
                version=f"{name}-v{number}", name=name, kind=_KINDS[kind], promoted=False
            )
            model.artifact.uri = artifact_uri
            model.artifact.kind = "model"
            lineage = model.lineage
            lineage.parent_version = parent_version
            lineage.reward_model_version = reward_model_version
            lineage.run_id = run_id
            lineage.pipeline = pipeline
            lineage.config_json = json.dumps(config or {}, sort_keys=True, default=str)
            lineage.datasets.extend(datasets or [])
            lineage.metrics.update({k: float(v) for k, v in (metrics or {}).items()})
            lineage.feedback_windows.extend(feedback_windows or [])
            model.gates.update(gates or {})
            model.created_at.FromDatetime(datetime.now(UTC))
            self._write(model)
            if key:
                self._atomic_write(
                    self._key_path(key), json.dumps({"key": key, "version": model.version})
                )
            return model

    def promote(self, version: str, reason: str = "") -> common_pb2.ModelVersion | None:
        """Mark `version` promoted; returns the version it replaces (or None). Every
        promotion is appended to the promotion log (what `rollback` walks back)."""
        with self._locked():
            model = self.get(version)
            previous = self.promoted(model.name)
            if previous is not None and previous.version == version:
                return None  # already the promoted version
            if previous is not None:
                previous.promoted = False
                self._write(previous)
            model.promoted = True
            self._write(model)
            entry = {"name": model.name, "version": version, "reason": reason}
            entry["at"] = datetime.now(UTC).isoformat()
            with open(self.root / "promotions.jsonl", "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
            return previous

    def promotions(self, name: str) -> list[dict[str, str]]:
        """The promotion log of one model, oldest first."""
        path = self.root / "promotions.jsonl"
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in entries if e["name"] == name]

    def rollback_target(self, name: str) -> common_pb2.ModelVersion:
        """The version promoted before the current one (ModelNotFound when none)."""
        current = self.promoted(name)
        for entry in reversed(self.promotions(name)):
            if current is None or entry["version"] != current.version:
                return self.get(entry["version"])
        raise ModelNotFound(f"{name}: no earlier promoted version to roll back to")

    # -- reading ------------------------------------------------------------------
    def get(self, version: str) -> common_pb2.ModelVersion:
        path = self.models_dir / f"{version}.json"
        if not _NAME.match(version) or not path.exists():
            raise ModelNotFound(version)
        return json_format.Parse(path.read_text(), common_pb2.ModelVersion())

    def list(
        self, name: str = "", kind: str = "", promoted_only: bool = False
    ) -> list[common_pb2.ModelVersion]:
        models = [
            json_format.Parse(p.read_text(), common_pb2.ModelVersion())
            for p in self.models_dir.glob("*.json")
        ]
        models = [
            m
            for m in models
            if (not name or m.name == name)
            and (not kind or m.kind == _KINDS[kind])
            and (not promoted_only or m.promoted)
        ]
        return sorted(models, key=lambda m: (m.name, self._number(m.version, m.name)))

    def promoted(self, name: str) -> common_pb2.ModelVersion | None:
        matches = self.list(name=name, promoted_only=True)
        return matches[-1] if matches else None

    def latest(self, name: str) -> common_pb2.ModelVersion | None:
        matches = self.list(name=name)
        return matches[-1] if matches else None

    # -- internals ----------------------------------------------------------------
    @staticmethod
    def _number(version: str, name: str) -> int:
        match = re.fullmatch(re.escape(name) + r"-v(\d+)", version)
        return int(match.group(1)) if match else 0

    def _write(self, model: common_pb2.ModelVersion) -> None:
        self._atomic_write(
            self.models_dir / f"{model.version}.json",
            json_format.MessageToJson(model, preserving_proto_field_name=True),
        )

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)

    def _key_path(self, key: str) -> Path:
        return self.root / "keys" / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"

    def _registered_as(self, key: str) -> common_pb2.ModelVersion | None:
        """The version registered under `key`, if any (the model is written before its
        key, so a key always names a version that exists)."""
        path = self._key_path(key)
        if not path.is_file():
            return None
        return self.get(json.loads(path.read_text())["version"])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".registry.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
