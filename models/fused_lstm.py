"""pulsecast's LSTM layer: Keras' LSTM, trained on CPU through a fused native kernel.

`LSTM` is `keras.layers.LSTM` with the same weights, config and maths; only its training pass on
TensorFlow's CPU changes. There, `call(..., training=True)` runs the whole sequence in one native
op (`models/fused_lstm_op.cc`: one sgemm per step through numpy's OpenBLAS, the gate arithmetic
fused, the batch cut into one shard per intra-op thread) with a registered native gradient, instead
of Keras' per-step graph of small ops. Why: on CPU a Keras LSTM step costs more in op dispatch
than in arithmetic (docs/performance.md). Everything else is Keras' own path, unchanged:
inference (`training=False`, so every exported SavedModel holds only stock TensorFlow ops and runs
on TF Serving), JAX and PyTorch, a visible GPU (cuDNN), masks, `go_backwards`, recurrent dropout,
non-default activations and non-float32 compute.

The op is compiled on first use with the C++ compiler (`$CXX`, default `g++`) against
`tf.sysconfig`'s flags and numpy's bundled OpenBLAS, into a cache folder keyed by everything the
binary depends on (source, TensorFlow version, flags, OpenBLAS path, CPU model):

    $PULSECAST_NATIVE_CACHE  or  $XDG_CACHE_HOME/pulsecast/native  or  ~/.cache/pulsecast/native
        fused_lstm-<key>.so        written to a temporary name, then renamed

`make install` builds it ahead (`python -m models.fused_lstm`). `PULSECAST_FUSED_LSTM` chooses:
`auto` (default: fused where eligible, Keras' path with one warning if the op cannot be built),
`off` (always Keras' path), `require` (an error instead of the fallback: for tests and benches).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import keras

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_lstm_op.cc")
ENV_MODE = "PULSECAST_FUSED_LSTM"
ENV_CACHE = "PULSECAST_NATIVE_CACHE"
MODES = ("auto", "off", "require")
# -ffast-math lets GCC call glibc's vector expf/tanhf in the gate loops (libmvec needs it). It is
# given to the compile step only: on a link line it adds crtfastmath.o, which flushes denormals to
# zero in the whole process when the library loads. -mno-avx512fp16: on CPUs with AVX512-FP16
# (Intel Sapphire Rapids and later) -march=native turns on Eigen's FP16 packet code, which does not
# compile with the Eigen that TensorFlow 2.21 ships ("expected initializer before '<' token").
# -mprefer-vector-width=512: on AVX-512 CPUs GCC otherwise keeps to 256-bit vectors (and libmvec's
# 8-lane tanhf); 16 lanes took the forward pass from 52 to 36 ms on a Xeon (docs/performance.md).
# Without AVX-512 in -march=native it changes nothing.
COMPILE_FLAGS = ("-O3", "-march=native", "-mno-avx512fp16", "-mprefer-vector-width=512",
                 "-ffast-math", "-fopenmp-simd", "-fPIC")


class FusedLSTMUnavailable(RuntimeError):
    """The fused op could not be built or loaded (no compiler, no OpenBLAS, a build error)."""


def mode() -> str:
    """`PULSECAST_FUSED_LSTM`: auto | off | require."""
    value = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV_MODE} must be one of {', '.join(MODES)}, got {value!r}")
    return value


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pulsecast" / "native"


def _openblas_library() -> Path:
    """numpy's bundled OpenBLAS (ILP64, `scipy_` symbol prefix), which the op links against."""
    import numpy as np

    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    found = sorted(libs.glob("libscipy_openblas64_*.so"))
    if not found:
        raise FusedLSTMUnavailable(f"numpy's bundled OpenBLAS not found in {libs}")
    return found[0]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str:
    return os.environ.get("CXX", "g++")


def _build_commands(output: Path) -> list[list[str]]:
    """Compile (with -ffast-math), then link (without it) into `output`."""
    import tensorflow as tf

    cxx = _compiler()
    blas = _openblas_library()
    obj = output.with_suffix(".o")
    return [
        [cxx, *COMPILE_FLAGS, *tf.sysconfig.get_compile_flags(), "-c", str(SOURCE), "-o", str(obj)],
        [cxx, "-shared", str(obj), "-o", str(output), *tf.sysconfig.get_link_flags(), str(blas),
         f"-Wl,-rpath,{blas.parent}"],
    ]


