"""The warning's figures, pure: AUROC with a patient bootstrap, accuracy at a threshold, Brier
score, reliability bins, false alarms per patient-hour, and MAP alone (the warning to beat).

A warning gives each case a `score` (ranks cases for the AUROC), a `probability` (Brier score,
reliability) and an `alarm` (accuracy, sensitivity, specificity, false alarms). `score_warning`
computes every figure on one set of cases; `fit_map_alone` fits the current-pressure warning on
training cases; `choose_threshold` is the rule MAP alone's threshold is chosen by, the one
`pulsecast train` chooses the model's by (most correct answers on training cases). Numpy and
scikit-learn; no disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Reliability bins: `count[i]` cases with a probability in `[edges[i], edges[i + 1])` (the
    last bin closed), their mean predicted probability and observed event frequency (NaN: empty)."""

    edges: tuple[float, ...]
    mean_predicted: tuple[float, ...]
    observed: tuple[float, ...]
    count: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"bin_edges_probability": list(self.edges),
                "mean_predicted_probability": list(self.mean_predicted),
                "observed_frequency": list(self.observed), "n_cases": list(self.count)}


def calibration_bins(label: np.ndarray, probability: np.ndarray, n_bins: int = 10) -> Calibration:
    """Reliability of `probability` `(n,)` in [0, 1] against `label` `(n,)`, in `n_bins` bins."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = np.asarray(probability, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"probabilities must lie in [0, 1], got {p[(p < 0) | (p > 1)][0]!r}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=n_bins) / count
        freq = np.bincount(which, weights=y, minlength=n_bins) / count
    return Calibration(tuple(edges.tolist()), tuple(mean_p.tolist()), tuple(freq.tolist()),
                       tuple(int(c) for c in count))


def brier_score(label: np.ndarray, probability: np.ndarray) -> float:
    """Mean squared difference between the probability and the outcome (0 or 1)."""
    return float(np.mean((np.asarray(probability, np.float64) - np.asarray(label, bool)) ** 2))


def rank_auroc(label: np.ndarray, score: np.ndarray) -> float:
    """AUROC as the Mann-Whitney statistic (a tie between an event and a non-event counts
    half): the value `sklearn.metrics.roc_auc_score` gives, without its input checks, so a
    thousand bootstrap resamples take milliseconds, not seconds. Needs both classes."""
    from scipy.stats import rankdata

    y = np.asarray(label, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    ranks = rankdata(score)  # ties get their mean rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc_ci(label: np.ndarray, score: np.ndarray, patient_ids: np.ndarray, n_boot: int = 1000,
             seed: int = 0, level: float = 0.95) -> tuple[float, tuple[float, float], int]:
    """AUROC of `score` (higher = more likely an event; `roc_auc_score`), its percentile
    bootstrap interval resampling PATIENTS (`rank_auroc` on each resample), and how many
    resamples were skipped for holding one class only. NaN (and a NaN interval) when the cases
    hold one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(label, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    if y.all() or not y.any():
        return math.nan, (math.nan, math.nan), 0
    auc = float(roc_auc_score(y, s))
    _, codes = np.unique(np.asarray(patient_ids), return_inverse=True)
    rows = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    rng = np.random.default_rng(seed)
    draws, skipped = [], 0
    for _ in range(int(n_boot)):
        idx = np.concatenate([rows[c] for c in rng.integers(0, len(rows), len(rows))])
        if y[idx].all() or not y[idx].any():
            skipped += 1
            continue
        draws.append(rank_auroc(y[idx], s[idx]))
    if not draws:
        return auc, (math.nan, math.nan), skipped
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(draws, [tail, 100.0 - tail])
    return auc, (float(lo), float(hi)), skipped


CRITERIA: tuple[str, ...] = ("accuracy", "youden")


def choose_threshold(label: np.ndarray, probability: np.ndarray,
                     criterion: str = "accuracy") -> float:
    """The alarm threshold (alarm when `probability >= threshold`) chosen on these cases.

    `probability` `(n,)` in [0, 1], `label` `(n,)` the event, both classes present. Candidates
    are the midpoints between neighbouring distinct probabilities (and between the outermost ones
    and 0 or 1), so `>=` and `>` alarm on the same cases. `criterion`:

    - `accuracy`: the most correct answers (the Challenge 2009's score), ties toward 0.5: the
      rule `pipelines.training.train.choose_threshold` stores with a version, so MAP alone and the
      model are given their thresholds the same way;
    - `youden`: the highest sensitivity + specificity, ties toward the fewest alarms.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    y = np.asarray(label, dtype=bool).ravel()
    p = np.asarray(probability, dtype=np.float64).ravel()
    if len(p) != len(y):
        raise ValueError(f"choose_threshold needs one label per probability, got {len(p)} "
                         f"probabilities and {len(y)} labels")
    if y.all() or not y.any():
        raise ValueError(f"an alarm threshold needs cases with and without the event, got "
                         f"{int(y.sum())} with and {int((~y).sum())} without")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"probabilities must lie in [0, 1], got {p[~((p >= 0) & (p <= 1))][0]!r}")
    values, inverse = np.unique(p, return_inverse=True)
    pos = np.bincount(inverse, weights=y, minlength=len(values))
    neg = np.bincount(inverse, weights=~y, minlength=len(values))
    # candidate i alarms on values[i:]: true alarms above it, true silences below it
    tp = pos.sum() - np.concatenate([[0.0], np.cumsum(pos)])  # (m + 1,)
    tn = np.concatenate([[0.0], np.cumsum(neg)])
    edges = np.concatenate([[0.0], values, [1.0]])
    mids = (edges[:-1] + edges[1:]) / 2.0
    if values[-1] >= 1.0:  # "never alarm" would need a threshold above 1
        tp, tn, mids = tp[:-1], tn[:-1], mids[:-1]
    if criterion == "accuracy":
        best = np.flatnonzero(tp + tn == (tp + tn).max())
        return float(mids[best[np.argmin(np.abs(mids[best] - 0.5))]])
    j = tp / pos.sum() + tn / neg.sum()
    return float(mids[np.flatnonzero(j == j.max())[-1]])


@dataclass(frozen=True)
class WarningScores:
    """One warning (the model, or MAP alone) on one set of cases."""

    alarm_rule: str  # in words, with the threshold and its unit
    n_cases: int
    n_events: int
    n_patients: int
    auroc: float
    auroc_ci95: tuple[float, float]
    n_boot: int
    n_boot_one_class: int  # resamples skipped: one class only
    n_alarms: int
    n_correct: int
    accuracy: float
    sensitivity: float
    specificity: float
    brier: float
    calibration: Calibration
    monitored_h: float | None = None  # continuous monitoring only
    n_false_alarms: int | None = None
    false_alarms_per_patient_hour: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in (
            "alarm_rule", "n_cases", "n_events", "n_patients", "auroc", "n_boot",
            "n_boot_one_class", "n_alarms", "n_correct", "accuracy", "sensitivity",
            "specificity")}
        out["auroc_ci95"] = list(self.auroc_ci95)
        out["correct"] = f"{self.n_correct}/{self.n_cases} correct"
        out["brier_score"] = self.brier
        out["calibration"] = self.calibration.to_dict()
        if self.monitored_h is not None:
            out.update(monitored_h=self.monitored_h, n_false_alarms=self.n_false_alarms,
                       false_alarms_per_patient_hour=self.false_alarms_per_patient_hour)
        return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def score_warning(label: np.ndarray, score: np.ndarray, probability: np.ndarray,
                  alarm: np.ndarray, patient_ids: np.ndarray, alarm_rule: str, *,
                  n_boot: int = 1000, seed: int = 0, n_bins: int = 10,
                  every_min: int | None = None) -> WarningScores:
    """Every figure of one warning on the same cases (`(n,)` arrays). `score` ranks the cases
    for the AUROC, `probability` is scored by Brier and the reliability bins, `alarm` by
    accuracy. With `every_min` (continuous monitoring, each case standing for that many minutes),
    false alarms (alarms with no event in the next hour) per patient-hour too."""
    y = np.asarray(label, dtype=bool)
    a = np.asarray(alarm, dtype=bool)
    auc, ci, skipped = auroc_ci(y, score, patient_ids, n_boot, seed)
    tp, tn = int((a & y).sum()), int((~a & ~y).sum())
    false_alarms = int((a & ~y).sum())
    hours = len(y) * every_min / 60.0 if every_min is not None else None
    return WarningScores(
        alarm_rule=alarm_rule, n_cases=len(y), n_events=int(y.sum()),
        n_patients=len(set(np.asarray(patient_ids).tolist())), auroc=auc, auroc_ci95=ci,
        n_boot=int(n_boot), n_boot_one_class=skipped, n_alarms=int(a.sum()), n_correct=tp + tn,
        accuracy=_ratio(tp + tn, len(y)), sensitivity=_ratio(tp, int(y.sum())),
        specificity=_ratio(tn, int((~y).sum())), brier=brier_score(y, probability),
        calibration=calibration_bins(y, probability, n_bins),
        monitored_h=hours, n_false_alarms=false_alarms if hours is not None else None,
        false_alarms_per_patient_hour=_ratio(false_alarms, hours) if hours is not None else None)


@dataclass(frozen=True)
class MapAlone:
    """The current pressure as a warning: `m`, the mean of the last `minutes` minutes of MAP,
    gives `P(event) = 1 / (1 + exp(-(intercept + coef_per_mmhg * m)))` and an alarm when that is
    at least `threshold_probability`, i.e. (pressure falling, risk rising) at or below
    `threshold_mmhg`; all fitted on training cases (`fit_map_alone`)."""

    threshold_probability: float
    coef_per_mmhg: float
    intercept: float
    minutes: int
    n_train_cases: int
    n_train_events: int
    n_train_patients: int
    criterion: str = "accuracy"
    n_train_alarms: int = 0  # training cases it alarms on (0: "never alarm" fitted best)
    fitted_on: tuple[str, ...] = ()  # the kinds of training cases (t0, early, monitoring)

    def probability(self, map_mmhg: np.ndarray) -> np.ndarray:
        z = self.intercept + self.coef_per_mmhg * np.asarray(map_mmhg, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def alarm(self, map_mmhg: np.ndarray) -> np.ndarray:
        return self.probability(map_mmhg) >= self.threshold_probability

    @property
    def threshold_mmhg(self) -> float:
        """The pressure where the probability meets the threshold (+-inf: never / always)."""
        t = self.threshold_probability
        with np.errstate(divide="ignore"):
            logit = float(np.log(t) - np.log1p(-t))
        return (logit - self.intercept) / self.coef_per_mmhg if self.coef_per_mmhg else math.nan

    @property
    def alarm_rule(self) -> str:
        """The alarm in words, in mmHg."""
        side = "<=" if self.coef_per_mmhg < 0 else ">="
        rule = f"mean of the last {self.minutes} min {side} {self.threshold_mmhg:.1f} mmHg"
        if self.n_train_alarms == 0:
            rule += f" (no training case: never alarming scored best by {self.criterion})"
        return rule

    def to_dict(self) -> dict[str, Any]:
        return {"alarm_threshold_mmhg": self.threshold_mmhg,
                "alarm_threshold_probability": self.threshold_probability,
                "threshold_criterion": self.criterion, "minutes": self.minutes,
                "logistic_coef_per_mmhg": self.coef_per_mmhg,
                "logistic_intercept": self.intercept, "n_train_cases": self.n_train_cases,
                "n_train_events": self.n_train_events,
                "n_train_patients": self.n_train_patients,
                "n_train_alarms": self.n_train_alarms, "fitted_on": list(self.fitted_on)}


def fit_map_alone(label: np.ndarray, map_mmhg: np.ndarray, patient_ids: np.ndarray,
                  minutes: int = 5, criterion: str = "accuracy") -> MapAlone:
    """MAP alone fitted on TRAINING cases: `map_mmhg` `(n,)` the mean of each case's last
    `minutes` minutes, `label` `(n,)` the event. The probability is a logistic regression on the
    pressure; the threshold `choose_threshold` on that probability (the model's rule)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(label, dtype=bool)
    m = np.asarray(map_mmhg, dtype=np.float64)
    if y.all() or not y.any():
        raise ValueError(f"MAP alone needs training cases with and without the event, got "
                         f"{int(y.sum())} with and {int((~y).sum())} without")
    centre = float(m.mean())  # centred for the solver; the intercept is moved back below
    fit = LogisticRegression().fit((m - centre)[:, None], y)
    coef = float(fit.coef_[0, 0])
    out = MapAlone(threshold_probability=0.5, coef_per_mmhg=coef,
                   intercept=float(fit.intercept_[0]) - coef * centre, minutes=int(minutes),
                   n_train_cases=len(y), n_train_events=int(y.sum()),
                   n_train_patients=len(set(np.asarray(patient_ids).tolist())),
                   criterion=criterion)
    p = out.probability(m)
    threshold = choose_threshold(y, p, criterion)
    return replace(out, threshold_probability=threshold, n_train_alarms=int((p >= threshold).sum()))
