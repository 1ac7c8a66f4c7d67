"""NaN-safe rate conversion: one channel from its native rate to the dataset's `fs`.

Pure numpy/scipy, no I/O. Polyphase filtering (`scipy.signal.resample_poly`) runs on each run of
finite samples separately, so a gap never leaks into its neighbours: an output sample takes a value
only when its time falls inside a finite run, and is NaN otherwise. Output sample `k` sits at
`k / fs_out` seconds, the clock of input sample `i` at `i / fs_in`, so gaps stay where they were.

The rate ratio `fs_out / fs_in` becomes `up / down` with the smallest denominator whose relative
error is at most `RATIO_TOLERANCE` (1e-6: under one sample of drift per million samples).

Speed (ingest resamples every channel of every record): the anti-aliasing filter is designed once
per `(up, down)` and cached (the very filter `resample_poly` would design), a gapless channel is
filtered in one call with no mask and no copy, and equal rates skip filtering altogether.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

RATIO_TOLERANCE = 1e-6
MAX_DENOMINATOR = 100_000


@functools.lru_cache(maxsize=256)
def rational_ratio(fs_out: float, fs_in: float) -> tuple[int, int]:
    """`(up, down)` with `up / down ~= fs_out / fs_in` within `RATIO_TOLERANCE`, smallest terms."""
    if not fs_in > 0 or not fs_out > 0:
        raise ValueError(f"sampling rates must be > 0, got fs_in={fs_in}, fs_out={fs_out}")
    ratio = fs_out / fs_in
    frac = Fraction(ratio)
    for limit in (10, 100, 1_000, 10_000, MAX_DENOMINATOR):
        frac = Fraction(ratio).limit_denominator(limit)
        if frac > 0 and abs(float(frac) / ratio - 1.0) <= RATIO_TOLERANCE:
            break
    if frac == 0:
        raise ValueError(f"rate ratio {fs_out}/{fs_in} is too small to represent")
    return frac.numerator, frac.denominator


@functools.lru_cache(maxsize=64)
def lowpass_filter(up: int, down: int) -> np.ndarray:
    """The FIR filter `resample_poly(x, up, down)` designs for float64 `x` (read-only, cached).

    Kaiser window (beta 5), cutoff `1 / max(up, down)` of Nyquist, `20 * max(up, down) + 1` taps.
    """
    from scipy.signal import firwin

    max_rate = max(up, down)
    h = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)
    return h


def finite_runs(x: np.ndarray) -> np.ndarray:
    """`(n_runs, 2)` int array of `[start, stop)` index pairs of the finite runs of 1-D `x`."""
    ok = np.isfinite(x).astype(np.int8)
    edges = np.diff(np.concatenate(([0], ok, [0])))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def output_length(n_in: int, up: int, down: int) -> int:
    """Samples of the output grid that start inside an input of `n_in` samples."""
    return -(-n_in * up // down)  # ceil without float rounding


def resample_channel(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample 1-D `x` (native units, NaN for gaps) from `fs_in` to `fs_out` Hz; float64 out.

    Output length is `ceil(len(x) * up / down)`. Each finite run `[a, b)` fills the output samples
    whose times lie in `[a, b)` input samples; everything else is NaN. A run is padded on the left
    with its first value to the nearest multiple of `down`, so its output lands exactly on the
    global grid; the padded part is thrown away.
    """
    from scipy.signal import resample_poly

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample_channel takes a 1-D array, got shape {x.shape}")
    up, down = rational_ratio(fs_out, fs_in)
    if up == down:
        return x.copy()
    h = lowpass_filter(up, down)
    # A finite sum means every sample is finite (NaN and inf propagate): the channel is one run
    # whose output is the whole output, with no mask to build and nothing to copy.
    if len(x) > 1 and np.isfinite(np.add.reduce(x)):
        return resample_poly(x, up, down, window=h, padtype="line")
    out = np.full(output_length(len(x), up, down), np.nan)
    for a, b in finite_runs(x):
        a0 = (a // down) * down
        run = x[a:b] if a == a0 else np.concatenate((np.full(a - a0, x[a]), x[a:b]))
        k0 = a0 * up // down
        k_start = -(-a * up // down)
        k_stop = -(-b * up // down)
        if k_stop <= k_start:
            continue  # a run shorter than one output period that no output time falls into
        if len(run) == 1:
            y = np.repeat(run, output_length(1, up, down))
        else:
            # `window=h` is the filter resample_poly would design itself (it copies it, then scales)
            y = resample_poly(run, up, down, window=h, padtype="line")
        out[k_start:k_stop] = y[k_start - k0 : k_stop - k0]
    return out
