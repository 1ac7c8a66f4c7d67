"""The model manager: which versions of which models are loaded, and handing them to requests.

It follows TensorFlow Serving's lifecycle (`specs/tf-serving.md` §3):

- Each model's base path is polled (every `poll_wait_s`, 1 s by default). Version folders are
  the children whose name parses as an integer (`007` is 7); names starting with `.` are
  pulsecast's staging folders and are ignored. The version policy picks the aspired versions.
- Availability-preserving transitions: a new version is loaded (LOADING -> AVAILABLE, after
  warmup) before an unaspired one is unloaded (UNLOADING -> END), and an unaspired version stays
  while it is the only one serving and an aspired one is not ready yet
  (`availability_preserving_policy.cc`).
- A failed load leaves the version END with its error; it is retried only when its folder
  changes. A version whose folder disappears is unloaded.
- Requests hold a refcounted handle (`acquire`), so an unloading version waits for them.

Loads and unloads run on the polling thread; requests never wait for a load.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.errors import Code, ServingError, invalid, not_found, unavailable
from serve.types import BatchingParams, ModelConfig, Servable, VersionState, VersionStatus

log = logging.getLogger(__name__)

_INT64_MAX = 2**63 - 1
_SIMPLE_ATOI = re.compile(r"\s*\+?([0-9]+)\s*")

Loader = Callable[..., Servable]


def parse_version_name(name: str) -> int | None:
    """A version folder name as absl::SimpleAtoi reads it (`007` -> 7, ` 3` -> 3); None for
    anything else, hidden names (staging folders), negatives and int64 overflow."""
    if name.startswith("."):
        return None
    match = _SIMPLE_ATOI.fullmatch(name)
    if not match:
        return None
    value = int(match.group(1))
    return value if value <= _INT64_MAX else None


def scan_versions(base_path: Path) -> dict[int, Path]:
    """{version: folder} under a base path. Raises FileNotFoundError when the path is missing.
    Duplicates (`1` and `001`) keep the name that sorts last, with a warning, as TF Serving."""
    found: dict[int, Path] = {}
    for entry in sorted(os.scandir(base_path), key=lambda e: e.name):
        version = parse_version_name(entry.name)
        if version is None or not entry.is_dir():
            continue
        if version in found:
            log.warning("duplicate version %d under %s: %s and %s; using %s", version, base_path,
                        found[version].name, entry.name, entry.name)
        found[version] = Path(entry.path)
    return found


def folder_token(path: Path) -> tuple:
    """What changes when a version folder is rewritten: mtimes and sizes of its top files."""
    parts = []
    for rel in ("", "saved_model.pb", "saved_model.pbtxt", "variables", "assets.extra"):
        try:
            st = (path / rel).stat()
        except OSError:
            continue
        parts.append((rel, st.st_mtime_ns, st.st_size))
    for sub in ("variables", "assets.extra"):
        try:
            for e in sorted(os.scandir(path / sub), key=lambda e: e.name):
                st = e.stat()
                parts.append((f"{sub}/{e.name}", st.st_mtime_ns, st.st_size))
        except OSError:
            continue
    return tuple(parts)


@dataclass
class _Version:
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
class _Model:
    config: ModelConfig
    versions: dict[int, _Version] = field(default_factory=dict)
    base_path_missing: bool = False
    removed: bool = False  # dropped from the config: everything gets unloaded


class ModelManager:
    """Loads, serves and unloads the versions of configured models. Thread-safe.

    `batching` wraps each loaded servable in the dynamic batcher (`serve.batcher`), so callers
    just call `servable.predict`. Without it, `auto_batching` (> 0: the largest batch) wraps
    pulsecast models (those with pulsecast.json metadata) in `serve.batcher.AdaptiveBatcher`,
    which batches concurrent requests without changing any answer; 0 turns that off.
    `runtime` and `enable_warmup` go to `load_servable`.
    `loader` replaces `serve.runtime.load_servable` (tests).
    """

    def __init__(
        self,
        configs: Sequence[ModelConfig],
        *,
        poll_wait_s: float = 1.0,
        batching: BatchingParams | None = None,
        runtime: str = "auto",
        enable_warmup: bool = True,
        loader: Loader | None = None,
        auto_batching: int = 0,
    ) -> None:
        if auto_batching < 0:
            raise ValueError(f"auto_batching must be >= 0, got {auto_batching}")
        self._cond = threading.Condition()
        self._models: dict[str, _Model] = {}
        self._poll_lock = threading.Lock()  # one poll at a time (thread + reload_config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._draining = False
        self.poll_wait_s = poll_wait_s
        self.runtime = runtime
        self.enable_warmup = enable_warmup
        self._loader = loader
        self.auto_batching = auto_batching
        self._scheduler = None
        if batching is not None:
            from serve.batcher import BatchScheduler

            self._scheduler = BatchScheduler(batching)
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
                    self._models[config.name] = _Model(config)
                else:
                    model.config, model.removed = config, False
            for name in set(self._models) - set(names):
                # stays known (status shows its END entries) but nothing is aspired any more
                self._models[name].removed = True

    def reload_config(self, configs: Sequence[ModelConfig]) -> None:
        """Replace the config; models missing from it are unloaded. Polls once right away."""
        self._set_configs(configs)
        self.poll_once()

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

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, wait_first_load: bool = True) -> ModelManager:
        """Poll once (synchronously when `wait_first_load`), then every `poll_wait_s` in a
        background thread (0: no thread; negative: never poll, for tests)."""
        if self.poll_wait_s < 0:
            return self
        if wait_first_load:
            self.poll_once()
            if self.poll_wait_s == 0:
                return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll_loop, args=(not wait_first_load,), name="model-manager-poll",
            daemon=True,
        )
        self._thread.start()
        return self

    def _poll_loop(self, poll_first: bool) -> None:
        if poll_first:
            self._safe_poll()
            if self.poll_wait_s == 0:
                return
        while not self._stop.wait(self.poll_wait_s):
            self._safe_poll()

    def _safe_poll(self) -> None:
        try:
            self.poll_once()
        except Exception:  # the poll thread must survive anything
            log.exception("model poll failed")

    def stop(self, unload: bool = True) -> None:
        """Stop polling; with `unload`, unload every version (waiting for in-flight requests)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if unload:
            with self._poll_lock:
                with self._cond:
                    targets = [
                        (m, v) for m in self._models.values() for v in m.versions.values()
                        if v.state == VersionState.AVAILABLE
                    ]
                for model, version in targets:
                    self._unload(model, version)
        if self._scheduler is not None:
            self._scheduler.stop()

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

    def poll_once(self) -> None:
        """One pass over every model: scan its base path, then load/unload toward the policy."""
        with self._poll_lock:
            with self._cond:
                models = list(self._models.values())
            changed = [self._reconcile(model) for model in models]
            if any(changed):
                freeze_heap()

    def _reconcile(self, model: _Model) -> bool:
        """Load and unload toward the policy; True when a version was loaded or unloaded."""
        config = model.config
        if model.removed:
            on_disk: dict[int, Path] = {}
        else:
            try:
                on_disk = scan_versions(Path(config.base_path))
            except OSError as err:
                # TF Serving keeps serving what it has when the base path cannot be listed.
                if not model.base_path_missing:
                    log.error("Could not find base path %s for servable %s: %s",
                              config.base_path, config.name, err)
                model.base_path_missing = True
                return False
            model.base_path_missing = False
            if not on_disk:
                log.warning(
                    "No versions of servable %s found under base path %s. Did you forget to "
                    "name your leaf directory as a number (eg. '/1/')?",
                    config.name, config.base_path,
                )
        aspired = set(config.policy.select(list(on_disk)))
        changed = False

        # 1. load new aspired versions, highest first (each becomes AVAILABLE before any unload)
        for number in sorted(aspired, reverse=True):
            with self._cond:
                current = model.versions.get(number)
            if current is not None and current.state in (
                VersionState.AVAILABLE, VersionState.LOADING
            ):
                continue
            token = folder_token(on_disk[number])
            if current is not None and current.failed_token is not None:
                if current.failed_token == token:
                    continue  # failed before and unchanged on disk: do not retry
            self._load(model, number, on_disk[number], token)
            changed = True

        # 2. unload unaspired versions unless that would leave nothing serving
        while True:
            with self._cond:
                ready = {n for n, v in model.versions.items() if v.state == VersionState.AVAILABLE}
                unaspired = sorted(ready - aspired)
                has_aspired_ready = bool(ready & aspired)
                if not unaspired or not (not aspired or has_aspired_ready or len(unaspired) > 1):
                    break
                victim = model.versions[unaspired[0]]
            self._unload(model, victim)
            changed = True
        return changed

    def _load(self, model: _Model, number: int, path: Path, token: tuple) -> None:
        name = model.config.name
        entry = _Version(number, path, VersionState.LOADING)
        with self._cond:
            model.versions[number] = entry
        log.info("Loading servable version {name: %s version: %d} from %s", name, number, path)
        t0 = time.perf_counter()
        try:
            servable = self._load_servable(name, number, path)
        except Exception as err:  # a bad model must never take the server down
            if isinstance(err, ServingError):
                code, message = err.code, err.message
            else:
                code, message = Code.UNKNOWN, f"{type(err).__name__}: {err}"
            with self._cond:
                entry.state, entry.error_code, entry.error_message = VersionState.END, code, message
                entry.failed_token = token
                self._cond.notify_all()
            log.error("Loading servable version {name: %s version: %d} failed after %.2f s: %s",
                      name, number, time.perf_counter() - t0, message[:500])
            return
        if self._scheduler is not None:
            servable = self._scheduler.wrap(servable)
        elif self.auto_batching and _auto_batchable(servable):
            from serve.batcher import AdaptiveBatcher

            servable = AdaptiveBatcher(servable, self.auto_batching)
        with self._cond:
            entry.servable = servable
            entry.state = VersionState.AVAILABLE
            self._cond.notify_all()
        log.info("Successfully loaded servable version {name: %s version: %d} in %.2f s "
                 "(runtime %s)", name, number, time.perf_counter() - t0,
                 getattr(servable, "runtime", "?"))

    def _load_servable(self, name: str, number: int, path: Path) -> Servable:
        if self._loader is not None:
            return self._loader(name, number, path, runtime=self.runtime,
                                enable_warmup=self.enable_warmup)
        from serve.runtime import load_servable

        return load_servable(name, number, path, runtime=self.runtime,
                             enable_warmup=self.enable_warmup)

    def _unload(self, model: _Model, entry: _Version) -> None:
        name = model.config.name
        t0 = time.perf_counter()
        with self._cond:
            if entry.state != VersionState.AVAILABLE:
                return
            entry.state = VersionState.UNLOADING
            log.info("Unloading servable version {name: %s version: %d} (%d in flight)",
                     name, entry.version, entry.refs)
            while entry.refs > 0:
                self._cond.wait()
            servable, entry.servable = entry.servable, None
        close = getattr(servable, "close", None)
        if close is not None:
            close()
        del servable
        with self._cond:
            entry.state = VersionState.END
            self._cond.notify_all()
        log.info("Done unloading servable version {name: %s version: %d} in %.2f s",
                 name, entry.version, time.perf_counter() - t0)

    # -- requests -------------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> int:
        """The version number a request for (name, version | label | latest) gets; raises
        TF Serving's errors when there is none."""
        with self._cond:
            return self._resolve(name, version, label).version

    def _resolve(self, name: str, version: int | None, label: str | None) -> _Version:
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

    def __enter__(self) -> ModelManager:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()



def freeze_heap() -> None:
    """Collect, then move every object left to the collector's permanent generation.

    A loaded TensorFlow model is hundreds of thousands of Python objects; without this, every
    full collection triggered by request garbage rescans them all (0.2-0.4 s with the GIL held,
    measured on the reference model), which was the p99 and a halving of throughput under load.
    Run after each load/unload, so an unloaded version's cycles are still collected once.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _auto_batchable(servable: Servable) -> bool:
    """Pulsecast exports (pulsecast.json present) whose inputs can be validated before batching:
    their `serving_default` maps each row independently, so batching never changes an answer."""
    return (getattr(servable, "metadata", None) is not None
            and callable(getattr(servable, "prepare_inputs", None)))
