"""Resampling a channel to a model's rate, NaN-safe, exactly as ingest does, or at bounded cost
for the server's `:forecast` (`models.conditioning` conditions a channel with it).

Pure numpy/scipy, no I/O, no TensorFlow.

Rate ratio: `fs_out / fs_in` becomes `up / down` with the smallest denominator whose relative
error is at most `RATIO_TOLERANCE` (1e-6: under one sample of drift per million samples).

Resampling (`resample_channel`): polyphase filtering (`scipy.signal.resample_poly`) runs on each
run of finite samples separately, so a gap never leaks into its neighbours: an output sample takes
a value only when its time falls inside a finite run, and is NaN otherwise. Output sample `k` sits
at `k / fs_out` seconds, the clock of input sample `i` at `i / fs_in`, so gaps stay where they
were. Ingest keeps `resampled_length` samples of it (the input's duration, rounded).
`resample_tail` computes only the end of that output (what a forecast window needs) from the end
of the input, on the same clock, so its numbers are the whole signal's.

Bounded cost (`resample_tail(..., max_term=N)`, the server's `:forecast` only; ingest never bounds
it): the filter has `20 * max(up, down) + 1` taps, and two arbitrary rates can need huge terms
(5.813946611267183 Hz to 125 Hz is 2,113,517 / 98,303 within 1e-6: 42 million taps, seconds and
gigabytes). A ratio whose terms fit `N` is resampled exactly as above. Otherwise the tail is
computed on an approximate grid: `p / q`, the fraction closest to `up / down` with both terms at
most `N`, scaled to `P / Q = m*p / m*q` with `m = N // max(p, q)` (at most `20 * N + 1` taps, the
same Kaiser-windowed sinc sampled at `1 / P` input samples), output `j` at input sample
`(j * Q + shift) / P`. `shift` puts the grid point nearest the exact time of the middle sample
returned there (within `1 / (2P)` input samples), so the error of a returned sample's time is that
rounding plus its distance from the middle times the spacing's relative error (`p/q` against
`up/down`): it grows across the samples returned, not across the whole signal. When the largest
exceeds `MAX_DRIFT` output samples, `RatioTooCoarseError` is raised instead. Filtering is the
exact method's (runs apart, each padded on the left to a multiple of the exact `down`,
`padtype="line"`, the last run extended along its whole line), so the numbers differ only by
those fractions of a sample in time and by the filter's finer sampling: at `N = 5000`, a smooth
signal's tail (peak 1.3) agrees with the exact method's within 3e-4 over many rates, within 1e-3
as `tests/test_conditioning.py` asserts.

Speed (ingest resamples every channel of every record): the anti-aliasing filter is designed once
per `max(up, down)` (the very filter `resample_poly` would design) and kept in `FILTER_CACHE`, a
least-recently-used cache bounded in bytes (`FILTER_CACHE_BYTES`), a gapless channel is filtered
in one call with no mask and no copy, and equal rates skip filtering altogether.
"""


from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

RATIO_TOLERANCE = 1e-6
MAX_DENOMINATOR = 100_000
FILTER_HALF_TAPS = 10  # resample_poly's filter: 10 * max(up, down) taps each side of the centre
# Filters kept between calls: ingest's usual rates need a few KB (360 -> 125 Hz: 1,441 taps) to
# a few MB (62.4725 -> 125 Hz: 318,181 taps, 2.5 MB), a denominator of 100,000 16 MB; a
# `:forecast` filter bounded by `max_term=5000` is 800 KB. 64 MiB keeps a cohort's and dozens of
# those, where 64 entries of unbounded size could hold gigabytes.
FILTER_CACHE_BYTES = 64 * 2**20
# How far (in output samples) a bounded `resample_tail` may put a returned sample from its exact
# time. A shift of 0.05 samples moves a signal band-limited to f Hz by at most 2 pi f 0.05 / fs_out
# of its amplitude: 0.3 % for a 1.2 Hz heartbeat at 125 Hz (pi * 0.05 at the Nyquist limit).
MAX_DRIFT = 0.05


