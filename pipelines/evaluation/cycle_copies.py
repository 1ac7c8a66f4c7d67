"""Cycle-aligned copies of the past, in numpy: the maths of `models.cycle`'s head, nothing learned.

Owns the row-level computation behind the `cycle_median` baseline
(`pipelines.evaluation.baselines.cycle_median`) and its settings in samples (`CycleSteps`, made
from the `[evaluate]` seconds by `cycle_steps`). Rows are `(n, time)`: one window of one target
channel each. Step by step, exactly as the Keras layers do it (`WindowScale`, `CycleCandidates`
with `align="lag"`, `CycleMedian`, `WindowUnscale`), so the baseline is the cycle head with no
learned part and its figures can be read as "what the signal processing alone gives":

1. per-row scaling over the last `max_lag` samples (centre, divide by the std, at least 1e-3);
2. the period: the first strong peak of the normalised correlation between the last
   `search_steps` samples and each lagged segment (lags `min_lag..max_lag`), refined to the
   highest lag in `[first, 1.5 * first)`; without a peak >= 0.5, the best-correlating lag;
3. `n_copies` lags, each the best-correlating lag (last `match_steps` samples against their
   lagged copy) within a quarter period of the previous lag plus one period, refined between
   samples by a parabola; copy k reads `T - L_k + (h mod L_k)` by linear interpolation;
4. with `level_decay > 0` (samples) each copy moves by the gap between the last sample and the
   sample before its first one, fading as `exp(-h / level_decay)`;
5. the median of the copies, scaled back.

Correlations use one FFT per row (cross-correlation) and cumulative sums (segment energies), in
float64: no `(rows, lags, samples)` tensor, so 20,000 windows of 1,000 samples take seconds.
Pure numpy; nothing here touches disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The same constants as models.cycle: below MIN_CORRELATION a peak is noise; peaks below
# RELATIVE_PEAK * best lose to a later, stronger one; _FLAT: a flat last segment has no cycle.
MIN_CORRELATION = 0.5
RELATIVE_PEAK = 0.9
_EPS = 1e-6
_FLAT = 1e-8
_MIN_SCALE = 1e-3
_CHUNK = 1024  # rows per FFT batch (bounds RAM: about 40 MB of spectra at 1,000 samples)


@dataclass(frozen=True)
class CycleSteps:
    """The `cycle_median` settings in samples (`cycle_steps` converts them from seconds)."""

    min_lag: int
    max_lag: int
    search_steps: int  # samples the period search correlates
    match_steps: int  # samples each copy's lag is matched on
    n_copies: int = 8
    level_decay: float = 0.0  # samples; 0: copies are not moved to meet the last sample


def cycle_steps(fs: float, input_steps: int, min_period_s: float, max_period_s: float,
                search_s: float, match_s: float, n_copies: int, level_decay_s: float) -> CycleSteps:
    """`CycleSteps` at `fs` Hz, rounded like `[model]` (periods floor/ceil), fitted to the window.

    The longest period is capped so the period search still fits (`input_steps >= search +
    max_lag + 1`, at worst two periods and a sample) and the search and match lengths are
    shortened where the window cannot hold them; ValueError, naming the numbers, when not even
    two cycles of `min_period_s` fit.
    """
    if fs <= 0:
        raise ValueError(f"fs must be > 0 Hz, got {fs}")
    min_lag = max(2, int(np.floor(min_period_s * fs)))
    max_lag = int(np.ceil(max_period_s * fs))
    search = max(2, int(round(search_s * fs)))
    match = max(2, int(round(match_s * fs)))
    # Room for the search segment and its copy one period back, as the layer needs: the longest
    # period is what the full search leaves, or half the window with a search that short.
    max_lag = min(max_lag, max(input_steps - search - 1, (input_steps - 1) // 2))
    search = min(search, input_steps - max_lag - 1)
    match = min(match, input_steps - max_lag - 1)
    if max_lag < min_lag or search < 2 or match < 2:
        raise ValueError(
            f"input_steps={input_steps} is too short for cycle_median: a cycle of "
            f"min_period_s={min_period_s} at fs={fs} needs at least {2 * min_lag + 1} samples"
        )
    return CycleSteps(min_lag, max_lag, search, match, int(n_copies), level_decay_s * fs)


def check_cycle_steps(input_steps: int, min_lag: int, max_lag: int, search_steps: int,
                      match_steps: int, n_copies: int) -> None:
    """ValueError naming the first setting the window cannot hold (same limits as the layer)."""
    if not 2 <= min_lag <= max_lag:
        raise ValueError(f"need 2 <= min_lag <= max_lag, got {min_lag} and {max_lag}")
    if n_copies < 1:
        raise ValueError(f"n_copies must be >= 1, got {n_copies}")
    if search_steps < 2 or input_steps - search_steps - (max_lag + 1) < 0:
        raise ValueError(
            f"input_steps={input_steps} is too short to compare the last {search_steps} samples "
            f"with the {search_steps} samples {max_lag + 1} steps earlier"
        )
    if not 2 <= match_steps <= input_steps - max_lag - 1:
        raise ValueError(f"match_steps must be in [2, input_steps - max_lag - 1 = "
                         f"{input_steps - max_lag - 1}], got {match_steps}")


def segment_correlation(s: np.ndarray, w: int, lags: np.ndarray) -> np.ndarray:
    """Normalised correlation of each row's last `w` samples with the `w` samples `lag` earlier.

    `s` `(n, T)`, `lags` `(L,)` with `T - w - lag >= 0`; returns `(n, L)` in [-1, 1]. As in the
    layer, a flat last segment (centred energy <= 1e-8 per sample) correlates 0 with every lag.
    """
    n, t = s.shape
    ref = s[:, t - w :]
    ref = ref - ref.mean(axis=1, keepdims=True)
    energy = np.sum(ref**2, axis=1, keepdims=True)  # (n, 1)
    # dots[:, m] = sum_j s[:, m + j] * ref[:, j]: the lagged segment's mean drops out because the
    # centred reference sums to 0, so this is the layer's numerator.
    nfft = 1 << int(np.ceil(np.log2(t + w)))
    spectrum = np.fft.rfft(s, n=nfft, axis=1) * np.conj(np.fft.rfft(ref, n=nfft, axis=1))
    dots = np.fft.irfft(spectrum, n=nfft, axis=1)
    starts = t - w - np.asarray(lags)
    num = dots[:, starts]
    c1 = np.concatenate([np.zeros((n, 1)), np.cumsum(s, axis=1)], axis=1)
    c2 = np.concatenate([np.zeros((n, 1)), np.cumsum(s**2, axis=1)], axis=1)
    seg_sum = c1[:, starts + w] - c1[:, starts]
    seg_energy = np.maximum(c2[:, starts + w] - c2[:, starts] - seg_sum**2 / w, 0.0)
    r = np.clip(num / np.sqrt(seg_energy * energy + _EPS), -1.0, 1.0)  # as the layer: no 1 + eps
    return np.where(energy > _FLAT * w, r, 0.0)


def find_periods(s: np.ndarray, min_lag: int, max_lag: int, search_steps: int) -> np.ndarray:
    """Period in samples `(n,)` of each row: the layer's `CycleCandidates.periods`."""
    r = segment_correlation(s, search_steps, np.arange(min_lag - 1, max_lag + 2))
    mid, left, right = r[:, 1:-1], r[:, :-2], r[:, 2:]
    lags = np.arange(min_lag, max_lag + 1)
    peak = (mid >= left) & (mid > right)
    best = np.where(peak, mid, -2.0).max(axis=1, keepdims=True)
    ok = peak & (mid >= MIN_CORRELATION) & (mid >= RELATIVE_PEAK * best)
    first = lags[ok.argmax(axis=1)][:, None]
    near = (lags >= first) & (lags < 1.5 * first)
    refined = lags[np.where(near, mid, -2.0).argmax(axis=1)]
    fallback = lags[mid.argmax(axis=1)]
    return np.where(ok.any(axis=1), refined, fallback)


