"""Per-row quality flags, still stretches and unusable channels: pure numpy, no I/O.

A row of the manifest carries `quality`, the comma-joined flags below ("" when clean), and
`nan_fraction`. Flags describe; they never drop data (later stages decide what to do with them).

- `high_nan`: more than `QualityRules.max_nan_fraction` (0.5) of all values are NaN.
- `empty:CH`: channel CH has no finite value in the row.
- `flat:CH`: CH is constant, or more than `flat_fraction` (0.5) of its finite samples lie in flat
  stretches: runs of at least `flat_s` (1 s) whose consecutive samples differ by at most
  `flat_tol` (1e-3) x CH's range (a disconnected transducer).
- `clipped:CH`: more than `clip_fraction` (1%) of CH's finite samples sit at its maximum or at its
  minimum (within `clip_tol` x range) in runs of at least `clip_run` (3) samples: the plateau a
  saturated amplifier or ADC leaves (a smooth peak touches the extreme for a sample or two).

What ingest drops (`RecordRules`), with a reason naming the channel:

- *still stretches* (`pipelines.ingest.stretches.find_still`): a stretch of at least
  `min_still_s` (10 s) where a channel holds one value (every sample within about `stuck_tol`
  (1e-3) x its range of one level: a lead off, a pinned transducer) or sits at an ADC limit of its
  header (clipped at the rails) becomes a gap; the usable stretches around it are kept
  (`pipelines.ingest.assemble`).
- a record whose channel is unusable for the whole record (`channel_absent_or_flat`): absent, no
  finite sample at all ("ABP is absent for the whole record (no valid sample)"); flat, its standard
  deviation at most the floor for its unit (`min_std`: 0.5 mmHg, 0.02 mV; any unit: 1e-6 of its
  level), "ABP is flat for the whole record (std 0.12 mmHg, at most 0.5)".

`channel_problem` adds the judgement ingest made before still stretches were cut (kept for short
records and for callers that judge a whole signal): stuck or clipped, at least
`max_stuck_fraction` (90%) of the samples hold one value or sit on plateaus at the channel's
maximum and minimum ("II holds one value (0 mV) for 96% of the record").

On the 263 Challenge 2015 records the arterial lines that are truly flat have std <= 0.26 mmHg and
the lowest real one 2.4 mmHg; the lowest lead II is 0.06 mV.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

_STILL_BLOCK = 2048  # windows per block in window_still_fraction


@dataclass(frozen=True)
class QualityRules:
    max_nan_fraction: float = 0.5
    flat_s: float = 1.0
    flat_tol: float = 1e-3
    flat_fraction: float = 0.5
    clip_tol: float = 1e-3
    clip_fraction: float = 0.01
    clip_run: int = 3


def nan_fraction(signal: np.ndarray) -> float:
    """Fraction of NaN values in `signal` (any shape); 1.0 for an empty array."""
    # count_nonzero, not mean: the mean of a bool array converts it to float64 first.
    return np.count_nonzero(np.isnan(signal)) / signal.size if signal.size else 1.0


def _float_at_or_above(value: float, dtype: np.dtype) -> np.floating:
    """Smallest `dtype` number >= `value`: `x >= value` equals `x >= it` for every `dtype` x."""
    out = dtype.type(value)
    return out if float(out) >= value else np.nextafter(out, dtype.type(np.inf))


def _float_at_or_below(value: float, dtype: np.dtype) -> np.floating:
    """Largest `dtype` number <= `value`: `x <= value` equals `x <= it` for every `dtype` x."""
    out = dtype.type(value)
    return out if float(out) <= value else np.nextafter(out, dtype.type(-np.inf))


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in 1-D bool `mask`.

    One pass finds where the value changes; runs then alternate True/False from `mask[0]`.
    """
    if mask.size == 0:
        return np.zeros(0, dtype=np.intp)
    change = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    lengths = np.diff(np.concatenate(([0], change, [mask.size])))
    return lengths[0 if mask[0] else 1 :: 2]


def _plateau_count(at_extreme: np.ndarray, min_run: int) -> int:
    """Samples in runs of at least `min_run` consecutive extreme values (a smooth peak is 1-2)."""
    lengths = _run_lengths(at_extreme)
    return int(lengths[lengths >= min_run].sum())


def _still_steps(x: np.ndarray, limit: float) -> np.ndarray:
    """Bool `(len(x) - 1,)`: |x[i+1] - x[i]| <= `limit`, as if computed in float64.

    float32 input takes float32 differences: rounding to float32 is monotone, so only the steps
    rounding to within one float32 step of `limit` can disagree; those few are redone in float64.
    """
    with np.errstate(over="ignore"):  # an overflowing step is inf: never still, as in float64
        step = np.diff(x)
    np.abs(step, out=step)
    if x.dtype == np.float64:
        return step <= limit
    below = np.nextafter(_float_at_or_below(limit, x.dtype), x.dtype.type(-np.inf))
    above = np.nextafter(_float_at_or_above(limit, x.dtype), x.dtype.type(np.inf))
    still = step <= below
    unsure = np.flatnonzero((step > below) & (step <= above))
    if unsure.size:
        exact = np.abs(x[unsure + 1].astype(np.float64) - x[unsure].astype(np.float64))
        still[unsure] = exact <= limit
    return still


