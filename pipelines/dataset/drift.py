"""Data drift: the new records' value distribution against the training data, per channel. Pure.

Written before a retrain trains anything, so a clinician-facing engineer sees "the new ABP is
20 mmHg higher" before reading any forecast metric. Per channel, on samples in physical units
(NaN gaps dropped, both sides evenly subsampled to at most `max_samples` values so the cost does
not grow with the corpus):

- mean, std, quantiles (1, 5, 25, 50, 75, 95, 99 %) and NaN fraction of each side;
- the standardized mean difference `(mean_new - mean_ref) / std_ref`;
- the two-sample Kolmogorov-Smirnov statistic and p-value (`scipy.stats.ks_2samp`).

A channel warns when its KS statistic exceeds `ks_threshold` (default 0.2) or its standardized
mean difference exceeds `smd_threshold` (default 0.5) in absolute value. Samples of a waveform are
strongly autocorrelated, so the p-value is far too small to mean much; the KS statistic (a distance
between the two CDFs, in [0, 1]) is what the warning uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
DEFAULT_MAX_SAMPLES = 50_000


@dataclass(frozen=True)
class SideStats:
    """One side (reference or new) of one channel."""

    n: int  # finite samples used
    nan_fraction: float
    mean: float
    std: float
    quantiles: tuple[float, ...]  # at `QUANTILES`


@dataclass(frozen=True)
class ChannelDrift:
    channel: str
    reference: SideStats
    new: SideStats
    standardized_mean_diff: float
    ks_statistic: float
    ks_pvalue: float
    warning: str  # "" when within thresholds


@dataclass(frozen=True)
class DriftReport:
    channels: tuple[ChannelDrift, ...]
    ks_threshold: float
    smd_threshold: float
    n_reference_records: int
    n_new_records: int

    @property
    def warnings(self) -> list[str]:
        return [c.warning for c in self.channels if c.warning]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["warnings"] = self.warnings
        out["quantile_levels"] = list(QUANTILES)
        return _json_safe(out)

    def to_markdown(self) -> str:
        lines = [
            "# Drift: new records vs training data",
            "",
            f"{self.n_new_records} new records against {self.n_reference_records} training "
            f"records; warning when KS > {self.ks_threshold:g} or |SMD| > "
            f"{self.smd_threshold:g}.",
            "",
            "| channel | ref mean | ref std | new mean | new std | SMD | KS | ref p5..p95 "
            "| new p5..p95 | warning |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for c in self.channels:
            r, n = c.reference, c.new
            lines.append(
                f"| {c.channel} | {r.mean:.4g} | {r.std:.4g} | {n.mean:.4g} | {n.std:.4g} "
                f"| {c.standardized_mean_diff:+.3f} | {c.ks_statistic:.3f} "
                f"| {r.quantiles[1]:.4g}..{r.quantiles[5]:.4g} "
                f"| {n.quantiles[1]:.4g}..{n.quantiles[5]:.4g} | {c.warning or '-'} |"
            )
        return "\n".join(lines) + "\n"


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sample_channel(signals: Iterable[np.ndarray], column: int,
                   max_samples: int = DEFAULT_MAX_SAMPLES) -> tuple[np.ndarray, float]:
    """Values of one column of `(time, channels)` signals, evenly subsampled; and NaN fraction.

    Each signal contributes in proportion to its length (a fixed stride over the concatenation),
    so the sample is deterministic and memory stays at about `max_samples` values per signal.
    """
    signals = list(signals)
    total = sum(int(s.shape[0]) for s in signals)
    if total == 0:
        return np.empty(0), math.nan
    step = max(1, math.ceil(total / max_samples))
    parts, n_nan = [], 0
    for s in signals:
        col = np.asarray(s[::step, column], dtype=np.float64)
        finite = np.isfinite(col)
        n_nan += int((~finite).sum())
        parts.append(col[finite])
    picked = sum(len(p) for p in parts) + n_nan
    return np.concatenate(parts), (n_nan / picked if picked else math.nan)


def compute_side(values: np.ndarray, nan_fraction: float) -> SideStats:
    if values.size == 0:
        return SideStats(0, nan_fraction, math.nan, math.nan, tuple(math.nan for _ in QUANTILES))
    q = np.quantile(values, QUANTILES)
    return SideStats(int(values.size), float(nan_fraction), float(values.mean()),
                     float(values.std()), tuple(float(v) for v in q))


def compute_channel_drift(
    channel: str,
    reference: np.ndarray,
    new: np.ndarray,
    *,
    ref_nan_fraction: float = 0.0,
    new_nan_fraction: float = 0.0,
    ks_threshold: float = 0.2,
    smd_threshold: float = 0.5,
) -> ChannelDrift:
    """Drift of one channel: `reference` and `new` are 1-D finite samples in physical units."""
    from scipy.stats import ks_2samp

    ref, nxt = compute_side(reference, ref_nan_fraction), compute_side(new, new_nan_fraction)
    if reference.size == 0 or new.size == 0:
        warning = f"{channel}: no finite samples on one side (reference {reference.size}, " \
                  f"new {new.size})"
        return ChannelDrift(channel, ref, nxt, math.nan, math.nan, math.nan, warning)
    smd = (nxt.mean - ref.mean) / ref.std if ref.std > 0 else (
        0.0 if nxt.mean == ref.mean else math.copysign(math.inf, nxt.mean - ref.mean))
    ks = ks_2samp(reference, new)
    stat, pvalue = float(ks.statistic), float(ks.pvalue)
    problems = []
    if stat > ks_threshold:
        problems.append(f"KS {stat:.3f} > {ks_threshold:g}")
    if abs(smd) > smd_threshold:
        problems.append(f"mean shifted by {smd:+.2f} reference std ({ref.mean:.4g} -> "
                        f"{nxt.mean:.4g})")
    warning = f"{channel}: " + "; ".join(problems) if problems else ""
    return ChannelDrift(channel, ref, nxt, float(smd), stat, pvalue, warning)


def compute_drift(
    reference: Sequence[np.ndarray],
    new: Sequence[np.ndarray],
    channels: Sequence[str],
    *,
    ks_threshold: float = 0.2,
    smd_threshold: float = 0.5,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> DriftReport:
    """Per-channel drift of `new` signals against `reference` signals.

    Both are sequences of float `(time, channels)` arrays (memory-mapped is fine) whose columns
    are `channels`, in physical units with NaN for gaps.
    """
    if not channels:
        raise ValueError("channels must name at least one channel, got []")
    for name, value in (("ks_threshold", ks_threshold), ("smd_threshold", smd_threshold)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    rows = []
    for j, channel in enumerate(channels):
        ref, ref_nan = sample_channel(reference, j, max_samples)
        nxt, new_nan = sample_channel(new, j, max_samples)
        rows.append(compute_channel_drift(
            channel, ref, nxt, ref_nan_fraction=ref_nan, new_nan_fraction=new_nan,
            ks_threshold=ks_threshold, smd_threshold=smd_threshold))
    return DriftReport(tuple(rows), ks_threshold, smd_threshold, len(reference), len(new))
