"""The version manager: keeps every model's loaded versions in step with its base path.

It follows TensorFlow Serving's lifecycle (`specs/tf-serving.md` §3):

- Each model's base path is polled (every `poll_wait_s`, 1 s by default) for version folders
  (`models.layout.scan_versions`); the version policy picks the aspired versions.
- Availability-preserving transitions: a new version is loaded (LOADING -> AVAILABLE, after
  warmup) before an unaspired one is unloaded (UNLOADING -> END), and which AVAILABLE versions
  may go is `serve.versions.unload_rule.versions_to_unload`.
- A failed load leaves the version END with its error; it is retried only when its folder
  changes. A version whose folder disappears is unloaded.
- Requests are served from the state it keeps (`serve.versions.table.VersionTable`, which it
  extends): refcounted handles, so an unloading version waits for them.

Loads and unloads run on the polling thread; requests never wait for a load. A version is
AVAILABLE once its SavedModel answers (warmup replayed); the XLA runtime of a pulsecast model is
compiled afterwards in the servable's own background thread (`serve.runtime.xla.XlaBackground`)
and swapped in when verified, and unloading a version cancels that compile (`servable.close()`).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.layout import scan_versions
from serve.errors import Code, ServingError
from serve.types import BatchingParams, ModelConfig, Servable, VersionState
from serve.versions.disk import folder_token
from serve.versions.messages import public_text
from serve.versions.table import ModelEntry, VersionEntry, VersionTable
from serve.versions.unload_rule import versions_to_unload

log = logging.getLogger(__name__)

Loader = Callable[..., Servable]


class ModelManager(VersionTable):
    """Loads, serves and unloads the versions of configured models. Thread-safe.

    `batching` wraps each loaded servable in the dynamic batcher (`serve.batching.scheduler`), so
    callers just call `servable.predict`. Without it, `auto_batching` (> 0: the largest batch)
    wraps pulsecast models (those with pulsecast.json metadata) in
    `serve.batching.adaptive.AdaptiveBatcher`, which batches concurrent requests without changing
    any answer; 0 turns that off. `runtime` and `enable_warmup` go to `load_servable`.
    `loader` replaces `serve.runtime.load.load_servable` (tests). A version folder whose real
    path leaves its model's base path (a link elsewhere) is refused, its status saying why,
    unless `allow_version_links`. Status texts name the model and version, never a path (the
    log has the paths: `serve.versions.messages`).
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
        allow_version_links: bool = False,
    ) -> None:
        if auto_batching < 0:
            raise ValueError(f"auto_batching must be >= 0, got {auto_batching}")
        super().__init__(configs)
        self._poll_lock = threading.Lock()  # one poll at a time (thread + reload_config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.poll_wait_s = poll_wait_s
        self.runtime = runtime
        self.enable_warmup = enable_warmup
        self._loader = loader
        self.auto_batching = auto_batching
        self.allow_version_links = allow_version_links
        self._scheduler = None
        if batching is not None:
            from serve.batching.scheduler import BatchScheduler

            self._scheduler = BatchScheduler(batching)

    def reload_config(self, configs: Sequence[ModelConfig]) -> None:
        """Replace the config; models missing from it are unloaded. Polls once right away."""
        self._set_configs(configs)
        self.poll_once()

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

    def poll_once(self) -> None:
        """One pass over every model: scan its base path, then load/unload toward the policy."""
        with self._poll_lock:
            with self._cond:
                models = list(self._models.values())
            changed = [self._reconcile(model) for model in models]
            if any(changed):
                freeze_heap()

    def _reconcile(self, model: ModelEntry) -> bool:
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

        # 2. unload unaspired versions, one at a time, unless that would leave nothing serving
        while True:
            with self._cond:
                victims = versions_to_unload(aspired, self._available(model))
                if not victims:
                    break
                victim = model.versions[victims[0]]
            self._unload(model, victim)
            changed = True
        return changed

    def _load(self, model: ModelEntry, number: int, path: Path, token: tuple) -> None:
        name = model.config.name
        entry = VersionEntry(number, path, VersionState.LOADING)
        with self._cond:
            model.versions[number] = entry
        log.info("Loading servable version {name: %s version: %d} from %s", name, number, path)
        t0 = time.perf_counter()
        try:
            self._check_inside_base_path(model.config, number, path)
            servable = self._load_servable(name, number, path)
        except Exception as err:  # a bad model must never take the server down
            if isinstance(err, ServingError):
                code, message = err.code, err.message
            else:
                code, message = Code.UNKNOWN, f"{type(err).__name__}: {err}"
            public = public_text(message, name, number, (path, path.resolve(),
                                                        model.config.base_path))
            with self._cond:
                entry.state, entry.error_code, entry.error_message = VersionState.END, code, public
                entry.failed_token = token
                self._cond.notify_all()
            log.error("Loading servable version {name: %s version: %d} from %s failed after "
                      "%.2f s: %s", name, number, path, time.perf_counter() - t0, message[:500])
            return
        if self._scheduler is not None:
            servable = self._scheduler.wrap(servable)
        elif self.auto_batching and _auto_batchable(servable):
            from serve.batching.adaptive import AdaptiveBatcher

            servable = AdaptiveBatcher(servable, self.auto_batching)
        with self._cond:
            entry.servable = servable
            entry.state = VersionState.AVAILABLE
            self._cond.notify_all()
        log.info("Successfully loaded servable version {name: %s version: %d} in %.2f s "
                 "(runtime %s)", name, number, time.perf_counter() - t0,
                 getattr(servable, "runtime", "?"))

    def _check_inside_base_path(self, config: ModelConfig, number: int, path: Path) -> None:
        """FAILED_PRECONDITION for a version folder whose real path leaves the base path."""
        if self.allow_version_links:
            return
        base = Path(config.base_path).resolve()
        if not path.resolve().is_relative_to(base):
            raise ServingError(
                Code.FAILED_PRECONDITION,
                f"version {number} of model {config.name} is a link to a folder outside the "
                "model's base path; it is not served (start the server with "
                "--allow_version_links to serve such versions)",
            )

    def _load_servable(self, name: str, number: int, path: Path) -> Servable:
        if self._loader is not None:
            return self._loader(name, number, path, runtime=self.runtime,
                                enable_warmup=self.enable_warmup)
        from serve.runtime.load import load_servable

        return load_servable(name, number, path, runtime=self.runtime,
                             enable_warmup=self.enable_warmup)

    def _unload(self, model: ModelEntry, entry: VersionEntry) -> None:
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
