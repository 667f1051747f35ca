"""Model versions per logical model name: hot load, canary share, promote, rollback.

The manager only decides; a `Loader` does the loading (Triton in production, a fake
in unit tests). A new version is loaded while the current one keeps serving; only
once the loader returns (Triton reports it ready) does routing change. A version that
leaves routing is unloaded after its in-flight requests finish, so a swap under load
loses nothing.

Routing with a canary: `canary_percent` of the calls that do not pin a version go to
the canary, spread evenly (a credit counter, not a coin flip, so 10% is exactly one
call in ten).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    """No such model name or version is being served."""


class Loader(Protocol):
    def load(self, version: ServedVersion) -> None:
        """Load the version and return once it can serve (raise on failure)."""

    def unload(self, version: ServedVersion) -> None:
        """Release the version's resources."""


@dataclass
class ServedVersion:
    version: str
    """Version id, e.g. "sentiment-en-policy-v3"; named in every response."""
    name: str
    """Logical model name, e.g. "sentiment-en-policy"."""
    kind: str
    """"policy" or "classifier" (reward models are classifiers with one label)."""
    model_dir: str
    """The HF directory (local path) the version serves."""
    backend_name: str = ""
    """Name of the model on the backend (the Triton model name)."""
    in_flight: int = 0
    loaded_at: float = field(default_factory=time.time)


@dataclass
class ModelRoute:
    """Routing state of one logical model."""

    name: str
    kind: str
    stable: ServedVersion | None = None
    canary: ServedVersion | None = None
    canary_percent: int = 0
    previous: str | None = None
    """Version id the stable one replaced (what `rollback` returns to)."""
    history: dict[str, ServedVersion] = field(default_factory=dict)
    credit: int = 0

    def live(self) -> list[ServedVersion]:
        return [v for v in (self.stable, self.canary) if v is not None]


