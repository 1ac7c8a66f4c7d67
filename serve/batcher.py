"""Dynamic server-side batching with TensorFlow Serving's BatchingParameters semantics.

One `BatchScheduler` per server (TF's SharedBatchScheduler) owns `num_batch_threads` workers
and one queue per servable version; `wrap(servable)` returns a servable whose `predict` goes
through that queue. A request (task) joins the open batch of its queue that has the same
signature, output filter, dtypes and per-example shapes, if it fits in `max_batch_size`;
otherwise a new batch is opened, unless `max_enqueued_batches` are already waiting, in which
case the task fails at once with UNAVAILABLE. A batch runs when it is full, when
`batch_timeout_micros` have passed since it was opened, or at once when that is 0 and a worker
is free (so batches form naturally while workers are busy). The inputs are concatenated along
dim 0, padded (copies of the first row) up to the next `allowed_batch_sizes` entry, and each
output sliced back to its task. Classify and regress are not batched.

`AdaptiveBatcher` is pulsecast's automatic mode for its own models when `--enable_batching` is
off: one runner thread per servable that, whenever the model is free, runs everything queued
(up to `max_batch_size` rows) as one batch: TF Serving's `batch_timeout_micros 0`, so a lone
request runs at once. It never changes what a request gets back: no queue limit, no task-size
limit, and a batch that fails is re-run task by task so each request sees its own error.

Both expose `submit(...) -> Future | None` next to `predict` (which waits on that Future), and
`submit_async(...) -> asyncio.Future | None` for callers on an event loop (the REST layer): a
batch's answers reach each loop in one `call_soon_threadsafe`, not one thread wake-up per
request, so a request costs no worker-thread hand-off at all.

Texts follow `tf: core/kernels/batching_util/shared_batch_scheduler.h` and `batch_util`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve.errors import ServingError, invalid, unavailable
from serve.types import BatchingParams, Servable

log = logging.getLogger(__name__)

# A task's answer goes to a thread's Future or to an event loop's asyncio.Future.
AnyFuture = Future | asyncio.Future


def _claim(future: AnyFuture) -> bool:
    """Whether a task is still wanted (False: its caller gave up and cancelled it)."""
    if isinstance(future, Future):
        return future.set_running_or_notify_cancel()
    return not future.done()


def _settle(answers: Sequence[tuple[AnyFuture, Any, BaseException | None]]) -> None:
    """Give each (future, result, error) its answer: thread futures directly, loop futures in one
    callback per event loop (a batch wakes each loop once, not once per request)."""
    by_loop: dict[Any, list] = defaultdict(list)
    for future, result, error in answers:
        if isinstance(future, Future):
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        else:
            by_loop[future.get_loop()].append((future, result, error))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_on_loop, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle_on_loop(items: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():  # cancelled (timed out) while it ran
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _loop_future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    future: AnyFuture = field(default_factory=Future)


@dataclass
class _Batch:
    key: tuple
    signature_name: str
    output_filter: tuple[str, ...]
    opened: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    closed: bool = False


@dataclass
class _Queue:
    servable: Servable
    batches: deque[_Batch] = field(default_factory=deque)


def _task_size(inputs: Mapping[str, np.ndarray]) -> int:
    sizes = set()
    for arr in inputs.values():
        if arr.ndim == 0:
            raise invalid("Batching input tensors must have at least one dimension")
        sizes.add(arr.shape[0])
    if len(sizes) != 1:
        raise invalid(
            "Batching input tensors supplied in a given op invocation must have equal "
            "0th-dimension size"
        )
    return sizes.pop()


def _pad_size(size: int, params: BatchingParams) -> int:
    return next((s for s in params.allowed_batch_sizes if s >= size), size)


class BatchScheduler:
    """Shared batch scheduler: worker threads serving every wrapped servable's queue."""

    def __init__(self, params: BatchingParams) -> None:
        self.params = params
        self._cond = threading.Condition()
        self._queues: list[_Queue] = []
        self._next = 0  # round-robin start among queues
        self._stopped = False
        self._workers = [
            threading.Thread(target=self._work, name=f"batch-worker-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for worker in self._workers:
            worker.start()

    def wrap(self, servable: Servable) -> BatchingServable:
        """A servable whose `predict` is batched through a new queue of this scheduler."""
        queue = _Queue(servable)
        with self._cond:
            self._queues.append(queue)
        return BatchingServable(self, queue)

    def stop(self) -> None:
        """Fail queued tasks with UNAVAILABLE and stop the workers."""
        with self._cond:
            self._stopped = True
            pending = [t for q in self._queues for b in q.batches for t in b.tasks]
            for q in self._queues:
                q.batches.clear()
            self._cond.notify_all()
        error = unavailable("The batch scheduler is shutting down")
        _settle([(t.future, None, error) for t in pending if _claim(t.future)])
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout=5)

    def _close_queue(self, queue: _Queue) -> None:
        with self._cond:
            if queue in self._queues:
                self._queues.remove(queue)

    # -- submit ---------------------------------------------------------------------------

    def submit(self, queue: _Queue, signature_name: str, inputs: dict[str, np.ndarray],
               output_filter: tuple[str, ...], future: AnyFuture | None = None) -> AnyFuture:
        """Enqueue one task; `future` (a new thread Future by default) gets its answer."""
        p = self.params
        size = _task_size(inputs)
        if size > p.max_batch_size:
            raise invalid(f"Task size {size} is larger than maximum input batch size "
                          f"{p.max_batch_size}")
        key = (signature_name, output_filter, tuple(
            (k, inputs[k].dtype.str, inputs[k].shape[1:]) for k in sorted(inputs)
        ))
        task = _Task(inputs, size) if future is None else _Task(inputs, size, future)
        with self._cond:
            if self._stopped:
                raise unavailable("The batch scheduler is shutting down")
            open_batch = next(
                (b for b in queue.batches if b.key == key and not b.closed), None
            )
            if open_batch is not None and open_batch.size + size <= p.max_batch_size:
                batch = open_batch
            else:
                if len(queue.batches) >= p.max_enqueued_batches:
                    raise unavailable(
                        "The batch scheduling queue to which this task was submitted is full; "
                        f"currently {len(queue.batches)} batches enqueued and "
                        f"max_enqueued_batches is {p.max_enqueued_batches}"
                    )
                if open_batch is not None:
                    open_batch.closed = True
                batch = _Batch(key, signature_name, output_filter, time.monotonic())
                queue.batches.append(batch)
            batch.tasks.append(task)
            batch.size += size
            if batch.size >= p.max_batch_size:
                batch.closed = True
            self._cond.notify()
        return task.future

    # -- workers --------------------------------------------------------------------------

    def _take_ready(self) -> tuple[_Queue, _Batch] | float | None:
        """A ready (queue, batch), else seconds until the next batch times out (None: none)."""
        timeout_s = self.params.batch_timeout_micros / 1e6
        now = time.monotonic()
        wait: float | None = None
        n = len(self._queues)
        for i in range(n):
            queue = self._queues[(self._next + i) % n]
            for batch in queue.batches:
                left = batch.opened + timeout_s - now
                if batch.closed or left <= 0:
                    queue.batches.remove(batch)
                    self._next = (self._next + i + 1) % max(1, n)
                    return queue, batch
                wait = left if wait is None else min(wait, left)
        return wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    got = self._take_ready()
                    if isinstance(got, tuple):
                        break
                    self._cond.wait(got)
            self._run(*got)

    def _run(self, queue: _Queue, batch: _Batch) -> None:
        tasks = batch.tasks
        # a request that timed out was cancelled: it still runs (the batch is formed), but its
        # slice is dropped
        wanted = [_claim(task.future) for task in tasks]
        try:
            outputs = self._predict_batch(queue.servable, batch)
        except Exception as err:  # every task of the batch gets the batch's error
            if not isinstance(err, ServingError):
                log.exception("batch of %d tasks failed", len(tasks))
                err = invalid(f"{type(err).__name__}: {err}")
            _settle([(t.future, None, err) for t, w in zip(tasks, wanted, strict=True) if w])
            return
        answers, start = [], 0
        for task, want in zip(tasks, wanted, strict=True):
            end = start + task.size
            if want:
                answers.append((task.future, {k: v[start:end] for k, v in outputs.items()},
                                None))
            start = end
        _settle(answers)

    def _predict_batch(self, servable: Servable, batch: _Batch) -> dict[str, np.ndarray]:
        padded_size = _pad_size(batch.size, self.params)
        inputs = {}
        for alias in batch.tasks[0].inputs:
            parts = [t.inputs[alias] for t in batch.tasks]
            if padded_size > batch.size:
                first = parts[0][:1]
                parts.append(np.repeat(first, padded_size - batch.size, axis=0))
            inputs[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        outputs = servable.predict(batch.signature_name, inputs, batch.output_filter)
        for alias, arr in outputs.items():
            if np.ndim(arr) == 0 or arr.shape[0] != padded_size:
                raise invalid(
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                    f"dimension sizes of the input tensors (output {alias})"
                )
        return outputs


class _Batched:
    """What both batching wrappers share: every attribute but `predict` is the wrapped
    servable's (`inner`); `predict` and `submit_async` go through the subclass's `submit`."""

    inner: Servable

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def submit(self, signature_name: str, inputs: Mapping[str, Any],
               output_filter: Sequence[str] = (), *,
               _future: AnyFuture | None = None) -> AnyFuture | None:
        raise NotImplementedError

    def predict(self, signature_name: str, inputs: Mapping[str, Any],
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Validate and cast like the servable, then wait for this request's slice of a batch
        (or run it unbatched when `submit` declines it)."""
        future = self.submit(signature_name, inputs, output_filter)
        if future is None:
            return self.inner.predict(signature_name, inputs, output_filter)
        return future.result()

    def submit_async(self, signature_name: str, inputs: Mapping[str, Any],
                     output_filter: Sequence[str] = ()) -> asyncio.Future | None:
        """`submit` from a coroutine: the returned asyncio.Future is settled on this loop."""
        return self.submit(signature_name, inputs, output_filter, _future=_loop_future())


class BatchingServable(_Batched):
    """A servable whose `predict` is batched; every other attribute is the wrapped one's."""

    def __init__(self, scheduler: BatchScheduler, queue: _Queue) -> None:
        self._scheduler = scheduler
        self._queue = queue
        self.inner = queue.servable

    def submit(self, signature_name: str, inputs: Mapping[str, Any],
               output_filter: Sequence[str] = (), *,
               _future: AnyFuture | None = None) -> AnyFuture | None:
        """Validate, cast and enqueue; the Future gets this task's outputs. None: the request
        is not batched (no inputs, or an empty batch), call `predict` instead."""
        signature_name, arrays = _prepare(self.inner, signature_name, inputs, output_filter)
        if not arrays or _task_size(arrays) == 0:
            return None
        return self._scheduler.submit(self._queue, signature_name, arrays, tuple(output_filter),
                                      _future)

    def close(self) -> None:
        """Detach this queue from the scheduler (called by the manager after the last request),
        then close the wrapped servable."""
        self._scheduler._close_queue(self._queue)
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()



def _prepare(servable: Servable, signature_name: str, inputs: Mapping[str, Any],
             output_filter: Sequence[str]) -> tuple[str, dict[str, np.ndarray]]:
    """(signature name, cast arrays) as the servable's own predict would validate them."""
    prepare = getattr(servable, "prepare_inputs", None)
    if prepare is None:
        return signature_name, {k: np.asarray(v) for k, v in inputs.items()}
    sig, arrays = prepare(signature_name, inputs, output_filter)
    return sig.name, arrays


@dataclass
class _AutoTask:
    key: tuple
    signature_name: str
    output_filter: tuple[str, ...]
    inputs: dict[str, np.ndarray]
    size: int
    future: AnyFuture = field(default_factory=Future)


class AdaptiveBatcher(_Batched):
    """Automatic batching for one servable: a single runner thread runs whatever is queued
    when the model frees up, as one batch of at most `max_batch_size` rows.

    Only `signature_names` are batched (pulsecast models: `serving_default`, whose rows are
    independent); other signatures, empty or larger requests call the servable directly. Every
    other attribute is the wrapped servable's.
    """

    def __init__(self, servable: Servable, max_batch_size: int = 64,
                 signature_names: tuple[str, ...] = ("serving_default",)) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.inner = servable
        self.max_batch_size = max_batch_size
        self.signature_names = signature_names
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batch sizes, for tests/logs
        self._cond = threading.Condition()
        self._tasks: deque[_AutoTask] = deque()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._work, daemon=True,
            name=f"autobatch-{getattr(servable, 'name', '?')}-{getattr(servable, 'version', 0)}",
        )
        self._thread.start()

    def submit(self, signature_name: str, inputs: Mapping[str, Any],
               output_filter: Sequence[str] = (), *,
               _future: AnyFuture | None = None) -> AnyFuture | None:
        """Validate, cast and enqueue; the Future gets this request's outputs. None: not
        batched (call `predict`). Validation errors raise here, as `predict` would."""
        name, arrays = _prepare(self.inner, signature_name, inputs, output_filter)
        if name not in self.signature_names or not arrays:
            return None
        sizes = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        size = sizes.pop() if len(sizes) == 1 else -1
        if not 1 <= size <= self.max_batch_size:
            return None
        key = (name, tuple(output_filter),
               tuple((k, arrays[k].dtype.str, arrays[k].shape[1:]) for k in sorted(arrays)))
        task = _AutoTask(key, name, tuple(output_filter), arrays, size,
                         Future() if _future is None else _future)
        with self._cond:
            if self._stopped:
                return None
            self._tasks.append(task)
            self._cond.notify()
        return task.future

    def close(self) -> None:
        """Run what is queued, stop the runner, then close the wrapped servable."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    # -- runner ---------------------------------------------------------------------------

    def _take(self) -> list[_AutoTask] | None:
        """The next batch: the oldest task and every later one like it that fits."""
        with self._cond:
            while not self._tasks:
                if self._stopped:
                    return None
                self._cond.wait()
            first = self._tasks.popleft()
            batch, size, kept = [first], first.size, deque()
            while self._tasks and size < self.max_batch_size:
                task = self._tasks.popleft()
                if task.key == first.key and size + task.size <= self.max_batch_size:
                    batch.append(task)
                    size += task.size
                else:
                    kept.append(task)
            kept.extend(self._tasks)
            self._tasks = kept
        return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            # a request that timed out was cancelled: skip it
            batch = [t for t in batch if _claim(t.future)]
            if batch:
                self._run(batch)

    def _run(self, batch: list[_AutoTask]) -> None:
        size = sum(t.size for t in batch)
        self.batch_sizes.append(size)
        if len(batch) > 1:
            outputs = self._run_joined(batch, size)
            if outputs is not None:
                answers, start = [], 0
                for task in batch:
                    answers.append((task.future, {k: v[start:start + task.size]
                                                  for k, v in outputs.items()}, None))
                    start += task.size
                _settle(answers)
                return
        answers = []
        for task in batch:  # alone, or the joined batch failed: each gets its own answer
            try:
                out = self.inner.predict(task.signature_name, task.inputs, task.output_filter)
            except Exception as err:  # the request's error, exactly as unbatched
                answers.append((task.future, None, err))
            else:
                answers.append((task.future, out, None))
        _settle(answers)

    def _run_joined(self, batch: list[_AutoTask], size: int) -> dict[str, np.ndarray] | None:
        """Outputs of the concatenated batch, or None when it failed or did not split by row."""
        first = batch[0]
        inputs = {k: np.concatenate([t.inputs[k] for t in batch]) for k in first.inputs}
        try:
            outputs = self.inner.predict(first.signature_name, inputs, first.output_filter)
        except Exception:
            return None
        if any(np.ndim(v) == 0 or v.shape[0] != size for v in outputs.values()):
            return None
        return outputs