def matched_lags(s: np.ndarray, period: np.ndarray, min_lag: int, match_steps: int,
                 n_copies: int) -> list[np.ndarray]:
    """Sub-sample lag of each copy, `n_copies` arrays `(n, 1)`: the layer's `_matched_lags`."""
    longest = s.shape[1] - match_steps - 1
    lags = np.arange(min_lag - 1, longest + 2).astype(np.float64)  # (M,)
    m = len(lags)
    r = segment_correlation(s, match_steps, lags.astype(np.int64))  # (n, M)
    inner = (np.arange(m) > 0) & (np.arange(m) < m - 1)
    p = period.astype(np.float64)[:, None]  # (n, 1)
    reach = np.maximum(np.floor(p / 4.0), 1.0)
    rows = np.arange(len(s))[:, None]
    prev = np.zeros_like(p)
    out: list[np.ndarray] = []
    for _ in range(n_copies):
        centre = prev + p
        near = (np.abs(lags - centre) <= reach) & inner  # (n, M)
        # Ties (a flat window correlates 0 everywhere) go to the lag nearest the centre.
        score = r - 1e-6 * np.abs(lags - centre)
        i = np.clip(np.where(near, score, -3.0).argmax(axis=1)[:, None], 1, m - 2)
        r0, rm, rp = r[rows, i], r[rows, i - 1], r[rows, i + 1]
        curve = rm - 2.0 * r0 + rp
        concave = curve < -_EPS
        delta = np.where(concave, 0.5 * (rm - rp) / np.where(concave, curve, -1.0), 0.0)
        lag = lags[i] + np.clip(delta, -0.5, 0.5)
        lag = np.where(near.any(axis=1, keepdims=True), lag, prev if out else p)
        out.append(lag)
        prev = lag
    return out


