"""Executors: map one top-level function over many items, in order, on this host or on Ray.

`map_ordered(fn, items, shared, executor=...)` yields `fn(item, shared)` for each item, in the
order of `items`, whichever engine ran it:

- `"local"` (default): in this process when `workers == 1`, else a `ProcessPoolExecutor` of
  `workers` processes;
- `"ray"`: one Ray task per item (1 CPU each) on the cluster at `ray_address` (`"auto"`, a
  `host:port` or a `ray://host:port` client address), or on a local Ray started here with
  `max(2, workers)` CPUs when no address is given and Ray is not already initialised. A Ray this
  function started is shut down when the map ends; one the caller started is left running.

`fn` and `shared` must pickle (top-level function, plain dataclasses), and on a cluster the
package that defines `fn` must be importable on every node. Ray is an optional extra
(`pip install pulsecast[scale]`); it is imported only when the Ray executor is asked for.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

__all__ = ["EXECUTORS", "ExecutorError", "map_ordered", "validate_executor"]

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
IN_FLIGHT_PER_CPU = 2  # Ray tasks queued per cluster CPU: busy workers, bounded object store
_RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


class ExecutorError(RuntimeError):
    """A worker failed outside `fn`'s own error handling (a lost node, an import error)."""


def validate_executor(executor: str, ray_address: str | None, workers: int) -> None:
    """Raise `ValueError` naming the bad value: executor, workers, or an address without Ray."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers}")
    if ray_address is None:
        return
    if executor != "ray":
        raise ValueError(f"ray_address needs executor 'ray', got executor {executor!r}")
    if not isinstance(ray_address, str) or not _RAY_ADDRESS.match(ray_address):
        raise ValueError(
            f"ray_address must be 'auto', 'host:port' or 'ray://host:port', got {ray_address!r}"
        )


def map_ordered(
    fn: Callable[[T, S], R],
    items: Sequence[T],
    shared: S,
    *,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> Iterator[R]:
    """`fn(item, shared)` for every item, yielded in the order of `items` as results arrive."""
    validate_executor(executor, ray_address, workers)
    if executor == "ray":
        return _map_ray(fn, items, shared, workers=workers, address=ray_address)
    return _map_local(fn, items, shared, workers=workers)


def _map_local(fn: Callable[[T, S], R], items: Sequence[T], shared: S,
               *, workers: int) -> Iterator[R]:
    if workers == 1 or len(items) <= 1:
        yield from (fn(item, shared) for item in items)
        return
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(fn, items, [shared] * len(items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def import_ray():
    """The `ray` module, or an `ImportError` that says which extra installs it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            "executor 'ray' needs Ray: pip install 'pulsecast[scale]' (or 'ray[data]')"
        ) from err
    return ray


def _call(fn: Callable[[T, S], R], item: T, shared: S) -> R:
    """The Ray task: any picklable callable (builtins too, which `ray.remote` refuses)."""
    return fn(item, shared)


def _map_ray(fn: Callable[[T, S], R], items: Sequence[T], shared: S,
             *, workers: int, address: str | None) -> Iterator[R]:
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=max(2, workers), include_dashboard=False)
    pending: deque = deque()
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = max(1, cpus * IN_FLIGHT_PER_CPU)
        log.info("ray: %d tasks over %d CPUs (%d in flight)", len(items), cpus, window)
        task = ray.remote(num_cpus=1, max_retries=2)(_call)
        fn_ref, shared_ref = ray.put(fn), ray.put(shared)  # one copy each, not one per task
        todo = iter(items)
        for item in todo:
            pending.append((item, task.remote(fn_ref, item, shared_ref)))
            if len(pending) >= window:
                break
        while pending:
            # The head of the queue is the next result in order; later ones keep running meanwhile.
            item, ref = pending.popleft()
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                raise ExecutorError(f"ray task for {item} failed: {err}") from err
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, task.remote(fn_ref, nxt, shared_ref)))
            yield result
    finally:
        for _, ref in pending:  # the consumer stopped early: drop the queued work
            ray.cancel(ref)
        if started:
            ray.shutdown()
