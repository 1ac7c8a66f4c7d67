"""The version table: every configured model's versions and their states, handed to requests.

`VersionTable` is the state half of the version manager (`serve.versions.manager.ModelManager`
adds the polling, loading and unloading): which models are configured, which versions of each
are LOADING / AVAILABLE / UNLOADING / END (with their error), and the refcounted handles requests
hold (`acquire`), so an unloading version waits for its in-flight requests. Every lookup raises
TF Serving's errors and texts (`specs/tf-serving.md` §3): NOT_FOUND `Servable not found for
request: Latest(<name>)` / `Specific(<name>, <v>)`, INVALID_ARGUMENT `Unrecognized servable
version label: <l>`. Thread-safe: one condition variable guards everything. No I/O.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serve.errors import Code, invalid, not_found, unavailable
from serve.types import ModelConfig, Servable, VersionState, VersionStatus


@dataclass
class VersionEntry:
    """One version of one model: its state, its servable once AVAILABLE, the requests holding
    it (`refs`), and the folder as it was when its load failed (not retried until it changes)."""

    version: int
    path: Path
    state: VersionState = VersionState.START
    error_code: Code = Code.OK
    error_message: str = ""
    servable: Servable | None = None
    refs: int = 0
    failed_token: tuple | None = None  # the folder as it was when loading failed

    def status(self) -> VersionStatus:
        return VersionStatus(self.version, self.state, self.error_code, self.error_message)


@dataclass
class ModelEntry:
    """One configured model (or one dropped from the config, kept for its END statuses)."""

    config: ModelConfig
    versions: dict[int, VersionEntry] = field(default_factory=dict)
    base_path_missing: bool = False
    removed: bool = False  # dropped from the config: everything gets unloaded


class VersionTable:
    """The versions of configured models and the requests holding them. Thread-safe."""

    def __init__(self, configs: Sequence[ModelConfig]) -> None:
        self._cond = threading.Condition()
        self._models: dict[str, ModelEntry] = {}
        self._draining = False
        self._set_configs(configs)

    # -- configuration --------------------------------------------------------------------

    def _set_configs(self, configs: Sequence[ModelConfig]) -> None:
        names = [c.name for c in configs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique, got duplicates {dup}")
        with self._cond:
            for config in configs:
                model = self._models.get(config.name)
                if model is None:
                    self._models[config.name] = ModelEntry(config)
                else:
                    model.config, model.removed = config, False
            for name in set(self._models) - set(names):
                # stays known (status shows its END entries) but nothing is aspired any more
                self._models[name].removed = True

    def model_names(self) -> list[str]:
        """Configured model names, sorted."""
        with self._cond:
            return sorted(n for n, m in self._models.items() if not m.removed)

    def config(self, name: str) -> ModelConfig:
        with self._cond:
            model = self._models.get(name)
            if model is None or model.removed:
                raise not_found(f"Servable not found for request: Latest({name})")
            return model.config

    # -- draining -------------------------------------------------------------------------

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Stop accepting requests (UNAVAILABLE) and wait up to `timeout_s` for in-flight ones.
        Returns True when none is left."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._draining = True
            while self._in_flight() > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _in_flight(self) -> int:
        return sum(v.refs for m in self._models.values() for v in m.versions.values())

    def _available(self, model: ModelEntry) -> set[int]:
        """The AVAILABLE version numbers of `model` (call with `_cond` held)."""
        return {n for n, v in model.versions.items() if v.state == VersionState.AVAILABLE}

    # -- requests -------------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> int:
        """The version number a request for (name, version | label | latest) gets; raises
        TF Serving's errors when there is none."""
        with self._cond:
            return self._resolve(name, version, label).version

    def _resolve(self, name: str, version: int | None, label: str | None) -> VersionEntry:
        if self._draining:
            raise unavailable("Server is draining: not accepting new requests")
        if version is not None and label is not None:
            raise invalid("A request may name a version or a version label, not both")
        model = self._models.get(name)
        if model is not None and model.removed:
            model = None
        if label is not None:
            labels = model.config.labels if model is not None else {}
            if label not in labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = int(labels[label])
            entry = model.versions.get(version)
            if entry is None or entry.state != VersionState.AVAILABLE:
                state = entry.state.name if entry is not None else "not loaded"
                raise unavailable(
                    f"Version label {label} of model {name} points to version {version}, "
                    f"which is not available ({state})"
                )
            return entry
        if version is not None:
            entry = model.versions.get(int(version)) if model is not None else None
            if entry is None or entry.state != VersionState.AVAILABLE:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return entry
        ready = [] if model is None else [
            v for v in model.versions.values() if v.state == VersionState.AVAILABLE
        ]
        if not ready:
            raise not_found(f"Servable not found for request: Latest({name})")
        return max(ready, key=lambda v: v.version)

    @contextmanager
    def acquire(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[Servable]:
        """A servable for the request, held (refcounted) until the block exits.

        `version` and `label` are exclusive; neither means the highest AVAILABLE version.
        Raises NOT_FOUND `Servable not found for request: Latest(<name>)` /
        `Specific(<name>, <v>)`, INVALID_ARGUMENT `Unrecognized servable version label: <l>`.
        """
        with self._cond:
            entry = self._resolve(name, version, label)
            entry.refs += 1
            servable = entry.servable
        try:
            yield servable
        finally:
            with self._cond:
                entry.refs -= 1
                if entry.refs == 0:
                    self._cond.notify_all()

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """Every version the manager knows of the model (newest first), including END entries
        of unloaded or failed versions; or just the one asked for."""
        with self._cond:
            model = self._models.get(name)
            if label is not None:
                labels = model.config.labels if model is not None else {}
                if label not in labels:
                    raise invalid(f"Unrecognized servable version label: {label}")
                version = int(labels[label])
            if model is None or not model.versions:
                raise not_found(f"Could not find any versions of model {name}")
            if version is not None:
                entry = model.versions.get(int(version))
                if entry is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [entry.status()]
            return [v.status() for _, v in sorted(model.versions.items(), reverse=True)]

    def is_ready(self, name: str) -> bool:
        """Whether a version of `name` is AVAILABLE."""
        with self._cond:
            model = self._models.get(name)
            return model is not None and not model.removed and any(
                v.state == VersionState.AVAILABLE for v in model.versions.values()
            )

    def available_versions(self, name: str) -> list[int]:
        with self._cond:
            model = self._models.get(name)
            if model is None:
                return []
            return sorted(n for n, v in model.versions.items()
                          if v.state == VersionState.AVAILABLE)
