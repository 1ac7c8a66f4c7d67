"""Baseline forecasters: what a learned model has to beat before it is worth serving.

Every baseline works on the same windows as the model and returns `y_hat` shaped like `y`:
`x` is `(batch, input_steps, channels)`, `y_hat` is `(batch, horizon, targets)`, physical units.
`target_idx` (an int or a sequence of ints) picks the target channels of `x`, in target order.

- `persistence`: the last input value of each target, held flat over the horizon.
- `mean_last`: the mean of the last few input values of each target, held flat (for trends one
  value a minute: the mean of the last 5 minutes, which a single noisy reading does not move).
- `last_cycle`: seasonal naive. The cycle length (beat-to-beat, breath-to-breath) is estimated per
  window and per target from the autocorrelation of the input, and the last cycle is repeated.
- `RidgeAR` (`fit_ridge_ar`): a direct multi-step linear autoregression on the last `n_lags`
  samples of the target channel(s), fitted with scikit-learn's Ridge on training windows.
- `cycle_median`: the median of cycle-aligned copies of the past, each moved to meet the last
  sample: the cycle head of `models.cycle` with nothing learned (`cycle_copies` has the maths).
  Reported beside the others; skill is measured against the best of the three above.

Pure numpy (scikit-learn is imported only when fitting); nothing here touches disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.evaluation.cycle_copies import CycleSteps, cycle_median_rows, cycle_steps

TargetIdx = int | Sequence[int]
__all__ = ["CycleSteps", "RidgeAR", "cycle_median", "cycle_steps", "estimate_periods",
           "fit_ridge_ar", "last_cycle", "make_baseline_forecasts", "mean_last", "persistence"]


def _target_indices(x: np.ndarray, target_idx: TargetIdx) -> np.ndarray:
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, input_steps, channels), got shape {x.shape}")
    idx = np.atleast_1d(np.asarray(target_idx))
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"target_idx must be an int or a non-empty list of ints, got {target_idx!r}"
        )
    bad = idx[(idx < 0) | (idx >= x.shape[2])]
    if bad.size:
        raise ValueError(
            f"target_idx {int(bad[0])} is out of range for x with {x.shape[2]} channels"
        )
    return idx


def _check_horizon(horizon: int) -> None:
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")


def persistence(x: np.ndarray, horizon: int, target_idx: TargetIdx) -> np.ndarray:
    """Repeat the last input value of each target channel: `(B, T, C)` → `(B, horizon, targets)`."""
    idx = _target_indices(x, target_idx)
    _check_horizon(horizon)
    last = x[:, -1, idx]  # (B, K)
    return np.repeat(last[:, None, :], horizon, axis=1)


def mean_last(x: np.ndarray, horizon: int, target_idx: TargetIdx, steps: int = 5) -> np.ndarray:
    """The mean of the last `steps` input values of each target, held flat:
    `(B, T, C)` -> `(B, horizon, targets)`. At one value a minute, `steps=5` is the mean of the
    last 5 minutes. A NaN among those values makes that forecast NaN (never a silent guess)."""
    idx = _target_indices(x, target_idx)
    _check_horizon(horizon)
    if int(steps) != steps or not 1 <= steps <= x.shape[1]:
        raise ValueError(
            f"steps must be an integer in [1, input_steps={x.shape[1]}], got {steps!r}")
    level = x[:, -int(steps):, idx].mean(axis=1)  # (B, K)
    return np.repeat(level[:, None, :], horizon, axis=1)


def estimate_periods(
    series: np.ndarray,
    min_lag: int,
    max_lag: int,
    min_correlation: float = 0.5,
    relative_peak: float = 0.9,
) -> np.ndarray:
    """Cycle length in samples of each row of `series` `(n, time)`, 0 where there is no clear one.

    The autocorrelation of every (demeaned) row is computed at once with one FFT and normalised per
    lag like a correlation coefficient of the two overlapping segments, so a strictly periodic row
    scores exactly 1 at its period and less at every other lag. The period is the
    first local maximum in `[min_lag, max_lag]` that reaches both `min_correlation` and
    `relative_peak` times the highest local maximum in range, refined to the highest lag within
    [first, 1.5 * first): taking the first such peak, not the highest, avoids picking a multiple
    of the period (2P, 3P score about as well as P).
    Rows with NaN, constant rows and rows with no qualifying peak get 0.
    """
    series = np.asarray(series, dtype=np.float64)
    if series.ndim != 2:
        raise ValueError(f"series must be (n, time), got shape {series.shape}")
    n = series.shape[1]
    if not 2 <= min_lag <= max_lag <= n - 2:
        raise ValueError(
            f"need 2 <= min_lag <= max_lag <= time - 2, got min_lag={min_lag}, "
            f"max_lag={max_lag}, time={n}"
        )
    centred = series - series.mean(axis=1, keepdims=True)
    nfft = 1 << int(np.ceil(np.log2(2 * n)))  # zero padding: linear, not circular, correlation
    spectrum = np.fft.rfft(centred, n=nfft, axis=1)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), n=nfft, axis=1)[:, : max_lag + 2]
    # Normalise lag k by the energies of the two overlapping segments (x[:n-k] and x[k:]): by
    # Cauchy-Schwarz r <= 1, with equality exactly when the window repeats with period k.
    energy = np.concatenate([np.zeros((len(centred), 1)), np.cumsum(centred**2, axis=1)], axis=1)
    k = np.arange(max_lag + 2)
    head = energy[:, n - k]  # sum of x[:n-k]**2
    tail = energy[:, -1:] - energy[:, k]  # sum of x[k:]**2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = acf / np.sqrt(head * tail)  # (rows, max_lag + 2), r[:, 0] == 1

    lags = np.arange(min_lag, max_lag + 1)
    mid, left, right = r[:, lags], r[:, lags - 1], r[:, lags + 1]
    with np.errstate(invalid="ignore"):
        peak = (mid >= left) & (mid > right) & np.isfinite(mid)
        best = np.where(peak, mid, -np.inf).max(axis=1, keepdims=True)
        ok = peak & (mid >= min_correlation) & (mid >= relative_peak * best)
    first = lags[ok.argmax(axis=1)][:, None]  # (rows, 1)
    # Noise puts small bumps on the flank of a broad peak; the period is the top of the first
    # qualifying peak's neighbourhood [first, 1.5 * first), which still excludes 2P.
    near = (lags[None, :] >= first) & (lags[None, :] < 1.5 * first)
    top = lags[np.where(near & np.isfinite(mid), mid, -np.inf).argmax(axis=1)]
    return np.where(ok.any(axis=1), top, 0).astype(np.int64)


def last_cycle(
    x: np.ndarray,
    horizon: int,
    target_idx: TargetIdx,
    fs: float,
    min_period_s: float,
    max_period_s: float,
    min_correlation: float = 0.5,
) -> np.ndarray:
    """Seasonal naive forecast: repeat each window's last cycle over the horizon.

    The cycle length is estimated per window and per target with `estimate_periods`, searched
    between `min_period_s` and `max_period_s` (seconds, at `fs` Hz). The longest period searched is
    capped at half the window, so at least two cycles are seen. Where no clear period is found
    (noise, flat line, NaN) that window/target falls back to persistence.
    Returns `(batch, horizon, targets)`.
    """
    idx = _target_indices(x, target_idx)
    _check_horizon(horizon)
    if fs <= 0:
        raise ValueError(f"fs must be > 0 Hz, got {fs}")
    if not 0 < min_period_s <= max_period_s:
        raise ValueError(
            f"need 0 < min_period_s <= max_period_s, got {min_period_s} and {max_period_s}"
        )
    batch, steps, _ = x.shape
    min_lag = max(2, int(np.ceil(min_period_s * fs)))
    max_lag = min(int(np.floor(max_period_s * fs)), steps // 2)
    if max_lag < min_lag:
        raise ValueError(
            f"input_steps={steps} is too short for min_period_s={min_period_s} at fs={fs}: "
            f"last_cycle needs at least two cycles ({2 * min_lag} samples) in the window"
        )
    rows = np.moveaxis(x[:, :, idx], 2, 1).reshape(batch * idx.size, steps)  # (B*K, T)
    period = estimate_periods(rows, min_lag, max_lag, min_correlation)  # (B*K,)

    h = np.arange(horizon)
    # Sample h of the forecast copies the sample one period (or a whole number of periods) back:
    # index T - P + (h mod P). A period of 0 (no clear cycle) becomes persistence: index T - 1.
    safe = np.maximum(period, 1)[:, None]
    src = np.where(period[:, None] > 0, steps - safe + h[None, :] % safe, steps - 1)
    out = np.take_along_axis(rows, src, axis=1)  # (B*K, horizon)
    return np.moveaxis(out.reshape(batch, idx.size, horizon), 1, 2)


def cycle_median(x: np.ndarray, horizon: int, target_idx: TargetIdx,
                 steps: CycleSteps) -> np.ndarray:
    """Median of cycle-aligned copies of the past: `(B, T, C)` -> `(B, horizon, targets)`.

    Per window and target: the period by autocorrelation, `steps.n_copies` copies of the past at
    the best-correlating sub-sample lags near 1, 2, ... periods back, each moved to meet the last
    sample (fading over `steps.level_decay` samples), their median. The same maths as the
    `cycle_residual` head with `residual = false` and `cycle_mix = "median"`; nothing is fitted.
    A flat window gives a flat forecast at its level.
    """
    idx = _target_indices(x, target_idx)
    _check_horizon(horizon)
    batch, t, _ = x.shape
    rows = np.moveaxis(x[:, :, idx], 2, 1).reshape(batch * idx.size, t)  # (B*K, T)
    out = cycle_median_rows(rows, int(horizon), steps.min_lag, steps.max_lag,
                            steps.search_steps, steps.n_copies, steps.match_steps,
                            steps.level_decay)  # (B*K, H)
    return np.moveaxis(out.reshape(batch, idx.size, int(horizon)), 1, 2)


@dataclass(frozen=True)
class RidgeAR:
    """A fitted direct multi-step ridge autoregression; make one with `fit_ridge_ar`.

    Features per window: for each target channel, the last `n_lags` samples minus the last sample,
    plus the last sample itself. The span equals plain lags; the point is that the ridge penalty
    then shrinks the forecast towards persistence (plus a constant), not towards zero.
    """

    target_idx: tuple[int, ...]
    n_lags: int
    horizon: int
    coef: np.ndarray  # (horizon * targets, features)
    intercept: np.ndarray  # (horizon * targets,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Forecast `(batch, horizon, targets)` from `x` `(batch, input_steps, channels)`."""
        features = _ar_features(x, self.target_idx, self.n_lags)
        flat = features @ self.coef.T + self.intercept
        return flat.reshape(x.shape[0], self.horizon, len(self.target_idx))


