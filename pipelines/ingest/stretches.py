"""Still stretches inside a record, found so ingest can cut them as gaps: a channel holding one
value (a lead off, a pinned transducer) or sitting at an ADC limit of its header (clipped at the
rails) for at least `RecordRules.min_still_s`. Pure numpy, no I/O; `pipelines.ingest.assemble`
cuts what `find_still` finds and accounts for the time (`pipelines.ingest.quality` describes the
rules beside the other quality checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.ingest.quality import RecordRules

LIMIT_TOL = 1e-4  # a sample within this share of the ADC span of a limit sits at it


@dataclass(frozen=True)
class Still:
    """The still samples of one channel, bool `(time,)` each and disjoint: `stuck` (inside a
    stretch holding one value) and `clipped` (inside a stretch sitting at an ADC limit)."""

    stuck: np.ndarray
    clipped: np.ndarray


def _long_runs(joined: np.ndarray, min_len: int) -> np.ndarray:
    """Bool `(len(joined) + 1,)`: the samples inside runs of at least `min_len` samples, where
    `joined[i]` says that samples i and i + 1 are in one run."""
    n = joined.size + 1
    edges = np.diff(np.concatenate(([0], joined.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # joined [start, stop)
    long = stops - starts + 1 >= min_len  # r joined steps span r + 1 samples
    # +1 where a long run starts, -1 after it ends: the running sum is > 0 inside one
    delta = np.zeros(n + 1, dtype=np.int32)
    delta[starts[long]] += 1
    delta[stops[long] + 1] -= 1
    return np.cumsum(delta[:-1]) > 0


def at_limits(x: np.ndarray, limits: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Bool like 1-D `x`: samples at one of the ADC `limits` (physical `(low, high)` pairs), within
    `LIMIT_TOL` of the span (the float noise a resampled constant carries)."""
    mask = np.zeros(x.shape, dtype=bool)
    for low, high in limits:
        tol = LIMIT_TOL * (high - low)
        with np.errstate(invalid="ignore"):
            mask |= (np.abs(x - low) <= tol) | (np.abs(x - high) <= tol)
    return mask


def limits_that_hold(x: np.ndarray, limits: tuple[tuple[float, float], ...]
                     ) -> tuple[tuple[float, float], ...]:
    """The `limits` that no finite sample of `x` lies beyond: a header whose ADC range the data
    leave describes another ADC, so its limits say nothing about clipping."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return limits
    lo, hi = float(finite.min()), float(finite.max())
    return tuple((low, high) for low, high in limits
                 if low - LIMIT_TOL * (high - low) <= lo and hi <= high + LIMIT_TOL * (high - low))


def still_range(x: np.ndarray, limits: tuple[tuple[float, float], ...] = ()
                ) -> tuple[float, float] | None:
    """`(min, max)` of the finite samples of `x` not at an ADC limit, or None when there is none:
    the range the tolerance of "one value" is a share of (a rail hit does not widen it)."""
    keep = np.isfinite(x)
    if limits:
        keep &= ~at_limits(x, limits)
    if not keep.any():
        return None
    inside = x[keep]
    return float(inside.min()), float(inside.max())


def find_still(x: np.ndarray, fs: float, rules: RecordRules | None = None,
               value_range: tuple[float, float] | None = None,
               limits: tuple[tuple[float, float], ...] = ()) -> Still:
    """The still stretches of one channel `x` (1-D, physical units at `fs` Hz, NaN for gaps) that
    last at least `rules.min_still_s`.

    *Clipped*: every sample at one of the ADC `limits` (physical `(low, high)` pairs from the
    header, `at_limits`). *Stuck*: every sample within one level's band, `rules.stuck_tol` x
    `value_range` wide (the channel's range over the whole record, ADC limits left out; by default
    `x`'s own), as `channel_problem` judges one value: a stretch whose spread is at most one band
    is always found, one spread over more than two bands never. Two grids of bins two bands wide,
    offset by one band, find them without a loop: a stretch of small spread lies inside one bin of
    one grid. A NaN ends a stretch.
    """
    rules = rules or RecordRules()
    min_len = max(2, int(round(rules.min_still_s * fs)))
    n = x.size
    if n < min_len:
        return Still(np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    clipped = np.zeros(n, dtype=bool)
    if limits:
        at = at_limits(x, limits)
        clipped = _long_runs(at[1:] & at[:-1], min_len)
    value_range = value_range or still_range(x, limits)
    stuck = np.zeros(n, dtype=bool)
    if value_range is not None:
        lo, hi = value_range
        # floor: constant up to float noise, as `channel_absent_or_flat` reads it
        band = max(rules.stuck_tol * (hi - lo), 1e-6 * max(abs(lo), abs(hi), 1.0))
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = (x - lo) / (2 * band)  # NaN stays NaN, and NaN equals nothing
            for shift in (0.0, 0.5):
                bins = np.floor(scaled + shift)
                stuck |= _long_runs(bins[1:] == bins[:-1], min_len)
        stuck &= ~clipped
    return Still(stuck, clipped)
