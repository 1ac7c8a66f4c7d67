"""The servable face both batchers show: `predict`, `submit` and `submit_async` over a queue.

A batching wrapper is a `Servable` whose `predict` goes through its batcher's queue (`submit`
returns the request's future, or None when the request is not batched and runs directly); every
other attribute (`signatures`, `metadata`, `version`...) is the wrapped servable's. Requests are
validated and cast exactly as the servable's own `predict` would (`prepare_request`), so errors
reach the caller at submit time, never through a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serve.batching.futures import AnyFuture, loop_future
from serve.types import Servable


class BatchedServable:
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
        return self.submit(signature_name, inputs, output_filter, _future=loop_future())


def prepare_request(servable: Servable, signature_name: str, inputs: Mapping[str, Any],
             output_filter: Sequence[str]) -> tuple[str, dict[str, np.ndarray]]:
    """(signature name, cast arrays) as the servable's own predict would validate them."""
    prepare = getattr(servable, "prepare_inputs", None)
    if prepare is None:
        return signature_name, {k: np.asarray(v) for k, v in inputs.items()}
    sig, arrays = prepare(signature_name, inputs, output_filter)
    return sig.name, arrays