def _ar_features(x: np.ndarray, target_idx: TargetIdx, n_lags: int) -> np.ndarray:
    idx = _target_indices(x, target_idx)
    if int(n_lags) != n_lags or not 1 <= n_lags <= x.shape[1]:
        raise ValueError(
            f"n_lags must be an integer in [1, input_steps={x.shape[1]}], got {n_lags}"
        )
    lags = x[:, -n_lags:, idx].astype(np.float64)  # (B, L, K)
    last = lags[:, -1:, :]
    deltas = (lags[:, :-1, :] - last).reshape(x.shape[0], -1)
    return np.concatenate([deltas, last.reshape(x.shape[0], -1)], axis=1)


def fit_ridge_ar(
    x: np.ndarray,
    y: np.ndarray,
    target_idx: TargetIdx,
    n_lags: int = 32,
    alpha: float = 1.0,
) -> RidgeAR:
    """Fit a `RidgeAR` on training windows `x` `(B, T, C)` and targets `y` `(B, horizon, targets)`.

    Windows with a NaN in their features or targets are left out of the fit.
    """
    from sklearn.linear_model import Ridge

    idx = _target_indices(x, target_idx)
    if y.ndim != 3 or y.shape[0] != x.shape[0] or y.shape[2] != idx.size:
        raise ValueError(
            f"y must be (batch={x.shape[0]}, horizon, targets={idx.size}), got shape {y.shape}"
        )
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    features = _ar_features(x, idx, n_lags)
    flat_y = y.reshape(y.shape[0], -1).astype(np.float64)
    keep = np.isfinite(features).all(axis=1) & np.isfinite(flat_y).all(axis=1)
    if not keep.any():
        raise ValueError(f"fit_ridge_ar got no window free of NaN among {x.shape[0]}")
    model = Ridge(alpha=alpha).fit(features[keep], flat_y[keep])
    return RidgeAR(
        target_idx=tuple(int(i) for i in idx),
        n_lags=int(n_lags),
        horizon=int(y.shape[1]),
        coef=np.atleast_2d(model.coef_),
        intercept=np.atleast_1d(model.intercept_),
    )


def make_baseline_forecasts(
    x: np.ndarray,
    horizon: int,
    target_idx: TargetIdx,
    *,
    fs: float | None = None,
    min_period_s: float | None = None,
    max_period_s: float | None = None,
    ridge: RidgeAR | None = None,
    cycle: CycleSteps | None = None,
) -> Mapping[str, np.ndarray]:
    """Every applicable baseline on the same windows, by name: `persistence` always,
    `last_cycle` when `fs` and the period range are given, `ridge_ar` when a fitted one is given,
    `cycle_median` when its `cycle` settings are given."""
    out: dict[str, np.ndarray] = {"persistence": persistence(x, horizon, target_idx)}
    if fs is not None and min_period_s is not None and max_period_s is not None:
        out["last_cycle"] = last_cycle(x, horizon, target_idx, fs, min_period_s, max_period_s)
    if ridge is not None:
        if ridge.horizon != horizon:
            raise ValueError(f"ridge was fitted for horizon {ridge.horizon}, asked for {horizon}")
        out["ridge_ar"] = ridge.predict(x)
    if cycle is not None:
        out["cycle_median"] = cycle_median(x, horizon, target_idx, cycle)
    return out
