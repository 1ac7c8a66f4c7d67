"""Forecast metrics, skill against baselines with a patient bootstrap, and the evaluation result.

Arrays: `y` and `y_hat` are `(batch, horizon, targets)` in physical units; quantile forecasts are
`(batch, horizon, targets, n_quantiles)`. Truth values that are NaN (masked gaps) are left out of
every metric; a NaN forecast where the truth is known makes the metric NaN, so a broken forecaster
never looks good.

`compute_evaluation` assembles an `Evaluation`; `Evaluation.to_dict()` is the JSON that
`pulsecast evaluate --json` prints. Skill is measured against the best of the baselines a model
has to beat (persistence, last cycle, ridge AR: every baseline but those in `REPORTED_ONLY`);
`cycle_median` gets its own skill and interval beside it. The per-record and per-group scores
(`pipelines.evaluation.breakdown`) and the left-out accounting (`pipelines.evaluation.left_out`)
are attached to the `Evaluation` by `pipelines.evaluation.evaluate`. Pure numpy, no disk:
rendering and writing the report is `pipelines.evaluation.report`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.evaluation.bootstrap import abs_error_sums, bootstrap_skill_ci, check_pair

__all__ = ["CYCLE_MEDIAN", "REPORTED_ONLY", "ErrorSummary", "Evaluation", "abs_error_sums",
           "bootstrap_skill_ci", "compute_evaluation", "interval_coverage", "mae",
           "mae_per_step", "pinball_loss", "rmse", "skill", "summarize_errors"]

# Baselines reported beside the others but never the "best baseline" skill is measured against:
# the cycle median is the signal processing a learned cycle model builds on (issue 16), so a
# model is judged against the classic three and, separately, against it.
REPORTED_ONLY: tuple[str, ...] = ("cycle_median",)
CYCLE_MEDIAN = "cycle_median"


def _masked_mean(
    values: np.ndarray, known: np.ndarray, axis: int | tuple[int, ...] | None
) -> np.ndarray:
    count = known.sum(axis=axis)
    total = np.where(known, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def mae(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Mean absolute error over every known truth value (physical units)."""
    check_pair(y, y_hat)
    return float(_masked_mean(np.abs(y_hat - y), np.isfinite(y), None))


