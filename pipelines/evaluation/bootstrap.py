"""The patient (or record) bootstrap of skill: which units to resample, and the interval.

Windows of one patient are correlated, so the unit of resampling is the patient (in the
PhysioNet/CinC 2015 cohort every record is its own patient). Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def check_pair(y: np.ndarray, y_hat: np.ndarray) -> None:
    """Refuse a forecast whose shape differs from the truth `(batch, horizon, targets)`."""
    if y.ndim != 3:
        raise ValueError(f"y must be (batch, horizon, targets), got shape {y.shape}")
    if y_hat.shape != y.shape:
        raise ValueError(f"y_hat shape {y_hat.shape} does not match y shape {y.shape}")


def abs_error_sums(
    y: np.ndarray,
    y_hat: np.ndarray,
    codes: np.ndarray,
    n_patients: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of absolute errors and count of known values per group (`codes`, one per window,
    in `[0, n_patients)`): two `(n_patients,)` arrays."""
    known = np.isfinite(y)
    err = np.where(known, np.abs(y_hat - y), 0.0).reshape(len(y), -1).sum(axis=1)
    count = known.reshape(len(y), -1).sum(axis=1)
    return (
        np.bincount(codes, weights=err, minlength=n_patients),
        np.bincount(codes, weights=count, minlength=n_patients),
    )


def bootstrap_skill_ci(
    y: np.ndarray,
    y_hat: np.ndarray,
    y_baseline: np.ndarray,
    patient_ids: Sequence[str] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the skill against one baseline, resampling PATIENTS.

    Windows of one patient are correlated, so the unit of resampling is the patient: each replicate
    draws patients with replacement and recomputes both pooled MAEs over all their windows.
    Deterministic for a given `seed`. `patient_ids` has one entry per window.
    """
    check_pair(y, y_hat)
    check_pair(y, y_baseline)
    ids = np.asarray(patient_ids)
    if ids.shape != (len(y),):
        raise ValueError(f"patient_ids must have one entry per window ({len(y)}), got {ids.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    _, codes = np.unique(ids, return_inverse=True)
    n_patients = int(codes.max()) + 1 if codes.size else 0
    if n_patients == 0:
        raise ValueError("bootstrap_skill_ci needs at least one window")
    err_model, count = abs_error_sums(y, y_hat, codes, n_patients)
    err_base, _ = abs_error_sums(y, y_baseline, codes, n_patients)

    rng = np.random.default_rng(seed)
    # How many times each patient is drawn in each replicate: (n_boot, n_patients).
    weight = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae_model = (weight @ err_model) / (weight @ count)
        mae_base = (weight @ err_base) / (weight @ count)
        skills = 1.0 - mae_model / mae_base
    skills = skills[np.isfinite(skills)]
    if skills.size == 0:
        return (math.nan, math.nan)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(skills, [tail, 100.0 - tail])
    return (float(lo), float(hi))