class RatioTooCoarseError(ValueError):
    """No ratio with terms up to `max_term` puts the samples wanted within `MAX_DRIFT` output
    samples of their exact times. `grid` is the closest ratio's (None when none is positive)."""

    def __init__(self, fs_in: float, fs_out: float, max_term: int, n_out: int,
                 grid: ApproximateGrid | None) -> None:
        self.fs_in, self.fs_out, self.max_term, self.n_out = fs_in, fs_out, max_term, n_out
        self.drift = math.inf if grid is None else grid.drift
        ratio = ("no positive ratio" if grid is None
                 else f"the closest ratio, {grid.closest[0]}/{grid.closest[1]},")
        super().__init__(
            f"resampling {fs_in!r} Hz to {fs_out!r} Hz with ratio terms up to {max_term}: "
            f"{ratio} puts {n_out} samples up to {self.drift:.3g} samples off their times, "
            f"more than {MAX_DRIFT:g}"
        )


class FilterCache:
    """Filters by key, least recently used dropped first, bounded by their total bytes.

    Thread-safe (the server conditions requests on several threads). A filter bigger than the
    whole bound is handed back but not kept; a design runs outside the lock, so a big one holds
    up no other caller (two callers may then design the same filter once each)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._filters: OrderedDict[int, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes of the filters kept now (at most `max_bytes`)."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._filters)

    def get(self, key: int, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The filter kept under `key`, else `make()`, kept when it fits the bound."""
        with self._lock:
            h = self._filters.get(key)
            if h is not None:
                self._filters.move_to_end(key)
                return h
        h = make()
        if h.nbytes > self.max_bytes:
            return h
        with self._lock:
            if key in self._filters:  # another thread designed it meanwhile
                return self._filters[key]
            self._filters[key] = h
            self._nbytes += h.nbytes
            while self._nbytes > self.max_bytes:
                _, dropped = self._filters.popitem(last=False)
                self._nbytes -= dropped.nbytes
        return h


FILTER_CACHE = FilterCache(FILTER_CACHE_BYTES)


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


def lowpass_filter(up: int, down: int) -> np.ndarray:
    """The FIR filter `resample_poly(x, up, down)` designs for float64 `x` (read-only, cached in
    `FILTER_CACHE` by `max(up, down)`, all it depends on).

    Kaiser window (beta 5), cutoff `1 / max(up, down)` of Nyquist, `20 * max(up, down) + 1` taps.
    """
    max_rate = max(up, down)
    return FILTER_CACHE.get(max_rate, functools.partial(_design_lowpass, max_rate))


def _design_lowpass(max_rate: int) -> np.ndarray:
    """`lowpass_filter`'s design, uncached (about 20 ms for 100,001 taps)."""
    from scipy.signal import firwin

    h = firwin(2 * FILTER_HALF_TAPS * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)
    return h


