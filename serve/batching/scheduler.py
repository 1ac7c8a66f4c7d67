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
output sliced back to its task. Classify and regress are not batched. On with
`--enable_batching`; pulsecast's own automatic mode is `serve.batching.adaptive`.

Texts follow `tf: core/kernels/batching_util/shared_batch_scheduler.h` and `batch_util`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve.batching.batched import BatchedServable, prepare_request
from serve.batching.futures import AnyFuture, claim, settle
from serve.errors import ServingError, invalid, unavailable
from serve.types import BatchingParams, Servable

log = logging.getLogger(__name__)


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
        settle([(t.future, None, error) for t in pending if claim(t.future)])
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
        wanted = [claim(task.future) for task in tasks]
        try:
            outputs = self._predict_batch(queue.servable, batch)
        except Exception as err:  # every task of the batch gets the batch's error
            if not isinstance(err, ServingError):
                log.exception("batch of %d tasks failed", len(tasks))
                err = invalid(f"{type(err).__name__}: {err}")
            settle([(t.future, None, err) for t, w in zip(tasks, wanted, strict=True) if w])
            return
        answers, start = [], 0
        for task, want in zip(tasks, wanted, strict=True):
            end = start + task.size
            if want:
                answers.append((task.future, {k: v[start:end] for k, v in outputs.items()},
                                None))
            start = end
        settle(answers)

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


class BatchingServable(BatchedServable):
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
        signature_name, arrays = prepare_request(self.inner, signature_name, inputs, output_filter)
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