def _flat_fraction(x: np.ndarray, fs: float, rules: QualityRules, value_range: float) -> float:
    """Fraction of `x` (finite values, in time order) inside flat stretches >= `rules.flat_s`."""
    min_len = max(2, int(round(rules.flat_s * fs)))
    if len(x) < min_len:
        return 0.0
    still = _still_steps(x, rules.flat_tol * value_range)
    lengths = _run_lengths(still) + 1  # a run of r still steps spans r + 1 samples
    return float(lengths[lengths >= min_len].sum() / len(x))


def channel_flags(x: np.ndarray, name: str, fs: float, rules: QualityRules) -> list[str]:
    """Flags of one channel `x` (1-D, NaN for gaps) sampled at `fs` Hz.

    float32 and float64 channels are read as they are (no copy when all finite); any other dtype is
    converted to float64. Thresholds are rounded toward the data's dtype so that every comparison
    agrees with the same comparison made in float64.
    """
    if x.dtype not in (np.float32, np.float64):
        x = np.asarray(x, dtype=np.float64)
    finite_mask = np.isfinite(x)
    finite = x if finite_mask.all() else x[finite_mask]
    if finite.size == 0:
        return [f"empty:{name}"]
    lo, hi = float(finite.min()), float(finite.max())
    value_range = hi - lo
    if value_range == 0.0:
        return [f"flat:{name}"]
    flags = []
    if _flat_fraction(finite, fs, rules, value_range) > rules.flat_fraction:
        flags.append(f"flat:{name}")
    tol = rules.clip_tol * value_range
    top = _plateau_count(finite >= _float_at_or_above(hi - tol, finite.dtype), rules.clip_run)
    bottom = _plateau_count(finite <= _float_at_or_below(lo + tol, finite.dtype), rules.clip_run)
    if max(top, bottom) / finite.size > rules.clip_fraction:
        flags.append(f"clipped:{name}")
    return flags


def compute_quality(
    signal: np.ndarray, channels: tuple[str, ...], fs: float, rules: QualityRules | None = None
) -> tuple[str, ...]:
    """Quality flags of `signal` `(time, channels)` at `fs` Hz, in a stable order."""
    rules = rules or QualityRules()
    if signal.ndim != 2 or signal.shape[1] != len(channels):
        raise ValueError(
            f"signal shape {signal.shape} does not match {len(channels)} channels {channels}"
        )
    flags: list[str] = []
    if nan_fraction(signal) > rules.max_nan_fraction:
        flags.append("high_nan")
    for j, name in enumerate(channels):
        # One contiguous copy per column: cheaper than several strided passes over (time, channels).
        flags.extend(channel_flags(np.ascontiguousarray(signal[:, j]), name, fs, rules))
    return tuple(flags)


