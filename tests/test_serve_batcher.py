"""serve.batching: TF Serving's dynamic batching semantics on a fake servable (no TensorFlow)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve.batching.scheduler import BatchingServable, BatchScheduler
from serve.errors import Code, ServingError
from serve.types import BatchingParams


class DoublingServable:
    """predict: y = 2 x per row; records each batch size; can hold its first call on a gate."""

    name = "fake"
    version = 1
    runtime = "fake"
    signatures: dict = {}
    metadata = None

    def __init__(self, hold_first: bool = False) -> None:
        self.sizes: list[int] = []
        self.signature_names: list[str] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.hold_first = hold_first
        self.fail_with: Exception | None = None

    def predict(self, signature_name, inputs, output_filter=()):
        first = not self.sizes
        self.sizes.append(len(next(iter(inputs.values()))))
        self.signature_names.append(signature_name)
        if first and self.hold_first:
            self.entered.set()
            assert self.gate.wait(5)
        if self.fail_with is not None:
            raise self.fail_with
        return {f"{k}2": v * 2 for k, v in inputs.items()}


@pytest.fixture
def make():
    schedulers: list[BatchScheduler] = []

    def _make(servable, **params) -> BatchingServable:
        params.setdefault("num_batch_threads", 1)
        scheduler = BatchScheduler(BatchingParams(**params))
        schedulers.append(scheduler)
        return scheduler.wrap(servable)

    yield _make
    for scheduler in schedulers:
        scheduler.stop()


def _rows(n: int, start: float = 0.0, width: int = 1) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32).reshape(n, width) + start)


def _submit_while_held(batched, fake, requests, pool: ThreadPoolExecutor):
    """Hold the only worker on a first request, queue `requests`, then release."""
    first = pool.submit(batched.predict, "", {"x": _rows(1, 100)})
    assert fake.entered.wait(5)
    futures = [pool.submit(batched.predict, *r) for r in requests]
    time.sleep(0.1)  # let every request reach the queue
    fake.gate.set()
    first.result(5)
    return futures


def test_queued_requests_are_concatenated_and_outputs_sliced_back(make) -> None:
    fake = DoublingServable(hold_first=True)
    batched = make(fake, max_batch_size=16)
    with ThreadPoolExecutor(8) as pool:
        reqs = [("", {"x": _rows(n, 10 * i)}) for i, n in enumerate((1, 3, 2))]
        futures = _submit_while_held(batched, fake, reqs, pool)
        results = [f.result(5) for f in futures]
    assert fake.sizes == [1, 6]
    for (_, inputs), out in zip(reqs, results, strict=True):
        np.testing.assert_array_equal(out["x2"], inputs["x"] * 2)


def test_batches_are_padded_to_the_next_allowed_size(make) -> None:
    fake = DoublingServable(hold_first=True)
    batched = make(fake, max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    with ThreadPoolExecutor(8) as pool:
        reqs = [("", {"x": _rows(1, i)}) for i in range(3)]
        futures = _submit_while_held(batched, fake, reqs, pool)
        results = [f.result(5) for f in futures]
    assert fake.sizes == [2, 4]  # the held single request was padded too
    assert [r["x2"].shape for r in results] == [(1, 1)] * 3
    assert sorted(float(r["x2"][0, 0]) for r in results) == [0.0, 2.0, 4.0]


def test_requests_with_other_shapes_or_signatures_are_not_concatenated(make) -> None:
    fake = DoublingServable(hold_first=True)
    batched = make(fake, max_batch_size=16)
    with ThreadPoolExecutor(8) as pool:
        reqs = [("", {"x": _rows(1)}), ("", {"x": _rows(1, width=2)}), ("other", {"x": _rows(1)})]
        futures = _submit_while_held(batched, fake, reqs, pool)
        results = [f.result(5) for f in futures]
    assert fake.sizes == [1, 1, 1, 1]
    assert sorted(fake.signature_names[1:]) == ["", "", "other"]
    assert results[1]["x2"].shape == (1, 2)


def test_a_full_queue_fails_at_once_with_unavailable(make) -> None:
    fake = DoublingServable(hold_first=True)
    batched = make(fake, max_batch_size=2, max_enqueued_batches=1)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batched.predict, "", {"x": _rows(1)})
        assert fake.entered.wait(5)
        queued = pool.submit(batched.predict, "", {"x": _rows(2)})  # fills the one batch
        time.sleep(0.05)
        t0 = time.perf_counter()
        with pytest.raises(ServingError) as info:
            batched.predict("", {"x": _rows(1)})
        waited = time.perf_counter() - t0
        fake.gate.set()
        first.result(5)
        np.testing.assert_array_equal(queued.result(5)["x2"], _rows(2) * 2)
    assert waited < 0.5  # at once: the held worker would block it for seconds
    assert info.value.code == Code.UNAVAILABLE
    assert info.value.message == (
        "The batch scheduling queue to which this task was submitted is full; currently 1 "
        "batches enqueued and max_enqueued_batches is 1"
    )


def test_a_task_larger_than_max_batch_size_is_invalid_argument(make) -> None:
    batched = make(DoublingServable(), max_batch_size=8)
    with pytest.raises(ServingError) as info:
        batched.predict("", {"x": _rows(9)})
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message == "Task size 9 is larger than maximum input batch size 8"
    with pytest.raises(ServingError, match="equal 0th-dimension size"):
        batched.predict("", {"x": _rows(2), "y": _rows(3)})
    with pytest.raises(ServingError, match="at least one dimension"):
        batched.predict("", {"x": np.float32(1.0)})


def test_a_batch_waits_for_the_timeout_then_runs_what_it_has(make) -> None:
    fake = DoublingServable()
    batched = make(fake, max_batch_size=8, batch_timeout_micros=100_000)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batched.predict, "", {"x": _rows(1, i)}) for i in range(3)]
        results = [f.result(5) for f in futures]
    elapsed = time.perf_counter() - t0
    assert 0.09 <= elapsed < 1.0
    assert fake.sizes == [3]
    assert sorted(float(r["x2"][0, 0]) for r in results) == [0.0, 2.0, 4.0]


def test_a_full_batch_runs_without_waiting_for_the_timeout(make) -> None:
    fake = DoublingServable()
    batched = make(fake, max_batch_size=2, batch_timeout_micros=5_000_000)
    t0 = time.perf_counter()
    out = batched.predict("", {"x": _rows(2)})
    assert time.perf_counter() - t0 < 1.0
    np.testing.assert_array_equal(out["x2"], _rows(2) * 2)


def test_a_failing_batch_fails_every_task_in_it_with_the_same_error(make) -> None:
    fake = DoublingServable(hold_first=True)
    fake.fail_with = ServingError(Code.INVALID_ARGUMENT, "boom")
    batched = make(fake, max_batch_size=8)
    with ThreadPoolExecutor(4) as pool:
        futures = _submit_while_held_failing(batched, fake, pool)
        errors = [f.exception(5) for f in futures]
    assert [e.message for e in errors] == ["boom", "boom"]
    assert fake.sizes[-1] == 2


def _submit_while_held_failing(batched, fake, pool):
    first = pool.submit(batched.predict, "", {"x": _rows(1)})
    assert fake.entered.wait(5)
    futures = [pool.submit(batched.predict, "", {"x": _rows(1)}) for _ in range(2)]
    time.sleep(0.1)
    fake.gate.set()
    first.exception(5)
    return futures


def test_the_wrapper_exposes_the_servables_attributes_and_many_threads_get_their_rows(
    make,
) -> None:
    fake = DoublingServable()
    batched = make(fake, max_batch_size=32, num_batch_threads=2, batch_timeout_micros=1000)
    assert (batched.name, batched.version, batched.runtime) == ("fake", 1, "fake")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(
            lambda i: (i, batched.predict("", {"x": _rows(1 + i % 3, 10 * i)})), range(200)
        ))
    for i, out in results:
        np.testing.assert_array_equal(out["x2"], _rows(1 + i % 3, 10 * i) * 2)
    assert max(fake.sizes) > 1  # some requests did share a batch


# -- AdaptiveBatcher: pulsecast's automatic mode ---------------------------------------------


class PreparingServable(DoublingServable):
    """A DoublingServable that validates like SavedModelServable.prepare_inputs."""

    class _Sig:
        name = "serving_default"

    def prepare_inputs(self, signature_name, inputs, output_filter=()):
        if signature_name not in ("", "serving_default", "other"):
            raise ServingError(Code.INVALID_ARGUMENT, f"no signature {signature_name}")
        sig = self._Sig() if signature_name != "other" else type("S", (), {"name": "other"})()
        return sig, {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}


def test_adaptive_batcher_runs_a_lone_request_at_once_alone():
    from serve.batching.adaptive import AdaptiveBatcher

    inner = PreparingServable()
    batcher = AdaptiveBatcher(inner)
    try:
        out = batcher.predict("", {"x": np.ones((1, 3))})
        assert out["x2"].tolist() == [[2.0, 2.0, 2.0]]
        assert inner.sizes == [1]
    finally:
        batcher.close()


def test_adaptive_batcher_batches_what_queued_while_the_model_was_busy():
    from serve.batching.adaptive import AdaptiveBatcher

    inner = PreparingServable(hold_first=True)
    batcher = AdaptiveBatcher(inner, max_batch_size=8)
    try:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(batcher.predict, "", {"x": np.full((1, 2), 0.0)})
            assert inner.entered.wait(5)
            rest = [pool.submit(batcher.predict, "", {"x": np.full((1, 2), float(i))})
                    for i in range(1, 6)]
            deadline = time.monotonic() + 5
            while len(batcher._tasks) < 5 and time.monotonic() < deadline:
                time.sleep(0.001)
            inner.gate.set()
            assert first.result(5)["x2"].tolist() == [[0.0, 0.0]]
            for i, fut in enumerate(rest, start=1):
                assert fut.result(5)["x2"].tolist() == [[2.0 * i, 2.0 * i]]
        assert inner.sizes == [1, 5]
    finally:
        batcher.close()


def test_adaptive_batcher_gives_each_request_its_own_error_when_a_batch_fails():
    from serve.batching.adaptive import AdaptiveBatcher

    class PickyServable(PreparingServable):
        def predict(self, signature_name, inputs, output_filter=()):
            x = next(iter(inputs.values()))
            if (x < 0).any():
                raise ServingError(Code.INVALID_ARGUMENT, f"negative input in batch of {len(x)}")
            return super().predict(signature_name, inputs, output_filter)

    inner = PickyServable(hold_first=True)
    batcher = AdaptiveBatcher(inner)
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.predict, "", {"x": np.ones((1, 1))})
            assert inner.entered.wait(5)
            good = pool.submit(batcher.predict, "", {"x": np.ones((1, 1))})
            bad = pool.submit(batcher.predict, "", {"x": -np.ones((1, 1))})
            deadline = time.monotonic() + 5
            while len(batcher._tasks) < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            inner.gate.set()
            assert first.result(5)["x2"].tolist() == [[2.0]]
            assert good.result(5)["x2"].tolist() == [[2.0]]
            with pytest.raises(ServingError, match="negative input in batch of 1$"):
                bad.result(5)
    finally:
        batcher.close()


def test_adaptive_batcher_leaves_other_signatures_and_big_requests_unbatched():
    from serve.batching.adaptive import AdaptiveBatcher

    inner = PreparingServable()
    batcher = AdaptiveBatcher(inner, max_batch_size=4)
    try:
        assert batcher.submit("other", {"x": np.ones((1, 1))}) is None
        assert batcher.submit("", {"x": np.ones((5, 1))}) is None
        assert batcher.submit("", {"x": np.ones((0, 1))}) is None
        assert batcher.predict("", {"x": np.ones((5, 1))})["x2"].shape == (5, 1)
        with pytest.raises(ServingError, match="no signature nope"):
            batcher.predict("nope", {"x": np.ones((1, 1))})
    finally:
        batcher.close()


def test_adaptive_batcher_skips_a_cancelled_request():
    from serve.batching.adaptive import AdaptiveBatcher

    inner = PreparingServable(hold_first=True)
    batcher = AdaptiveBatcher(inner)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(batcher.predict, "", {"x": np.ones((1, 1))})
            assert inner.entered.wait(5)
            doomed = batcher.submit("", {"x": np.ones((1, 1))})
            kept = batcher.submit("", {"x": np.full((1, 1), 3.0)})
            assert doomed.cancel()
            inner.gate.set()
            first.result(5)
            assert kept.result(5)["x2"].tolist() == [[6.0]]
        assert inner.sizes == [1, 1]
    finally:
        batcher.close()


# -- submit_async: callers on an event loop (the REST layer) ---------------------------------


def _gather_async(batched, fake, values: list[float], hold: bool):
    """Submit one row per value from a coroutine while the model is held on a first request,
    release it, and return (answers, the batcher's call_soon_threadsafe calls on the loop)."""
    import asyncio

    from serve.batching.futures import _settle_on_loop

    async def main():
        loop = asyncio.get_running_loop()
        calls = []
        original = loop.call_soon_threadsafe

        def counting(callback, *args, **kwargs):
            if callback is _settle_on_loop:
                calls.append(args)
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting
        first = None
        if hold:
            first = loop.run_in_executor(None, batched.predict, "", {"x": _rows(1, 100)})
            assert await loop.run_in_executor(None, fake.entered.wait, 5)
        futures = [batched.submit_async("", {"x": np.full((1, 1), v, np.float32)})
                   for v in values]
        fake.gate.set()
        answers = await asyncio.wait_for(asyncio.gather(*futures), 5)
        if first is not None:
            await first
        return answers, calls

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["adaptive", "scheduler"])
def test_submit_async_answers_a_batch_on_the_loop_with_one_wake_up(kind, make) -> None:
    from serve.batching.adaptive import AdaptiveBatcher

    fake = PreparingServable(hold_first=True)
    batched = AdaptiveBatcher(fake, max_batch_size=8) if kind == "adaptive" else make(
        fake, max_batch_size=8, batch_timeout_micros=0)
    try:
        answers, calls = _gather_async(batched, fake, [1.0, 2.0, 3.0, 4.0], hold=True)
    finally:
        if kind == "adaptive":
            batched.close()
    assert [a["x2"].tolist() for a in answers] == [[[2.0]], [[4.0]], [[6.0]], [[8.0]]]
    assert fake.sizes == [1, 4]  # the four queued while the model was busy ran as one batch
    assert len(calls) == 1  # ... and woke the loop once, not once per request


