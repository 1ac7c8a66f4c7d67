"""The XLA runtime: `serving_default` compiled with `tf.function(jit_compile=True)`, swapped in
behind the SavedModel, in the background, once verified.

For pulsecast models it is ~10x faster than the plain SavedModel at small batches on CPU (see
`specs/keras-notes.md` §4-5). XLA compiles once per concrete shape, so batches are zero-padded
up to a bucket (1, 2, 4, 8, 16, 32) and the outputs sliced back; larger batches use the
SavedModel, which is faster per forecast there (batch 48-64: ~0.19 vs ~0.22 ms on 2 cores).

Compiling costs far more than loading (the ecg recipe's model: about a second to load and call
the SavedModel, 20-50 s to compile the six buckets on 2 cores), so it never delays serving nor a
request: `XlaBackground` runs after the warmup replay, in a daemon thread, while the SavedModel
answers. Bucket by bucket, smallest first, it compiles and checks the compiled function against
the SavedModel (`compile_verified`: the warmup inputs and a batch padded to the bucket, to float32
tolerance); the servable adopts the runtime with its first verified bucket, and each later bucket
goes live once verified (`XlaPredict.covers`), so no request ever triggers a compile. One bucket
compiles at a time in the process, so compiles take at most one core. A bucket that does not
match, or a compile that fails, drops the XLA runtime with a log line: the servable keeps serving
the SavedModel. Unloading cancels the job between two steps and waits for the step in progress
(`XlaBackground.cancel`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.layout import SIGNATURE_KEY
from serve.errors import ServingError, invalid
from serve.types import SignatureInfo
from serve.wire.dtypes import numpy_dtype

log = logging.getLogger(__name__)

# Measured on 2 CPU cores for Input(256, 1) -> LSTM(64) -> Dense(32), ms per forecast: XLA
# 0.38 / 0.27 / 0.23 / 0.22 at batch 1 / 4 / 16 / 32 against 3.4 / 0.95 / 0.32 / 0.26 for the
# SavedModel; from 48 the SavedModel wins (0.19 vs 0.22 at 48, 0.17 vs 0.22 at 64).
XLA_BUCKETS = (1, 2, 4, 8, 16, 32)
XLA_RTOL = 1e-4  # tolerance relative to the output's scale (max |value|, at least 1)
# How long unloading waits for the compile step in progress (one bucket: 1-15 s on 2 cores for
# the ecg recipe's model, more on a busy machine) before leaving the daemon thread to finish.
CANCEL_WAIT_S = 120.0
# One bucket compiles at a time in the whole process (several models loading at once take
# turns), so a compile never holds more than one core and requests keep the other.
_COMPILE_SLOT = threading.Lock()


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
    """`serving_default` compiled with XLA, batch zero-padded up to a bucket.

    `covers(n)` is true only once `n`'s bucket is compiled and verified (`mark_ready`): callers
    never trigger a compile."""

    def __init__(self, fn: Any, sig: SignatureInfo, buckets: Sequence[int]) -> None:
        import tensorflow as tf

        self.buckets = tuple(buckets)
        self.sig = sig
        self._keys = tuple(sorted(sig.inputs))
        self._ready: frozenset[int] = frozenset()  # replaced whole: readers need no lock
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

    @property
    def ready(self) -> tuple[int, ...]:
        """The buckets compiled and verified so far, ascending."""
        return tuple(sorted(self._ready))

    def mark_ready(self, size: int) -> None:
        """Let requests use bucket `size` (compiled and verified by the caller)."""
        self._ready = self._ready | {size}

    def covers(self, n: int) -> bool:
        """Whether a batch of `n` runs here now: its bucket is compiled and verified."""
        return 1 <= n <= self.buckets[-1] and _bucket(n, self.buckets) in self._ready

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


def batch_size(arrays: Mapping[str, np.ndarray]) -> int | None:
    """The shared dim 0 of every input, or None (a 0-d input, or sizes that differ)."""
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    return sizes.pop() if len(sizes) == 1 else None


def _check_inputs(servable: Any, sig: SignatureInfo, check_batches: Sequence[Mapping[str, Any]],
                  largest: int) -> list[dict[str, np.ndarray]]:
    """The check batches as `predict` would cast them, cut to `largest` rows; those the
    compiled function cannot take (other shapes, empty, failing the signature) are left out."""
    usable = []
    for batch in check_batches:
        try:
            _, arrays = servable.prepare_inputs(SIGNATURE_KEY, batch)
        except ServingError:
            continue
        n = batch_size(arrays)
        if not n or set(arrays) != set(sig.inputs) or any(
                tuple(a.shape[1:]) != tuple(sig.inputs[k].shape[1:]) for k, a in arrays.items()):
            continue
        usable.append({k: v[:largest] for k, v in arrays.items()})
    return usable


def _rows(pool: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """`n` rows of `pool`, repeated as needed."""
    take = np.arange(n) % len(next(iter(pool.values())))
    return {k: v[take] for k, v in pool.items()}


def compile_verified(servable: Any, check_batches: Sequence[Mapping[str, Any]],
                     buckets: Sequence[int] = XLA_BUCKETS,
                     cancelled: threading.Event | None = None) -> str:
    """Compile `servable`'s `serving_default` with XLA bucket by bucket, each checked against the
    SavedModel before it serves; returns the outcome: "adopted" (every bucket live),
    "unsupported" (not a fixed-shape numeric signature), "rejected" (a bucket differs from the
    SavedModel), "failed" (a compile raised) or "cancelled" (the servable is unloading).

    `servable` is a `SavedModelServable` (`signatures`, `function`, `prepare_inputs`,
    `run_savedmodel`, `adopt_xla`, `drop_xla`). Each bucket is checked on the warmup batches that
    fall in it (`check_batches`, the inputs of the warmup records) and on the smallest batch that
    pads up to it, made of warmup rows (a fixed random batch when there are none). The first
    verified bucket adopts the runtime; a later failure drops it again. Every outcome but
    "adopted" leaves the servable on the SavedModel, with a log line saying why.
    """
    name, version = servable.name, servable.version
    sig = servable.signatures.get(SIGNATURE_KEY)
    fn = servable.function(SIGNATURE_KEY)
    if sig is None or fn is None or not XlaPredict.supports(sig):
        log.info("%s v%d: no XLA runtime (serving_default not a fixed-shape numeric signature)",
                 name, version)
        return "unsupported"
    stop = cancelled or threading.Event()
    t0 = time.perf_counter()
    try:
        xla = XlaPredict(fn, sig, buckets)
        checks = _check_inputs(servable, sig, check_batches, xla.buckets[-1])
        if checks:
            pool = {k: np.concatenate([c[k] for c in checks])[: xla.buckets[-1]]
                    for k in sig.inputs}
        else:  # no warmup batch to check against: a fixed random one
            rng = np.random.default_rng(0)
            pool = {k: rng.standard_normal((3, *i.shape[1:])).astype(numpy_dtype(i.dtype))
                    for k, i in sig.inputs.items()}
        smallest = 1
        for size in xla.buckets:
            batches = [c for c in checks if _bucket(batch_size(c), xla.buckets) == size]
            while not _COMPILE_SLOT.acquire(timeout=0.1):  # another model's bucket compiles
                if stop.is_set():
                    return _cancelled(servable)
            try:
                for arrays in [*batches, _rows(pool, smallest)]:
                    if stop.is_set():
                        return _cancelled(servable)
                    why = _outputs_match(xla(arrays),
                                         servable.run_savedmodel(SIGNATURE_KEY, arrays))
                    if why is not None:
                        servable.drop_xla()
                        log.warning("%s v%d: XLA runtime rejected, %s; serving the SavedModel "
                                    "(batch of %d, bucket %d)", name, version, why,
                                    batch_size(arrays), size)
                        return "rejected"
            finally:
                _COMPILE_SLOT.release()
            xla.mark_ready(size)
            if size == xla.buckets[0] and not servable.adopt_xla(xla):
                return _cancelled(servable)
            log.debug("%s v%d: XLA bucket %d live after %.2f s", name, version, size,
                      time.perf_counter() - t0)
            smallest = size + 1
    except Exception as err:  # any compile failure means: keep the SavedModel
        servable.drop_xla()
        log.warning("%s v%d: XLA runtime failed (%s: %s); serving the SavedModel",
                    name, version, type(err).__name__, str(err)[:300])
        return "failed"
    log.info("%s v%d: XLA runtime verified in %.2f s (buckets %s)", name, version,
             time.perf_counter() - t0, list(xla.buckets))
    return "adopted"


def _cancelled(servable: Any) -> str:
    servable.drop_xla()
    log.info("%s v%d: XLA compile cancelled (unloading)", servable.name, servable.version)
    return "cancelled"


class XlaBackground:
    """`compile_verified` for one servable in a daemon thread: requests keep the SavedModel
    until a bucket is verified, and never wait for a compile.

    `outcome` is "pending" until the job ends (then `compile_verified`'s outcome, or "failed" if
    something unexpected escaped it); `wait` blocks until then; `cancel` stops it between two
    steps and joins the thread (called when the servable is closed)."""

    def __init__(self, servable: Any, check_batches: Sequence[Mapping[str, Any]],
                 buckets: Sequence[int] = XLA_BUCKETS) -> None:
        self.name, self.version = servable.name, servable.version
        self.outcome = "pending"
        self._servable: Any = servable
        self._checks = list(check_batches)
        self._buckets = tuple(buckets)
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"xla-compile-{self.name}-{self.version}")

    def start(self) -> XlaBackground:
        log.info("%s v%d: compiling the XLA runtime in the background (buckets %s); the "
                 "SavedModel serves meanwhile", self.name, self.version, list(self._buckets))
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (True) or `timeout` passed (False)."""
        return self._done.wait(timeout)

    def cancel(self, timeout: float = CANCEL_WAIT_S) -> bool:
        """Stop before the next step and wait up to `timeout` for the step in progress; True
        when the thread has ended."""
        self._cancel.set()
        if self._thread.ident is None:  # never started
            self.outcome, self._servable = "cancelled", None
            self._done.set()
            return True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s v%d: XLA compile still running %.0f s after unload; left to end in "
                        "its daemon thread", self.name, self.version, timeout)
            return False
        return True

    def _run(self) -> None:
        try:
            self.outcome = compile_verified(self._servable, self._checks, self._buckets,
                                            self._cancel)
        except BaseException:  # never let the thread die silently
            self.outcome = "failed"
            log.exception("%s v%d: XLA background compile crashed; serving the SavedModel",
                          self.name, self.version)
            try:
                self._servable.drop_xla()
            except Exception:
                pass
        finally:
            self._servable = None  # the thread must not keep an unloaded model alive
            self._checks = []
            self._done.set()