class VersionManager:
    """Thread-safe routing table over a `Loader`."""

    def __init__(self, loader: Loader, drain_timeout_s: float = 60.0) -> None:
        self.loader = loader
        self.drain_timeout_s = drain_timeout_s
        self._routes: dict[str, ModelRoute] = {}
        self._defaults: dict[str, str] = {}  # kind -> most recently deployed model name
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._deploy_locks: dict[str, threading.Lock] = {}

    # Queries ---------------------------------------------------------------------------
    def routes(self) -> dict[str, ModelRoute]:
        with self._lock:
            return dict(self._routes)

    def default_name(self, *kinds: str) -> str | None:
        """The most recently deployed model of the first kind that has one."""
        with self._lock:
            for kind in kinds:
                if kind in self._defaults:
                    return self._defaults[kind]
        return None

    def live_versions(self) -> list[ServedVersion]:
        with self._lock:
            return [v for route in self._routes.values() for v in route.live()]

    def has_served(self, version: str) -> bool:
        """Whether this process serves or has served `version` (feedback may name a
        version replaced since the response was given)."""
        with self._lock:
            return any(
                version in route.history or any(v.version == version for v in route.live())
                for route in self._routes.values()
            )

    def route_of(self, name: str) -> ModelRoute:
        with self._lock:
            if name not in self._routes:
                known = ", ".join(sorted(self._routes)) or "none"
                raise UnknownModel(f"model {name!r} is not served (served: {known})")
            return self._routes[name]

    # Request path ----------------------------------------------------------------------
    def _pick(self, route: ModelRoute, version: str) -> ServedVersion:
        if version:
            for candidate in route.live():
                if candidate.version == version:
                    return candidate
            live = ", ".join(v.version for v in route.live()) or "none"
            raise UnknownModel(
                f"version {version!r} of {route.name!r} is not served (live: {live})"
            )
        if route.stable is None:
            raise UnknownModel(f"model {route.name!r} has no ready version yet")
        if route.canary is not None and route.canary_percent > 0:
            route.credit += route.canary_percent
            if route.credit >= 100:
                route.credit -= 100
                return route.canary
        return route.stable

    @contextlib.contextmanager
    def use(self, name: str, version: str = "") -> Iterator[ServedVersion]:
        """Pick the version for one request and hold it loaded until the request ends."""
        with self._lock:
            chosen = self._pick(self.route_of(name), version)
            chosen.in_flight += 1
        try:
            yield chosen
        finally:
            with self._lock:
                chosen.in_flight -= 1
                self._changed.notify_all()

    # Changes ---------------------------------------------------------------------------
    def deploy(
        self,
        name: str,
        version: str,
        kind: str,
        model_dir: str,
        canary_percent: int = 100,
    ) -> ServedVersion:
        """Load `version` beside the serving one, then route `canary_percent`% to it.

        100 (or a first version) makes it stable at once; less makes it the canary,
        replacing an earlier canary. Deploying a version that is already live only
        changes its share. Idempotent, so a redelivered `model.promoted` is harmless.
        """
        if not 0 <= canary_percent <= 100:
            raise ValueError(f"canary_percent must be in 0..100, got {canary_percent}")
        with self._lock:
            lock = self._deploy_locks.setdefault(name, threading.Lock())
        with lock:  # one load per model name at a time; others keep serving
            with self._lock:
                route = self._routes.get(name)
                if route is not None and route.kind != kind:
                    raise ValueError(f"model {name!r} is a {route.kind}, not a {kind}")
                existing = (
                    next((v for v in route.live() if v.version == version), None) if route else None
                )
            if existing is not None:
                if route is not None and route.canary is existing:
                    self.set_canary_percent(name, canary_percent)
                    if canary_percent >= 100:
                        self.promote(name)
                return existing
            served = ServedVersion(version=version, name=name, kind=kind, model_dir=model_dir)
            self.loader.load(served)  # the old version keeps serving meanwhile
            retired: list[ServedVersion] = []
            with self._lock:
                route = self._routes.setdefault(name, ModelRoute(name=name, kind=kind))
                route.history[version] = served
                if route.stable is None or canary_percent >= 100:
                    if route.stable is not None:
                        route.previous = route.stable.version
                        retired.append(route.stable)
                    if route.canary is not None:
                        retired.append(route.canary)
                    route.stable, route.canary, route.canary_percent = served, None, 0
                else:
                    if route.canary is not None:
                        retired.append(route.canary)
                    route.canary, route.canary_percent, route.credit = served, canary_percent, 0
                self._defaults[kind] = name
            log.info("model %s: %s ready (%s%%)", name, version, canary_percent)
            for old in retired:
                self._retire(old)
            return served

    def set_canary_percent(self, name: str, percent: int) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"canary_percent must be in 0..100, got {percent}")
        with self._lock:
            route = self.route_of(name)
            if route.canary is None:
                raise UnknownModel(f"model {name!r} has no canary")
            route.canary_percent, route.credit = percent, 0

    def promote(self, name: str) -> ServedVersion:
        """Make the canary the stable version (all traffic)."""
        with self._lock:
            route = self.route_of(name)
            if route.canary is None:
                raise UnknownModel(f"model {name!r} has no canary to promote")
            old = route.stable
            route.previous = old.version if old else None
            route.stable, route.canary, route.canary_percent = route.canary, None, 0
            promoted = route.stable
        if old is not None:
            self._retire(old)
        return promoted

    def rollback(self, name: str) -> ServedVersion:
        """Drop the canary if there is one; otherwise return to the previous stable version
        (reloading it if it was unloaded; the current one serves until then)."""
        with self._lock:
            route = self.route_of(name)
            canary = route.canary
            if canary is not None:
                route.canary, route.canary_percent = None, 0
                stable = route.stable
        if canary is not None:
            self._retire(canary)
            assert stable is not None
            return stable
        if route.previous is None or route.previous not in route.history:
            raise UnknownModel(f"model {name!r} has no previous version to roll back to")
        old = route.history[route.previous]
        return self.deploy(name, old.version, route.kind, old.model_dir, 100)

    def _retire(self, version: ServedVersion) -> None:
        """Wait for the version's in-flight requests (bounded), then unload it."""
        deadline = time.monotonic() + self.drain_timeout_s
        with self._lock:
            while version.in_flight > 0 and time.monotonic() < deadline:
                self._changed.wait(timeout=max(0.0, deadline - time.monotonic()))
            if version.in_flight > 0:
                log.warning(
                    "unloading %s with %d requests in flight", version.version, version.in_flight
                )
        try:
            self.loader.unload(version)
        except Exception:  # noqa: BLE001 - a failed unload must not undo the switch
            log.exception("unloading %s failed", version.version)

    def close(self) -> None:
        for version in self.live_versions():
            with contextlib.suppress(Exception):
                self.loader.unload(version)
