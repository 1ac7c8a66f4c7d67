"""Automatic batching for pulsecast's own models: `AdaptiveBatcher`.

pulsecast's mode when `--enable_batching` is off (`--auto_batching N`, on by default): one
runner thread per servable that, whenever the model is free, runs everything queued (up to
`max_batch_size` rows) as one batch: TF Serving's `batch_timeout_micros 0`, so a lone request
runs at once. It never changes what a request gets back: no queue limit, no task-size limit,
and a batch that fails is re-run task by task so each request sees its own error. Only
signatures whose rows are independent are batched (pulsecast's `serving_default`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.layout import SIGNATURE_KEY
from serve.batching.batched import BatchedServable, prepare_request
from serve.batching.futures import AnyFuture, claim, settle
from serve.types import Servable


@dataclass
class _AutoTask:
    key: tuple
    signature_name: str
    output_filter: tuple[str, ...]
    inputs: dict[str, np.ndarray]
    size: int
    future: AnyFuture = field(default_factory=Future)


class AdaptiveBatcher(BatchedServable):
    """Automatic batching for one servable: a single runner thread runs whatever is queued
    when the model frees up, as one batch of at most `max_batch_size` rows.

    Only `signature_names` are batched (pulsecast models: `serving_default`, whose rows are
    independent); other signatures, empty or larger requests call the servable directly. Every
    other attribute is the wrapped servable's.
    """

    def __init__(self, servable: Servable, max_batch_size: int = 64,
                 signature_names: tuple[str, ...] = (SIGNATURE_KEY,)) -> None:
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
        name, arrays = prepare_request(self.inner, signature_name, inputs, output_filter)
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
            batch = [t for t in batch if claim(t.future)]
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
                settle(answers)
                return
        answers = []
        for task in batch:  # alone, or the joined batch failed: each gets its own answer
            try:
                out = self.inner.predict(task.signature_name, task.inputs, task.output_filter)
            except Exception as err:  # the request's error, exactly as unbatched
                answers.append((task.future, None, err))
            else:
                answers.append((task.future, out, None))
        settle(answers)

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