def _read(s: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """`s` `(n, T)` at float positions `pos` `(n, H)`, linearly interpolated, clipped to the row."""
    last = s.shape[1] - 1
    pos = np.clip(pos, 0.0, float(last))
    lo = np.floor(pos)
    i0 = lo.astype(np.int64)
    i1 = np.minimum(i0 + 1, last)
    v0 = np.take_along_axis(s, i0, axis=1)
    return v0 + (pos - lo) * (np.take_along_axis(s, i1, axis=1) - v0)


def cycle_copies(s: np.ndarray, horizon: int, min_lag: int, max_lag: int, search_steps: int,
                 n_copies: int, match_steps: int, level_decay: float) -> np.ndarray:
    """The `n_copies` cycle-aligned copies of each (scaled) row: `(n, horizon, n_copies)`."""
    t = s.shape[1]
    period = find_periods(s, min_lag, max_lag, search_steps)
    h = np.arange(horizon, dtype=np.float64)
    copies = []
    for lag in matched_lags(s, period, min_lag, match_steps, n_copies):
        pos = t - lag + (h - lag * np.floor(h / lag))  # (n, H)
        copy = _read(s, pos)
        if level_decay > 0:
            gap = s[:, -1:] - _read(s, pos[:, :1] - 1.0)
            copy = copy + gap * np.exp(-h / level_decay)
        copies.append(copy)
    return np.stack(copies, axis=-1)


def cycle_median_rows(rows: np.ndarray, horizon: int, min_lag: int, max_lag: int,
                      search_steps: int, n_copies: int, match_steps: int,
                      level_decay: float = 0.0) -> np.ndarray:
    """Median of `n_copies` cycle-aligned copies of each row's past: `(n, T)` -> `(n, horizon)`.

    Lags and steps in samples; see the module docstring for the steps. Rows are processed in
    chunks of 1,024, each scaled by its own last `max_lag` samples and scaled back.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"rows must be (n, time), got shape {rows.shape}")
    check_cycle_steps(rows.shape[1], min_lag, max_lag, search_steps, match_steps, n_copies)
    out = np.empty((len(rows), horizon))
    for a in range(0, len(rows), _CHUNK):
        chunk = rows[a : a + _CHUNK]
        tail = chunk[:, -max_lag:]
        loc = tail.mean(axis=1, keepdims=True)
        scale = np.maximum(tail.std(axis=1, keepdims=True), _MIN_SCALE)
        copies = cycle_copies((chunk - loc) / scale, horizon, min_lag, max_lag, search_steps,
                              n_copies, match_steps, level_decay)
        out[a : a + len(chunk)] = np.median(copies, axis=-1) * scale + loc
    return out
