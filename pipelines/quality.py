"""Per-row quality flags for an ingested signal: pure numpy, no I/O.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    return float(np.isnan(signal).mean()) if signal.size else 1.0


def _flat_fraction(x: np.ndarray, fs: float, rules: QualityRules, value_range: float) -> float:
    """Fraction of `x` (finite values, in time order) inside flat stretches >= `rules.flat_s`."""
    min_len = max(2, int(round(rules.flat_s * fs)))
    if len(x) < min_len:
        return 0.0
    still = np.abs(np.diff(x)) <= rules.flat_tol * value_range
    lengths = _run_lengths(still) + 1  # a run of r still steps spans r + 1 samples
    return float(lengths[lengths >= min_len].sum() / len(x))


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in 1-D bool `mask`."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _plateau_count(at_extreme: np.ndarray, min_run: int) -> int:
    """Samples in runs of at least `min_run` consecutive extreme values (a smooth peak is 1-2)."""
    lengths = _run_lengths(at_extreme)
    return int(lengths[lengths >= min_run].sum())


def channel_flags(x: np.ndarray, name: str, fs: float, rules: QualityRules) -> list[str]:
    """Flags of one channel `x` (1-D, NaN for gaps) sampled at `fs` Hz."""
    finite = x[np.isfinite(x)]
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
    at_top = _plateau_count(finite >= hi - tol, rules.clip_run) / finite.size
    at_bottom = _plateau_count(finite <= lo + tol, rules.clip_run) / finite.size
    if max(at_top, at_bottom) > rules.clip_fraction:
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
        flags.extend(channel_flags(np.asarray(signal[:, j], dtype=np.float64), name, fs, rules))
    return tuple(flags)