def window_still_fraction(windows: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Per window, the largest over channels of the fraction of sample-to-sample steps that do
    not move: `(n, time, channels)` -> `(n,)` in [0, 1].

    A step is still when |x[t+1] - x[t]| <= `tol` x the channel's range within that window; a
    channel constant over the window is 1.0, a step touching NaN is not still. Physiological
    waveforms move almost every sample (at most ~0.3 on the shared PhysioNet ECG, ABP and RESP
    records); a flat line or a transducer's calibration square wave (a few levels held for
    several samples each) is still most of the time. Window-level: `compute_quality` flags whole
    rows, and a flushed or re-zeroed arterial line is a few minutes of an otherwise good row.
    """
    if windows.ndim != 3:
        raise ValueError(f"windows must be (n, time, channels), got shape {windows.shape}")
    if windows.shape[1] < 2:
        raise ValueError(f"windows need >= 2 time steps for a step, got {windows.shape[1]}")
    out = np.zeros(len(windows))
    for i in range(0, len(windows), _STILL_BLOCK):  # bounded temporaries on 20k long windows
        x = windows[i : i + _STILL_BLOCK]
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel
            span = np.nanmax(x, axis=1) - np.nanmin(x, axis=1)  # (b, channels)
        limit = (tol * span)[:, None, :]
        with np.errstate(invalid="ignore"):
            frac = (np.abs(np.diff(x, axis=1)) <= limit).mean(axis=1)  # (b, channels)
        frac[~(span > 0)] = 1.0  # constant (or all-NaN) over the window
        out[i : i + len(x)] = frac.max(axis=1)
    return out


@dataclass(frozen=True)
class RecordRules:
    """When a channel is unusable for a whole record (see `channel_problem`).

    `min_std` pairs a unit (matched case-insensitively) with the standard deviation at or below
    which a channel in that unit is flat; other units are flat only when constant.
    """

    min_std: tuple[tuple[str, float], ...] = (("mmHg", 0.5), ("mV", 0.02))
    max_stuck_fraction: float = 0.9
    stuck_tol: float = 1e-3
    clip_run: int = 3
    min_still_s: float = 10.0  # a still stretch at least this long becomes a gap (`find_still`)

    def std_floor(self, unit: str) -> float:
        key = unit.strip().lower()
        return next((v for u, v in self.min_std if u.strip().lower() == key), 0.0)


def _num(value: float) -> str:
    """A value for a message: 3 significant digits, 0 for float noise around 0."""
    return "0" if abs(value) < 1e-9 else f"{value:.3g}"


def _percent(share: float) -> str:
    """A share as a percentage rounded down to 0.1 (99.96% is "99.9%", never "100%")."""
    return f"{math.floor(share * 1000 + 1e-6) / 10:g}%"


def _stuck(x: np.ndarray, lo: float, value_range: float, tol: float) -> tuple[float, float]:
    """(fraction, value): the largest share of `x` within about `tol` x range of one value.

    Values are binned `tol` x range wide; two neighbouring bins count together, so a level that
    straddles a bin edge (float noise after resampling) still counts as one.
    """
    width = tol * value_range
    bins = np.minimum(((x - lo) / width).astype(np.int64), int(1 / tol))  # (n,) in [0, 1/tol]
    counts = np.bincount(bins)
    pairs = counts[:-1] + counts[1:] if len(counts) > 1 else counts
    k = int(np.argmax(pairs))
    held = (bins == k) | (bins == k + 1)
    return float(pairs[k] / len(x)), float(np.median(x[held]))


def channel_absent_or_flat(x: np.ndarray, name: str, unit: str,
                           rules: RecordRules | None = None) -> str | None:
    """Why channel `name` (1-D `x` over the whole record, physical units `unit`, NaN for gaps) is
    absent or flat for the whole record, or None when it is neither."""
    rules = rules or RecordRules()
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return f"{name} is absent for the whole record (no valid sample)"
    std = float(x.std())
    floor = rules.std_floor(unit)
    # any unit: constant up to float noise (a constant resampled is not exactly constant)
    if std <= max(floor, 1e-6 * max(abs(float(x.mean())), 1.0)):
        limit = f", at most {_num(floor)}" if floor else ""
        u = f" {unit}" if unit else ""
        return f"{name} is flat for the whole record (std {_num(std)}{u}{limit})"
    return None


def channel_problem(x: np.ndarray, name: str, unit: str, rules: RecordRules | None = None
                    ) -> str | None:
    """Why channel `name` (1-D `x` over the whole record, physical units `unit`, NaN for gaps)
    is unusable for the whole record, or None when it is usable: absent or flat
    (`channel_absent_or_flat`), or stuck or clipped for at least `max_stuck_fraction` of it."""
    rules = rules or RecordRules()
    problem = channel_absent_or_flat(x, name, unit, rules)
    if problem:
        return problem
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    u = f" {unit}" if unit else ""
    lo, hi = float(x.min()), float(x.max())
    tol = rules.stuck_tol * (hi - lo)
    share, value = _stuck(x, lo, hi - lo, rules.stuck_tol)
    if share >= rules.max_stuck_fraction:
        at = ("its maximum " if value >= hi - 2 * tol else
              "its minimum " if value <= lo + 2 * tol else "")
        verb = f"is clipped at {at}" if at else "holds one value "
        return f"{name} {verb}({_num(value)}{u}) for {_percent(share)} of the record"
    top = _plateau_count(x >= hi - tol, rules.clip_run)
    bottom = _plateau_count(x <= lo + tol, rules.clip_run)
    if (top + bottom) / x.size >= rules.max_stuck_fraction:
        return (f"{name} is clipped at its limits ({_num(lo)} and {_num(hi)}{u}) for "
                f"{_percent((top + bottom) / x.size)} of the record")
    return None


def record_problems(signal: np.ndarray, channels: tuple[str, ...], units: tuple[str, ...],
                    rules: RecordRules | None = None) -> tuple[str, ...]:
    """`channel_problem` for every channel of `signal` `(time, channels)`; the reasons found."""
    if signal.ndim != 2 or signal.shape[1] != len(channels) or len(units) != len(channels):
        raise ValueError(f"signal shape {signal.shape} does not match {len(channels)} channels "
                         f"{channels} with units {units}")
    found = (channel_problem(signal[:, j], ch, unit, rules)
             for j, (ch, unit) in enumerate(zip(channels, units, strict=True)))
    return tuple(r for r in found if r is not None)