def library_path() -> Path:
    """Where the op for this source, TensorFlow, OpenBLAS and CPU lives (built or not)."""
    import tensorflow as tf

    key = hashlib.sha256()
    commands = " ".join(" ".join(c) for c in _build_commands(Path("x")))
    for part in (SOURCE.read_bytes(), tf.__version__.encode(), commands.encode(),
                 _cpu_model().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"fused_lstm-{key.hexdigest()[:16]}.so"


def build_library(force: bool = False) -> Path:
    """Compile the op into the cache (atomically) unless it is there; returns the .so path."""
    target = library_path()
    if target.exists() and not force:
        return target
    if shutil.which(_compiler()) is None:
        raise FusedLSTMUnavailable(f"C++ compiler {_compiler()!r} not found (set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=target.stem + ".", dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        for command in _build_commands(staged):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise FusedLSTMUnavailable(
                    f"building {SOURCE.name} failed (exit {done.returncode}):\n"
                    f"{done.stderr[-4000:]}")
        os.replace(staged, target)
    log.info("built the fused LSTM op: %s", target)
    return target


@functools.cache
def load_ops():
    """The loaded op module (`pulsecast_lstm`, `pulsecast_lstm_grad`), building it if needed.

    Raises FusedLSTMUnavailable (cached: one build attempt per process)."""
    import tensorflow as tf

    path = build_library()
    try:
        ops = tf.load_op_library(str(path))
    except (tf.errors.NotFoundError, OSError) as err:
        raise FusedLSTMUnavailable(f"loading {path} failed: {err}") from err

    @tf.RegisterGradient("PulsecastLstm")
    def _gradient(op, d_h_seq, d_c_last, *_workspace):
        x, h0, c0, kernel, recurrent, _bias = op.inputs
        h_seq, _c_last, gates, c_seq, h_prev = op.outputs
        if d_h_seq is None:
            d_h_seq = tf.zeros_like(h_seq)
        if d_c_last is None:
            d_c_last = tf.zeros_like(c0)
        return ops.pulsecast_lstm_grad(x, c0, kernel, recurrent, gates, c_seq, h_prev, d_h_seq,
                                       d_c_last)

    return ops


def _expected_fallback() -> str | None:
    """Why Keras' own path is the right one here (no warning needed), or None."""
    if keras.backend.backend() != "tensorflow":
        return f"Keras backend is {keras.backend.backend()}, not tensorflow"
    if mode() == "off":
        return f"{ENV_MODE}=off"
    if _gpu_visible():
        return "a GPU is visible (Keras uses cuDNN)"
    return None


def unavailable_reason() -> str | None:
    """None when the fused op is usable in this process, else why not."""
    reason = _expected_fallback()
    if reason is None:
        try:
            load_ops()
        except FusedLSTMUnavailable as err:
            reason = str(err)
    return reason


@functools.cache
def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@functools.cache
def _warn_fallback(reason: str) -> None:
    log.warning("fused LSTM op unavailable, training with Keras' LSTM: %s", reason)


def fused_lstm(x, h0, c0, kernel, recurrent_kernel, bias):
    """Run the fused op: x (B, T, D), h0/c0 (B, H) -> h_seq (B, T, H), c_last (B, H)."""
    h_seq, c_last, _gates, _c_seq, _h_prev = load_ops().pulsecast_lstm(
        x, h0, c0, kernel, recurrent_kernel, bias)
    return h_seq, c_last


@keras.saving.register_keras_serializable(package="pulsecast")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` whose CPU training pass on TensorFlow runs the fused op (module doc)."""

    def _fused_eligible(self, mask) -> bool:
        cell = self.cell
        if (mask is not None or self.go_backwards or self.unroll or cell.recurrent_dropout
                or not cell.use_bias or self.compute_dtype != "float32"
                or cell.activation is not keras.activations.tanh
                or cell.recurrent_activation is not keras.activations.sigmoid):
            return False
        reason = _expected_fallback()
        if reason is None:
            try:
                load_ops()
                return True
            except FusedLSTMUnavailable as err:
                reason = str(err)
                if mode() == "auto":
                    _warn_fallback(reason)
        if mode() == "require":
            raise FusedLSTMUnavailable(f"{ENV_MODE}=require but {reason}")
        return False

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not training or not self._fused_eligible(mask):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if self.dropout:  # Keras' input dropout: one mask per sequence, the same at every step
            dp_mask = self.cell.get_dropout_mask(sequences[:, 0, :])
            sequences = sequences * keras.ops.expand_dims(dp_mask, axis=1)
        cell = self.cell
        h_seq, c_last = fused_lstm(sequences, initial_state[0], initial_state[1], cell.kernel.value,
                                   cell.recurrent_kernel.value, cell.bias.value)
        last = h_seq[:, -1, :]
        outputs = h_seq if self.return_sequences else keras.ops.expand_dims(last, axis=1)
        return last, outputs, [last, c_last]


def main(argv: list[str] | None = None) -> int:
    """`python -m models.fused_lstm [--force]`: build the op now and say where it is."""
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = build_library(force="--force" in argv)
        load_ops()
    except FusedLSTMUnavailable as err:
        print(f"fused LSTM op unavailable (training falls back to Keras' LSTM): {err}")
        return 0 if mode() != "require" else 1
    print(f"fused LSTM op: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
