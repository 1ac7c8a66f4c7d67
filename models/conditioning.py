"""Signal conditioning, the one home for ingest and for the server's `:forecast` route alike.

A model sees what ingest produced, so `:forecast` must condition a raw signal the way ingest did:
the same rate ratio, the same NaN-safe resampling, the same gap filling. Both sides call these
functions. Pure numpy/scipy, no I/O, no TensorFlow.

Rate ratio: `fs_out / fs_in` becomes `up / down` with the smallest denominator whose relative
error is at most `RATIO_TOLERANCE` (1e-6: under one sample of drift per million samples).

Resampling (`resample_channel`): polyphase filtering (`scipy.signal.resample_poly`) runs on each
run of finite samples separately, so a gap never leaks into its neighbours: an output sample takes
a value only when its time falls inside a finite run, and is NaN otherwise. Output sample `k` sits
at `k / fs_out` seconds, the clock of input sample `i` at `i / fs_in`, so gaps stay where they
were. Ingest keeps `resampled_length` samples of it (the input's duration, rounded).
`resample_tail` computes only the end of that output (what a forecast window needs) from the end
of the input, on the same clock, so its numbers are the whole signal's.

Gap filling: a NaN run with data on both sides is a straight line between its neighbours
(`col[a - 1] + t * (col[b] - col[a - 1])`). Ingest (`fill_short_gaps`) fills runs of at most
`max_samples` and leaves longer runs and edge runs as NaN: the window cutter then skips or masks
them, so a model never trains on an edge. The server (`fill_gaps`) must hand the model a finite
window, so it fills every run up to `max_gap_s`, holds the nearest value over an edge run (the
only choice short of refusing; ingest yields no training window there to disagree with), and
raises `GapTooLongError` naming the channel and the gap for anything longer. `condition_tail`
is the whole server-side recipe for one channel: resample the tail, fill, keep the window.

Speed (ingest resamples every channel of every record): the anti-aliasing filter is designed once
per `(up, down)` and cached (the very filter `resample_poly` would design), a gapless channel is
filtered in one call with no mask and no copy, and equal rates skip filtering altogether.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

RATIO_TOLERANCE = 1e-6
MAX_DENOMINATOR = 100_000
FILTER_HALF_TAPS = 10  # resample_poly's filter: 10 * max(up, down) taps each side of the centre


class GapTooLongError(ValueError):
    """A gap in a channel longer than the caller allows filling (or a channel with no data)."""

    def __init__(self, channel: str, n_samples: int, start: int, fs: float,
                 max_gap_s: float) -> None:
        self.channel, self.n_samples, self.start = channel, n_samples, start
        self.gap_s, self.start_s, self.max_gap_s = n_samples / fs, start / fs, max_gap_s
        super().__init__(
            f"channel {channel!r} has a gap of {self.gap_s:.3f} s ({n_samples} samples) starting "
            f"{self.start_s:.3f} s into the part of the signal used; gaps up to max_gap_s="
            f"{max_gap_s:g} s are filled"
        )


# --- rate ratio and resampling -------------------------------------------------------------


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
    h = firwin(2 * FILTER_HALF_TAPS * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
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


def resampled_length(n_in: int, fs_in: float, fs_out: float) -> int:
    """Samples ingest keeps of a channel of `n_in` samples resampled to `fs_out`: its duration
    at the new rate, rounded (`resample_channel` may give one more, starting in the last input
    period)."""
    return int(round(n_in * fs_out / fs_in))


def resample_channel(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample 1-D `x` (native units, NaN for gaps) from `fs_in` to `fs_out` Hz; float64 out.

    Output length is `ceil(len(x) * up / down)`. Each finite run `[a, b)` fills the output samples
    whose times lie in `[a, b)` input samples; everything else is NaN. A run is padded on the left
    with its first value to the nearest multiple of `down`, so its output lands exactly on the
    global grid; the padded part is thrown away.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample_channel takes a 1-D array, got shape {x.shape}")
    up, down = rational_ratio(fs_out, fs_in)
    if up == down:
        return x.copy()
    return _resample_from(x, up, down, 0)


def resample_tail(x: np.ndarray, fs_in: float, fs_out: float, n_out: int) -> np.ndarray:
    """The last `n_out` samples of `resample_channel(x, fs_in, fs_out)[:resampled_length]`,
    computed from the end of `x` only; float64, fewer when the signal is shorter.

    Filtering starts on a multiple of `down` input samples (so the output grid is `x`'s own grid)
    far enough back that the filter's start-up transient ends before the samples returned, and
    the run reaching the end is extended past it along the same line `resample_channel` extends
    it (`padtype="line"`: through the run's first and last samples): the numbers are the whole
    signal's, at a cost that does not grow with the signal's length.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample_tail takes a 1-D array, got shape {x.shape}")
    if isinstance(n_out, bool) or not isinstance(n_out, int) or n_out < 1:
        raise ValueError(f"n_out must be an integer >= 1, got {n_out!r}")
    up, down = rational_ratio(fs_out, fs_in)
    end = min(resampled_length(len(x), fs_in, fs_out), output_length(len(x), up, down))
    first = max(end - n_out, 0)  # the first output sample wanted
    if up == down:
        return x[first:end].copy()
    cut = max((first * down // up - _reach(up, down)) // down, 0) * down  # input index
    y = _resample_from(x, up, down, cut)  # output samples from cut * up / down on
    k0 = cut * up // down  # exact: cut is a multiple of down
    return y[first - k0 : end - k0]


def _reach(up: int, down: int) -> int:
    """Input samples the filter reaches on either side of an output sample (rounded up, +1)."""
    return -(-FILTER_HALF_TAPS * max(up, down) // up) + 1


def _resample_from(x: np.ndarray, up: int, down: int, cut: int) -> np.ndarray:
    """`resample_channel`'s output from sample `cut * up / down` on (`cut` a multiple of
    `down`), each finite run filtered only from `cut` on; the first `_reach` input samples' worth
    of outputs after a cut run's new start are transient (callers drop them)."""
    from scipy.signal import resample_poly

    h = lowpass_filter(up, down)
    # A finite sum means every sample is finite (NaN and inf propagate): the channel is one run
    # whose output is the whole output, with no mask to build and nothing to copy.
    if len(x) > 1 and np.isfinite(np.add.reduce(x)):
        if cut == 0:
            return resample_poly(x, up, down, window=h, padtype="line")
        return _resample_run(x, up, down, h, cut)
    k_cut = cut * up // down
    out = np.full(output_length(len(x), up, down) - k_cut, np.nan)
    for a, b in finite_runs(x):
        if b <= cut:
            continue
        a0 = (a // down) * down
        run = x[a:b] if a == a0 else np.concatenate((np.full(a - a0, x[a]), x[a:b]))
        skip = max(cut - a0, 0)  # a multiple of down: both are
        k0 = (a0 + skip) * up // down
        k_start = max(-(-a * up // down), k_cut)
        k_stop = -(-b * up // down)
        if k_stop <= k_start:
            continue  # a run shorter than one output period that no output time falls into
        if len(run) == 1:
            y = np.repeat(run, output_length(1, up, down))
        else:
            # `window=h` is the filter resample_poly would design itself (it copies it, then scales)
            y = _resample_run(run, up, down, h, skip)
        out[k_start - k_cut : k_stop - k_cut] = y[k_start - k0 : k_stop - k0]
    return out


def _resample_run(run: np.ndarray, up: int, down: int, h: np.ndarray, skip: int) -> np.ndarray:
    """`resample_poly(run, up, down, window=h, padtype="line")[skip * up // down:]`, filtering
    only `run[skip:]` (`skip` a multiple of `down`); the first outputs are transient when
    `skip > 0`.

    `padtype="line"` extends a run past its end along the line through its first and last
    samples; `run[skip:]` gets that very extension appended (as many samples as the filter
    reaches), so its last outputs are the whole run's.
    """
    from scipy.signal import resample_poly

    if skip == 0:
        return resample_poly(run, up, down, window=h, padtype="line")
    n = len(run)
    slope = (run[-1] - run[0]) / (n - 1)
    extension = run[-1] + slope * np.arange(1, _reach(up, down) + 1)
    y = resample_poly(np.concatenate((run[skip:], extension)), up, down, window=h, padtype="line")
    return y[: output_length(n - skip, up, down)]


# --- gap filling --------------------------------------------------------------------------


def nan_runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(starts, stops)`: the `[start, stop)` index pairs of the NaN runs of 1-D `x`."""
    missing = np.isnan(x).view(np.int8)
    edges = np.diff(np.concatenate(([0], missing, [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _fill_run(col: np.ndarray, a: int, b: int) -> None:
    """Fill the NaN run `[a, b)` of `col` in place: a line between its neighbours, or the one
    neighbour held over an edge run."""
    if a == 0:
        col[a:b] = col[b]
    elif b == len(col):
        col[a:b] = col[a - 1]
    else:
        t = np.arange(1, b - a + 1, dtype=np.float64) / (b - a + 1)
        col[a:b] = col[a - 1] + t * (col[b] - col[a - 1])


def fill_short_gaps(signal: np.ndarray, max_samples: int) -> int:
    """Linearly interpolate, in place, each channel's NaN runs of at most `max_samples` that
    have data on both sides (edges and longer gaps stay NaN). Returns the samples filled.

    `signal` is `(time, channels)`. This is ingest's rule, the one models are trained on.
    """
    filled = 0
    if max_samples < 1:
        return 0
    for j in range(signal.shape[1]):
        col = signal[:, j]
        if not np.isnan(col).any():
            continue
        starts, stops = nan_runs(col)
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            if a == 0 or b == len(col) or b - a > max_samples:
                continue
            _fill_run(col, a, b)
            filled += b - a
    return filled


def fill_gaps(samples: np.ndarray, fs: float, max_gap_s: float, channel: str) -> np.ndarray:
    """Every NaN run of 1-D `samples` (at `fs` Hz) filled: interior runs as ingest fills them,
    edge runs held at the nearest value. `samples` itself when it has no NaN, else a copy.

    Raises `GapTooLongError` naming `channel`, the longest gap and where it starts when that gap
    lasts more than `max_gap_s` seconds, or when the channel has no data at all.
    """
    missing = np.isnan(samples)
    if not missing.any():
        return samples
    starts, stops = nan_runs(samples)
    lengths = stops - starts
    worst = int(np.argmax(lengths))
    if lengths[worst] / fs > max_gap_s or missing.all():
        raise GapTooLongError(channel, int(lengths[worst]), int(starts[worst]), fs, max_gap_s)
    filled = samples.copy()
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        _fill_run(filled, a, b)
    return filled


def condition_tail(samples: np.ndarray, fs_in: float, fs_out: float, n_out: int,
                   max_gap_s: float, channel: str, margin_s: float = 1.0) -> np.ndarray:
    """The last `n_out` samples at `fs_out` of one raw channel, as ingest would have made them.

    `samples` is 1-D in physical units at `fs_in` Hz, NaN for missing. Resamples the end of it
    (`resample_tail`: `n_out` samples plus `margin_s` seconds before them, so a gap just before
    the window has a neighbour to be filled from), fills the gaps there (`fill_gaps`: raises
    `GapTooLongError` for one longer than `max_gap_s`), and returns float64 `(n_out,)`. A signal
    a rounding short of `n_out` samples has its first sample repeated at the front.
    """
    margin = math.ceil(margin_s * fs_out)
    tail = resample_tail(samples, fs_in, fs_out, n_out + margin)
    window = fill_gaps(tail, fs_out, max_gap_s, channel)[-n_out:]
    if len(window) < n_out:
        window = np.concatenate([np.full(n_out - len(window), window[0]), window])
    return window