def test_submit_async_gives_a_failing_batch_its_error_on_the_loop(make) -> None:
    fake = PreparingServable(hold_first=True)
    batched = make(fake, max_batch_size=8, batch_timeout_micros=0)
    fake.fail_with = ServingError(Code.INVALID_ARGUMENT, "bad batch")
    with pytest.raises(ServingError, match="bad batch"):
        _gather_async(batched, fake, [1.0, 2.0], hold=True)


def test_a_timed_out_async_request_is_dropped_from_the_batch() -> None:
    import asyncio

    from serve.batching.adaptive import AdaptiveBatcher

    fake = PreparingServable(hold_first=True)
    batcher = AdaptiveBatcher(fake)

    async def main():
        loop = asyncio.get_running_loop()
        first = loop.run_in_executor(None, batcher.predict, "", {"x": _rows(1, 100)})
        assert await loop.run_in_executor(None, fake.entered.wait, 5)
        doomed = batcher.submit_async("", {"x": np.ones((1, 1), np.float32)})
        kept = batcher.submit_async("", {"x": np.full((1, 1), 3.0, np.float32)})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(doomed, 0.01)  # cancels it, as the REST timeout does
        fake.gate.set()
        await first
        return await asyncio.wait_for(kept, 5)

    try:
        assert asyncio.run(main())["x2"].tolist() == [[6.0]]
    finally:
        batcher.close()
    assert fake.sizes == [1, 1]  # the cancelled row never reached the model
