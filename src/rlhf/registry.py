"""Model registry: every model version with its lineage, gates and promotion state.

Records are `rlhf.v1.ModelVersion` messages, kept in one of two places:

- files (the default): JSON under `<root>/models/`, one file per version, written
  atomically, keys in `<root>/keys/`, the promotion log `<root>/promotions.jsonl`; a
  `flock` on `<root>/.registry.lock` serialises writers, so services sharing one
  artifact volume (with POSIX locks across its nodes) register versions safely;
- the state database (`database=`: `store.url`'s PostgreSQL): tables `model_versions`,
  `model_keys` and `model_promotions`, every write one transaction holding the
  registry's lock, for replicas on several nodes.

Version ids are `<name>-v<N>`, N counting up per name.

A registration may carry a key (`RunContext.key`: the run id and the stage): a run
resumed after its process died between registering and finishing registers again, and
gets the version its first attempt registered instead of a second one.
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

from rlhf.store import Database, Transaction, open_database
from rlhf.v1 import common_pb2

_KINDS = {
    "policy": common_pb2.MODEL_KIND_POLICY,
    "reward": common_pb2.MODEL_KIND_REWARD,
    "classifier": common_pb2.MODEL_KIND_CLASSIFIER,
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ModelNotFound(KeyError):
    """No model version with that id."""


def _parse(text: str) -> common_pb2.ModelVersion:
    return json_format.Parse(text, common_pb2.ModelVersion())


def _dump(model: common_pb2.ModelVersion) -> str:
    return json_format.MessageToJson(model, preserving_proto_field_name=True)


class _FileRecords:
    """Records as files under `root`; `session(write=True)` holds the registry's flock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models_dir = root / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[_FileRecords]:
        if not write:
            yield self
            return
        with open(self.root / ".registry.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def all(self) -> list[common_pb2.ModelVersion]:
        return [_parse(p.read_text()) for p in self.models_dir.glob("*.json")]

    def get(self, version: str) -> common_pb2.ModelVersion | None:
        path = self.models_dir / f"{version}.json"
        return _parse(path.read_text()) if path.exists() else None

    def put(self, model: common_pb2.ModelVersion) -> None:
        _atomic_write(self.models_dir / f"{model.version}.json", _dump(model))

    def key_version(self, key: str) -> str | None:
        path = self._key_path(key)
        return json.loads(path.read_text())["version"] if path.is_file() else None

    def put_key(self, key: str, version: str) -> None:
        _atomic_write(self._key_path(key), json.dumps({"key": key, "version": version}))

    def log_promotion(self, entry: dict[str, str]) -> None:
        with open(self.root / "promotions.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

    def promotions(self) -> list[dict[str, str]]:
        path = self.root / "promotions.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _key_path(self, key: str) -> Path:
        return self.root / "keys" / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_versions (
    version TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_keys (
    key TEXT PRIMARY KEY,
    version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_promotions (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
)
"""


class _DatabaseRecords:
    """Records as rows of the state database; `session(write=True)` is one transaction
    holding the registry's lock (reads run in a transaction of their own)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.ensure_schema(_SCHEMA)

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[_DatabaseSession]:
        with self._db.transaction() as tx:
            if write:
                tx.lock("model-registry")
            yield _DatabaseSession(tx)


class _DatabaseSession:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def all(self) -> list[common_pb2.ModelVersion]:
        return [
            _parse(r[0]) for r in self._tx.execute("SELECT record FROM model_versions").fetchall()
        ]

    def get(self, version: str) -> common_pb2.ModelVersion | None:
        row = self._tx.execute(
            "SELECT record FROM model_versions WHERE version = ?", (version,)
        ).fetchone()
        return _parse(row[0]) if row else None

    def put(self, model: common_pb2.ModelVersion) -> None:
        self._tx.execute(
            "INSERT INTO model_versions (version, name, record) VALUES (?, ?, ?) "
            "ON CONFLICT (version) DO UPDATE SET record = excluded.record",
            (model.version, model.name, _dump(model)),
        )

    def key_version(self, key: str) -> str | None:
        row = self._tx.execute("SELECT version FROM model_keys WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put_key(self, key: str, version: str) -> None:
        self._tx.execute("INSERT INTO model_keys (key, version) VALUES (?, ?)", (key, version))

    def log_promotion(self, entry: dict[str, str]) -> None:
        seq = self._tx.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM model_promotions").fetchone()
        self._tx.execute(
            "INSERT INTO model_promotions (seq, name, version, reason, at) VALUES (?, ?, ?, ?, ?)",
            (seq[0], entry["name"], entry["version"], entry["reason"], entry["at"]),
        )

    def promotions(self) -> list[dict[str, str]]:
        rows = self._tx.execute(
            "SELECT name, version, reason, at FROM model_promotions ORDER BY seq"
        ).fetchall()
        return [dict(zip(("name", "version", "reason", "at"), row, strict=True)) for row in rows]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class ModelRegistry:
    def __init__(self, root: Path, database: Database | str | None = None) -> None:
        """`database`: keep the records there (a `Database`, a `postgresql://` URL or a
        SQLite file) instead of in files under `root`."""
        self.root = Path(root)
        if database is None:
            self._records: _FileRecords | _DatabaseRecords = _FileRecords(self.root)
        else:
            db = database if isinstance(database, Database) else open_database(database)
            self._records = _DatabaseRecords(db)

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
        with self._records.session(write=True) as records:
            registered = records.key_version(key) if key else None
            if registered is not None:  # the model is written before its key
                return records.get(registered)
            number = 1 + max((self._number(m.version, name) for m in records.all()), default=0)
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
            records.put(model)
            if key:
                records.put_key(key, model.version)
            return model

    def promote(self, version: str, reason: str = "") -> common_pb2.ModelVersion | None:
        """Mark `version` promoted; returns the version it replaces (or None). Every
        promotion is appended to the promotion log (what `rollback` walks back)."""
        with self._records.session(write=True) as records:
            model = records.get(version) if _NAME.match(version) else None
            if model is None:
                raise ModelNotFound(version)
            previous = self._promoted(records.all(), model.name)
            if previous is not None and previous.version == version:
                return None  # already the promoted version
            if previous is not None:
                previous.promoted = False
                records.put(previous)
            model.promoted = True
            records.put(model)
            entry = {"name": model.name, "version": version, "reason": reason}
            entry["at"] = datetime.now(UTC).isoformat()
            records.log_promotion(entry)
            return previous

    def promotions(self, name: str) -> list[dict[str, str]]:
        """The promotion log of one model, oldest first."""
        with self._records.session() as records:
            return [e for e in records.promotions() if e["name"] == name]

    def rollback_target(self, name: str) -> common_pb2.ModelVersion:
        """The version promoted before the current one (ModelNotFound when none)."""
        current = self.promoted(name)
        for entry in reversed(self.promotions(name)):
            if current is None or entry["version"] != current.version:
                return self.get(entry["version"])
        raise ModelNotFound(f"{name}: no earlier promoted version to roll back to")

    # -- reading ------------------------------------------------------------------
    def get(self, version: str) -> common_pb2.ModelVersion:
        model = None
        if _NAME.match(version):
            with self._records.session() as records:
                model = records.get(version)
        if model is None:
            raise ModelNotFound(version)
        return model

    def list(
        self, name: str = "", kind: str = "", promoted_only: bool = False
    ) -> list[common_pb2.ModelVersion]:
        with self._records.session() as records:
            models = records.all()
        models = [
            m
            for m in models
            if (not name or m.name == name)
            and (not kind or m.kind == _KINDS[kind])
            and (not promoted_only or m.promoted)
        ]
        return sorted(models, key=lambda m: (m.name, self._number(m.version, m.name)))

    def promoted(self, name: str) -> common_pb2.ModelVersion | None:
        with self._records.session() as records:
            return self._promoted(records.all(), name)

    def latest(self, name: str) -> common_pb2.ModelVersion | None:
        matches = self.list(name=name)
        return matches[-1] if matches else None

    # -- internals ----------------------------------------------------------------
    @staticmethod
    def _number(version: str, name: str) -> int:
        match = re.fullmatch(re.escape(name) + r"-v(\d+)", version)
        return int(match.group(1)) if match else 0

    @classmethod
    def _promoted(
        cls, models: list[common_pb2.ModelVersion], name: str
    ) -> common_pb2.ModelVersion | None:
        matches = [m for m in models if m.name == name and m.promoted]
        return max(matches, key=lambda m: cls._number(m.version, name)) if matches else None