def finite_runs(x: np.ndarray) -> np.ndarray:
    """`(n_runs, 2)` int array of `[start, stop)` index pairs of the finite runs of 1-D `x`."""
    ok = np.isfinite(x).astype(np.int8)
    edges = np.diff(np.concatenate(([0], ok, [0])))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def output_length(n_in: int, up: int, down: int, shift: int = 0) -> int:
    """Samples of the output grid that start inside an input of `n_in` samples (output `k` at
    input sample `(k * down + shift) / up`, `0 <= shift < down`)."""
    return -(-(n_in * up - shift) // down)  # ceil without float rounding


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


def resample_tail(x: np.ndarray, fs_in: float, fs_out: float, n_out: int,
                  max_term: int | None = None) -> np.ndarray:
    """The last `n_out` samples of `resample_channel(x, fs_in, fs_out)[:resampled_length]`,
    computed from the end of `x` only; float64, fewer when the signal is shorter.

    Filtering starts on a multiple of `down` input samples (so the output grid is `x`'s own grid)
    far enough back that the filter's start-up transient ends before the samples returned, and
    the run reaching the end is extended past it along the same line `resample_channel` extends
    it (`padtype="line"`: through the run's first and last samples): the numbers are the whole
    signal's, at a cost that does not grow with the signal's length.

    With `max_term`, a ratio whose terms exceed it is resampled on the approximate grid the
    module docstring describes (cost bounded by `max_term`), or `RatioTooCoarseError` is raised
    when that grid strays more than `MAX_DRIFT` output samples over the samples returned.
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
    if max_term is not None and max(up, down) > max_term:
        grid = approximate_grid(up, down, first, end, max_term)
        if grid is None or grid.drift > MAX_DRIFT:
            raise RatioTooCoarseError(fs_in, fs_out, max_term, end - first, grid)
        return _resample_on_grid(x, grid, end - first)
    cut = max((first * down // up - _reach(up, down)) // down, 0) * down  # input index
    y = _resample_from(x, up, down, cut)  # output samples from cut * up / down on
    k0 = cut * up // down  # exact: cut is a multiple of down
    return y[first - k0 : end - k0]


@dataclass(frozen=True)
class ApproximateGrid:
    """Where a bounded `resample_tail` puts its samples: output `j` at input sample
    `(j * down + shift) / up`, the wanted samples from `j = first` on (`first` may be -1: the
    first wanted sample then lies a rounding before the signal, and is not returned)."""

    up: int  # m * p: terms of `closest` scaled to `max_term`, for the finest placement
    down: int  # m * q
    shift: int  # 0 <= shift < down, in 1 / up input samples
    first: int
    closest: tuple[int, int]  # (p, q): the fraction closest to the exact ratio, lowest terms
    drift: float  # the largest distance of a wanted sample from its exact time, output samples
    period: int  # the exact ratio's down: runs are padded to its multiples, as exact ones are


def approximate_grid(up: int, down: int, first: int, end: int,
                     max_term: int) -> ApproximateGrid | None:
    """The grid placing exact outputs `first .. end - 1` of ratio `up / down` with terms at most
    `max_term` (the module docstring's method); None when no positive fraction fits."""
    exact = Fraction(up, down)
    if exact <= 1:
        closest = exact.limit_denominator(max_term)
    else:  # bound the numerator: the reciprocal's denominator
        reciprocal = (1 / exact).limit_denominator(max_term)
        closest = 1 / reciprocal if reciprocal > 0 else Fraction(0)
    if closest == 0:
        return None
    p, q = closest.numerator, closest.denominator
    m = max_term // max(p, q)
    grid_up, grid_down = m * p, m * q
    mid = (first + end - 1) // 2
    # the 1 / grid_up input sample nearest the middle output's exact time: n / grid_up
    n = round(Fraction(mid * down * grid_up, up))
    shift, j_mid = n % grid_down, n // grid_down

    def off(k: int) -> Fraction:  # output k's error in output samples; linear in k
        j = j_mid + k - mid
        return abs(Fraction(j * grid_down + shift, grid_up) - Fraction(k * down, up)) * exact

    drift = float(max(off(first), off(end - 1)))
    return ApproximateGrid(grid_up, grid_down, shift, j_mid - (mid - first), (p, q), drift, down)


def _resample_on_grid(x: np.ndarray, grid: ApproximateGrid, n_out: int) -> np.ndarray:
    """`n_out` samples of `x` resampled on `grid` from its `first` on (fewer when `first` is
    -1), filtering from `_reach` input samples before them as `resample_tail` does."""
    up, down, shift = grid.up, grid.down, grid.shift
    start = max(grid.first, 0)
    cut = max(((start * down + shift) // up - _reach(up, down)) // down, 0) * down
    y = _resample_from(x, up, down, cut, shift, period=grid.period)
    k0 = cut * up // down  # the grid index of input sample `cut`: exact, 0 <= shift < down
    return y[start - k0 : grid.first + n_out - k0]


def _reach(up: int, down: int) -> int:
    """Input samples the filter reaches on either side of an output sample (rounded up, +1)."""
    return -(-FILTER_HALF_TAPS * max(up, down) // up) + 1


def _resample_from(x: np.ndarray, up: int, down: int, cut: int, shift: int = 0,
                   period: int | None = None) -> np.ndarray:
    """`resample_channel`'s output from sample `cut * up / down` on (`cut` a multiple of
    `down`), each finite run filtered only from `cut` on; the first `_reach` input samples' worth
    of outputs after a cut run's new start are transient (callers drop them).

    Output `k` sits at input sample `(k * down + shift) / up`; a run is padded on the left to a
    multiple of `period` (`down`: the exact grid's; the approximate grid passes the exact
    ratio's, so its runs are the very runs the exact method filters)."""
    period = down if period is None else period
    h = lowpass_filter(up, down)
    # A finite sum means every sample is finite (NaN and inf propagate): the channel is one run
    # whose output is the whole output, with no mask to build and nothing to copy.
    if len(x) > 1 and np.isfinite(np.add.reduce(x)):
        return _resample_run(x, up, down, h, cut, shift)
    k_cut = cut * up // down
    out = np.full(output_length(len(x), up, down, shift) - k_cut, np.nan)
    for a, b in finite_runs(x):
        if b <= cut:
            continue
        a0 = (a // period) * period
        run = x[a:b] if a == a0 else np.concatenate((np.full(a - a0, x[a]), x[a:b]))
        skip = max(cut - a0, 0)
        # The run's output starts at the first grid point from its sample `skip` on, `run_shift`
        # (in 1 / up samples) after it: 0 on the exact grid, where both are multiples of down.
        k0 = -(-((a0 + skip) * up - shift) // down)
        run_shift = k0 * down + shift - (a0 + skip) * up
        k_start = max(-(-(a * up - shift) // down), k_cut)
        k_stop = -(-(b * up - shift) // down)
        if k_stop <= k_start:
            continue  # a run shorter than one output period that no output time falls into
        if len(run) == 1:
            y = np.repeat(run, output_length(1, up, down, run_shift))
        else:
            # `window=h` is the filter resample_poly would design itself (it copies it, then scales)
            y = _resample_run(run, up, down, h, skip, run_shift)
        out[k_start - k_cut : k_stop - k_cut] = y[k_start - k0 : k_stop - k0]
    return out


def _resample_run(run: np.ndarray, up: int, down: int, h: np.ndarray, skip: int,
                  shift: int = 0) -> np.ndarray:
    """`run` filtered as `_polyphase` filters it, output `k` at run sample
    `skip + (k * down + shift) / up`, from filtering only `run[skip:]`; the first outputs are
    transient when `skip > 0`.

    `padtype="line"` extends a run past its end along the line through its first and last
    samples; `run[skip:]` gets that very extension appended (as many samples as the filter
    reaches), so its last outputs are the whole run's.
    """
    if skip == 0:
        return _polyphase(run, up, down, h, shift)
    n = len(run)
    slope = (run[-1] - run[0]) / (n - 1)
    extension = run[-1] + slope * np.arange(1, _reach(up, down) + 1)
    y = _polyphase(np.concatenate((run[skip:], extension)), up, down, h, shift)
    return y[: output_length(n - skip, up, down, shift)]


def _polyphase(x: np.ndarray, up: int, down: int, h: np.ndarray, shift: int = 0) -> np.ndarray:
    """`resample_poly(x, up, down, window=h, padtype="line")`, generalized: output `k` at input
    sample `(k * down + shift) / up`, and `up / down` not reduced to lowest terms (the
    approximate grid needs both; with neither, this is `resample_poly` itself).

    The filter is scaled by `up` as `resample_poly` scales it, with zeros in front and behind so
    that `upfirdn`'s outputs from `drop` on are exactly the `n_out` grid points inside `x`.
    """
    from scipy.signal import resample_poly, upfirdn

    if shift == 0 and math.gcd(up, down) == 1:
        return resample_poly(x, up, down, window=h, padtype="line")
    half = (len(h) - 1) // 2
    n_out = output_length(len(x), up, down, shift)
    pre = -(half + shift) % down  # upfirdn output i sits at (i * down - pre - half) / up
    drop = (pre + half + shift) // down  # so output k is upfirdn's k + drop
    # upfirdn gives ceil(((len(x) - 1) * up + taps) / down) outputs: pad the filter to enough
    post = max((drop + n_out - 1) * down - (len(x) - 1) * up + 1 - pre - len(h), 0)
    taps = np.concatenate((np.zeros(pre), h * up, np.zeros(post)))
    return upfirdn(taps, x, up, down, mode="line")[drop : drop + n_out]


