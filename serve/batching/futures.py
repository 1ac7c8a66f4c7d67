"""Where a batched request's answer goes: a thread's Future or an event loop's asyncio.Future.

Both batchers (`serve.batching.scheduler`, `serve.batching.adaptive`) hand each request a future
and settle it when its batch has run. Callers on an event loop (the REST layer) pass an
asyncio.Future (`submit_async`): a batch's answers reach each loop in one
`call_soon_threadsafe`, not one thread wake-up per request, so a request costs no worker-thread
hand-off at all. A future whose caller gave up (timed out, cancelled) is skipped.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

# A task's answer goes to a thread's Future or to an event loop's asyncio.Future.
AnyFuture = Future | asyncio.Future


def claim(future: AnyFuture) -> bool:
    """Whether a task is still wanted (False: its caller gave up and cancelled it)."""
    if isinstance(future, Future):
        return future.set_running_or_notify_cancel()
    return not future.done()


def settle(answers: Sequence[tuple[AnyFuture, Any, BaseException | None]]) -> None:
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


def loop_future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()