def rmse(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Root mean squared error over every known truth value (physical units)."""
    check_pair(y, y_hat)
    return float(np.sqrt(_masked_mean((y_hat - y) ** 2, np.isfinite(y), None)))


def mae_per_step(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """MAE at each horizon step, over windows and targets: `(horizon,)`."""
    check_pair(y, y_hat)
    return _masked_mean(np.abs(y_hat - y), np.isfinite(y), (0, 2))


def pinball_loss(y: np.ndarray, q_hat: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Mean pinball (quantile) loss per quantile: `(n_quantiles,)`.

    `q_hat` is `(batch, horizon, targets, n_quantiles)`; for quantile q and error u = y - q_hat the
    loss is max(q u, (q - 1) u).
    """
    qs = np.asarray(quantiles, dtype=np.float64)
    if qs.ndim != 1 or np.any((qs <= 0) | (qs >= 1)):
        raise ValueError(f"quantiles must be a list of numbers in (0, 1), got {quantiles!r}")
    if q_hat.shape != (*y.shape, qs.size):
        raise ValueError(f"q_hat must have shape {(*y.shape, qs.size)}, got {q_hat.shape}")
    u = y[..., None] - q_hat
    loss = np.maximum(qs * u, (qs - 1.0) * u)
    known = np.broadcast_to(np.isfinite(y)[..., None], loss.shape)
    return _masked_mean(loss, known, (0, 1, 2))


def interval_coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Fraction of known truth values inside the closed interval [lo, hi] (same shapes as y)."""
    check_pair(y, lo)
    check_pair(y, hi)
    known = np.isfinite(y)
    inside = (y >= lo) & (y <= hi)
    return float(_masked_mean(inside.astype(np.float64), known, None))


def skill(mae_model: float, mae_baseline: float) -> float:
    """Skill `1 - MAE_model / MAE_baseline`: 0 is no better than the baseline, 1 is perfect."""
    if not mae_baseline > 0:
        raise ValueError(f"skill needs a baseline MAE > 0, got {mae_baseline}")
    return 1.0 - mae_model / mae_baseline


@dataclass(frozen=True)
class ErrorSummary:
    """Point errors of one forecaster over the evaluation windows (physical units)."""

    mae: float
    rmse: float
    mae_per_step: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"mae": self.mae, "rmse": self.rmse, "mae_per_step": list(self.mae_per_step)}


def summarize_errors(y: np.ndarray, y_hat: np.ndarray) -> ErrorSummary:
    return ErrorSummary(
        mae=mae(y, y_hat),
        rmse=rmse(y, y_hat),
        mae_per_step=tuple(float(v) for v in mae_per_step(y, y_hat)),
    )


@dataclass(frozen=True)
class Evaluation:
    """A model against its baselines on the same windows; `to_dict()` is the JSON contract."""

    model: ErrorSummary
    baselines: Mapping[str, ErrorSummary]
    best_baseline: str
    skill_mae_vs_best_baseline: float
    skill_ci95: tuple[float, float]
    n_windows: int
    n_patients: int
    n_bootstrap: int
    seed: int
    quantile_metrics: Mapping[str, object] = field(default_factory=dict)
    n_windows_excluded: int = 0  # left out as still ([window] max_still_fraction)
    max_still_fraction: float = 1.0
    skill_vs_cycle_median: float | None = None  # None: no cycle_median baseline
    skill_vs_cycle_median_ci95: tuple[float, float] | None = None
    skill_baselines: tuple[str, ...] = ()  # the baselines the best one was chosen among
    fs: float | None = None  # Hz: mae_per_step step k is (k + 1) / fs seconds ahead
    units: tuple[str, ...] = ()  # one per target ("mV"), for the report's axes; () unknown
    records: tuple[Any, ...] = ()  # breakdown.RecordScore per scored record
    groups: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # breakdown.GroupScore
    groups_source: str | None = None  # where the group labels came from
    left_out: Any = None  # left_out.LeftOut: which windows were not scored, and why

    def to_dict(self) -> dict:
        """Plain JSON types; NaN (a metric with no known value) becomes None (null)."""
        model = self.model.to_dict()
        model.update(self.quantile_metrics)
        ci_cm = self.skill_vs_cycle_median_ci95
        return json_safe(
            {
                "model": model,
                "baselines": {name: s.to_dict() for name, s in self.baselines.items()},
                "best_baseline": self.best_baseline,
                "skill_mae_vs_best_baseline": self.skill_mae_vs_best_baseline,
                "skill_ci95": list(self.skill_ci95),
                "n_windows": self.n_windows,
                "n_patients": self.n_patients,
                "n_bootstrap": self.n_bootstrap,
                "seed": self.seed,
                "n_windows_excluded": self.n_windows_excluded,
                "max_still_fraction": self.max_still_fraction,
                "skill_baselines": list(self.skill_baselines),
                "skill_vs_cycle_median": self.skill_vs_cycle_median,
                "skill_vs_cycle_median_ci95": list(ci_cm) if ci_cm is not None else None,
                "fs": self.fs,
                "units": list(self.units),
                "n_records": len(self.records),
                "records": [r.to_dict() for r in self.records],
                "groups": {k: {g: s.to_dict() for g, s in v.items()}
                           for k, v in self.groups.items()},
                "groups_source": self.groups_source,
                "left_out": self.left_out.to_dict() if self.left_out is not None else None,
            }
        )


def json_safe(value: object) -> object:
    """`value` with plain JSON types: numpy scalars as Python ones, NaN and inf as None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def compute_evaluation(
    y: np.ndarray,
    y_hat: np.ndarray,
    baselines: Mapping[str, np.ndarray],
    patient_ids: Sequence[str] | np.ndarray,
    *,
    quantiles: Sequence[float] | None = None,
    q_hat: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Score the model and every baseline on the same windows; skill against the best baseline.

    The best baseline is the one with the lowest MAE over all windows among those not in
    `REPORTED_ONLY` (all of them when only such are given); the 95% interval of the skill comes
    from `bootstrap_skill_ci` against that baseline. With a `cycle_median` baseline, the skill
    against it and its interval are reported too (`skill_vs_cycle_median`). With `quantiles` and
    `q_hat` `(batch, horizon, targets, n_quantiles)`, the model entry also gets `pinball` (per
    quantile) and `interval` (coverage of [lowest, highest] quantile against its nominal level).
    """
    if not baselines:
        raise ValueError("compute_evaluation needs at least one baseline, got none")
    model = summarize_errors(y, y_hat)
    base = {name: summarize_errors(y, b) for name, b in baselines.items()}
    finite = {name: s.mae for name, s in base.items() if np.isfinite(s.mae)}
    if not finite:
        raise ValueError(f"every baseline MAE is NaN: {sorted(base)}")
    eligible = [name for name in base if name not in REPORTED_ONLY] or list(base)
    among = {name: m for name, m in finite.items() if name in eligible} or finite
    best = min(among, key=among.__getitem__)
    ci = bootstrap_skill_ci(y, y_hat, baselines[best], patient_ids, n_boot=n_boot, seed=seed)
    vs_cm: float | None = None
    ci_cm: tuple[float, float] | None = None
    cm = base.get(CYCLE_MEDIAN)
    if cm is not None and cm.mae > 0:  # NaN or 0: no skill to report
        vs_cm = skill(model.mae, cm.mae)
        ci_cm = bootstrap_skill_ci(y, y_hat, baselines[CYCLE_MEDIAN], patient_ids,
                                   n_boot=n_boot, seed=seed)
    extra: dict[str, object] = {}
    if quantiles is not None and q_hat is not None:
        qs = [float(q) for q in quantiles]
        losses = pinball_loss(y, q_hat, qs)
        lo, hi = int(np.argmin(qs)), int(np.argmax(qs))
        extra["pinball"] = {f"{q:g}": float(v) for q, v in zip(qs, losses, strict=True)}
        extra["interval"] = {
            "lo": qs[lo],
            "hi": qs[hi],
            "nominal": qs[hi] - qs[lo],
            "coverage": interval_coverage(y, q_hat[..., lo], q_hat[..., hi]),
        }
    return Evaluation(
        model=model,
        baselines=base,
        best_baseline=best,
        skill_mae_vs_best_baseline=skill(model.mae, base[best].mae),
        skill_ci95=ci,
        n_windows=int(len(y)),
        n_patients=int(len(np.unique(np.asarray(patient_ids)))),
        n_bootstrap=int(n_boot),
        seed=int(seed),
        quantile_metrics=extra,
        skill_vs_cycle_median=vs_cm,
        skill_vs_cycle_median_ci95=ci_cm,
        skill_baselines=tuple(eligible),
    )
