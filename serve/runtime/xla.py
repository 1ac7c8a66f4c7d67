"""The XLA runtime: `serving_default` compiled with `tf.function(jit_compile=True)`.

For pulsecast models it is ~10x faster than the plain SavedModel at small batches on CPU (see
`specs/keras-notes.md` §4-5). XLA compiles once per concrete shape, so batches are zero-padded
up to a bucket (1, 2, 4, 8, 16, 32, all compiled at load) and the outputs sliced back; larger
batches use the SavedModel, which is faster per forecast there (batch 48-64: ~0.19 vs ~0.22 ms on
2 cores). `verified_xla` adopts it only when it reproduces the SavedModel on the warmup inputs to
float32 tolerance; otherwise it logs why and the servable stays on `savedmodel`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.layout import SIGNATURE_KEY
from serve.errors import invalid
from serve.types import SignatureInfo
from serve.wire.dtypes import numpy_dtype

log = logging.getLogger(__name__)

# Measured on 2 CPU cores for Input(256, 1) -> LSTM(64) -> Dense(32), ms per forecast: XLA
# 0.38 / 0.27 / 0.23 / 0.22 at batch 1 / 4 / 16 / 32 against 3.4 / 0.95 / 0.32 / 0.26 for the
# SavedModel; from 48 the SavedModel wins (0.19 vs 0.22 at 48, 0.17 vs 0.22 at 64).
XLA_BUCKETS = (1, 2, 4, 8, 16, 32)
XLA_RTOL = 1e-4  # tolerance relative to the output's scale (max |value|, at least 1)


def _outputs_match(
    got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], rtol: float = XLA_RTOL
) -> str | None:
    """None when every output agrees to `rtol` x max(1, max |want|); else why not."""
    for key, ref in want.items():
        if key not in got:
            return f"output {key!r} missing"
        if got[key].shape != ref.shape:
            return f"output {key!r} has shape {got[key].shape}, expected {ref.shape}"
        ref64 = ref.astype(np.float64)
        if not np.isfinite(ref64).all():
            return f"output {key!r} of the SavedModel is not finite on the check batch"
        diff = float(np.max(np.abs(got[key].astype(np.float64) - ref64))) if ref.size else 0.0
        scale = max(1.0, float(np.max(np.abs(ref64))) if ref.size else 1.0)
        if not diff <= rtol * scale:
            return f"output {key!r} differs by {diff:.3g} (tolerance {rtol * scale:.3g})"
    return None


def _bucket(n: int, buckets: Sequence[int]) -> int | None:
    return next((b for b in buckets if b >= n), None)


class XlaPredict:
    """`serving_default` compiled with XLA, batch zero-padded up to a bucket."""

    def __init__(self, fn: Any, sig: SignatureInfo, buckets: Sequence[int]) -> None:
        import tensorflow as tf

        self.buckets = tuple(buckets)
        self.sig = sig
        self._keys = tuple(sorted(sig.inputs))
        specs = [
            tf.TensorSpec([None, *sig.inputs[k].shape[1:]],
                          tf.as_dtype(numpy_dtype(sig.inputs[k].dtype)), name=f"in{i}")
            for i, k in enumerate(self._keys)
        ]

        def call(*tensors):
            return fn(**dict(zip(self._keys, tensors, strict=True)))

        # The concrete function of positional tensors: calling it skips tf.function's
        # argument binding and dict canonicalization, ~0.2 ms of Python per call (a third of
        # a batch-1 forecast of the reference model on 2 cores).
        self._fn = tf.function(call, jit_compile=True,
                               input_signature=specs).get_concrete_function()

    @staticmethod
    def supports(sig: SignatureInfo) -> bool:
        return bool(sig.inputs) and all(
            info.shape is not None and len(info.shape) >= 1
            and all(d >= 0 for d in info.shape[1:])
            and info.dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64")
            for info in sig.inputs.values()
        )

    def covers(self, n: int) -> bool:
        return 1 <= n <= self.buckets[-1]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        n = len(next(iter(inputs.values())))
        size = _bucket(n, self.buckets)
        assert size is not None  # callers check covers()
        padded = []
        for k in self._keys:
            arr = inputs[k]
            if len(arr) != n:
                raise invalid("Batching input tensors must have equal 0th-dimension size")
            if size > n:
                arr = np.concatenate([arr, np.zeros((size - n, *arr.shape[1:]), arr.dtype)])
            padded.append(tf.constant(arr))
        out = self._fn(*padded)
        return {k: v.numpy()[:n] for k, v in out.items()}

    def compile(self, n: int) -> None:
        """Trigger XLA compilation for `n`'s bucket."""
        self({k: np.zeros((n, *info.shape[1:]), numpy_dtype(info.dtype))
              for k, info in self.sig.inputs.items()})


def batch_size(arrays: Mapping[str, np.ndarray]) -> int | None:
    """The shared dim 0 of every input, or None (a 0-d input, or sizes that differ)."""
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    return sizes.pop() if len(sizes) == 1 else None


def verified_xla(servable: Any, check_batches: Sequence[Mapping[str, np.ndarray]],
                 buckets: Sequence[int] = XLA_BUCKETS) -> XlaPredict | None:
    """`servable`'s `serving_default` compiled, if it matches the SavedModel on `check_batches`
    (a fixed random batch when there is none) and every bucket compiles; None, with a log line
    saying why, otherwise. `servable` is a `SavedModelServable` (`prepare_inputs`,
    `run_savedmodel`, `function`)."""
    sig = servable.signatures.get(SIGNATURE_KEY)
    fn = servable.function(SIGNATURE_KEY)
    if sig is None or fn is None or not XlaPredict.supports(sig):
        log.info("%s v%d: no XLA runtime (serving_default not a fixed-shape numeric signature)",
                 servable.name, servable.version)
        return None
    rng = np.random.default_rng(0)
    fallback = {k: rng.standard_normal((3, *i.shape[1:])).astype(numpy_dtype(i.dtype))
                for k, i in sig.inputs.items()}  # only when there is no warmup batch
    t0 = time.perf_counter()
    try:
        xla = XlaPredict(fn, sig, buckets)
        checked = 0
        for batch in [*check_batches, fallback]:
            if checked and batch is fallback:
                break
            _, arrays = servable.prepare_inputs(SIGNATURE_KEY, batch)
            if batch_size(arrays) in (None, 0):
                continue
            arrays = {k: v[: xla.buckets[-1]] for k, v in arrays.items()}
            checked += 1
            why = _outputs_match(xla(arrays), servable.run_savedmodel(SIGNATURE_KEY, arrays))
            if why is not None:
                log.warning("%s v%d: XLA runtime rejected, %s; serving the SavedModel",
                            servable.name, servable.version, why)
                return None
        for size in xla.buckets:  # compile every bucket now, not on a request
            xla.compile(size)
    except Exception as err:  # any compile failure means: keep the SavedModel
        log.warning("%s v%d: XLA runtime failed (%s: %s); serving the SavedModel",
                    servable.name, servable.version, type(err).__name__, str(err)[:300])
        return None
    log.info("%s v%d: XLA runtime verified in %.2f s (buckets %s)", servable.name,
             servable.version, time.perf_counter() - t0, list(buckets))
    return xla
