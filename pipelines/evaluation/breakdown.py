"""Scores per record and per group of records: where a model helps and where it does not.

A pooled skill hides patients; these break it down on the same windows:

- `score_records`: per record (in the PhysioNet/CinC 2015 cohort every record is its own
  patient), the MAE of the model and of every baseline, the skill against the evaluation's best
  baseline (the same baseline as the pooled figure) and against `cycle_median`;
- `score_groups`: the same per group of records (`pipelines.evaluation.groups`: alarm type, true
  or false alarm), with a 95 % bootstrap interval over the group's patients.

Arrays: `y`, `y_hat` and each baseline `(windows, horizon, targets)`; `record_ids` and
`patient_ids` one entry per window. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.evaluation.bootstrap import abs_error_sums, bootstrap_skill_ci
from pipelines.evaluation.metrics import CYCLE_MEDIAN


def _ratio_skill(err_model: float, err_base: float) -> float:
    return 1.0 - err_model / err_base if err_base > 0 else math.nan


@dataclass(frozen=True)
class RecordScore:
    """One record's windows: MAE of the model and each baseline, skill against two references."""

    record_id: str
    patient_id: str
    n_windows: int
    mae: float
    baselines: Mapping[str, float]
    skill: float  # against the evaluation's best baseline
    skill_vs_cycle_median: float | None

    def to_dict(self) -> dict:
        return {"record_id": self.record_id, "patient_id": self.patient_id,
                "n_windows": self.n_windows, "mae": self.mae,
                "baselines": {k: {"mae": v} for k, v in self.baselines.items()},
                "skill": self.skill, "skill_vs_cycle_median": self.skill_vs_cycle_median}


@dataclass(frozen=True)
class GroupScore:
    """A group of records' windows, pooled, with the bootstrap interval over its patients."""

    n_records: int
    n_patients: int
    n_windows: int
    mae: float
    baselines: Mapping[str, float]
    skill: float
    skill_ci95: tuple[float, float]
    skill_vs_cycle_median: float | None

    def to_dict(self) -> dict:
        return {"n_records": self.n_records, "n_patients": self.n_patients,
                "n_windows": self.n_windows, "mae": self.mae,
                "baselines": {k: {"mae": v} for k, v in self.baselines.items()},
                "skill": self.skill, "skill_ci95": list(self.skill_ci95),
                "skill_vs_cycle_median": self.skill_vs_cycle_median}


def score_records(y: np.ndarray, y_hat: np.ndarray, baselines: Mapping[str, np.ndarray],
                  record_ids: Sequence[str] | np.ndarray, patient_ids: Sequence[str] | np.ndarray,
                  best: str) -> tuple[RecordScore, ...]:
    """One `RecordScore` per record, in order of first appearance; skill against `best`."""
    ids = np.asarray(record_ids)
    if ids.shape != (len(y),) or np.asarray(patient_ids).shape != (len(y),):
        raise ValueError(f"record_ids and patient_ids need one entry per window ({len(y)}), got "
                         f"{ids.shape} and {np.asarray(patient_ids).shape}")
    if best not in baselines:
        raise ValueError(f"best baseline {best!r} is not among {sorted(baselines)}")
    names, first, codes = np.unique(ids, return_index=True, return_inverse=True)
    n = len(names)
    err, count = abs_error_sums(y, y_hat, codes, n)
    base = {k: abs_error_sums(y, b, codes, n)[0] for k, b in baselines.items()}
    windows = np.bincount(codes, minlength=n)
    patients = np.asarray(patient_ids)[first]
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in np.argsort(first, kind="stable"):
            cm = base.get(CYCLE_MEDIAN)
            out.append(RecordScore(
                record_id=str(names[i]), patient_id=str(patients[i]),
                n_windows=int(windows[i]), mae=float(err[i] / count[i]),
                baselines={k: float(v[i] / count[i]) for k, v in base.items()},
                skill=_ratio_skill(err[i], base[best][i]),
                skill_vs_cycle_median=None if cm is None else _ratio_skill(err[i], cm[i]),
            ))
    return tuple(out)


def score_groups(y: np.ndarray, y_hat: np.ndarray, baselines: Mapping[str, np.ndarray],
                 record_ids: Sequence[str] | np.ndarray, patient_ids: Sequence[str] | np.ndarray,
                 labels: Mapping[str, Mapping[str, str]], best: str, *, n_boot: int = 1000,
                 seed: int = 0) -> dict[str, dict[str, GroupScore]]:
    """`{grouping: {group: GroupScore}}` over the windows whose record `labels` names.

    `labels` is `{grouping: {record_id: group}}`; windows of unlabelled records are in no group.
    The interval resamples the group's patients (`bootstrap_skill_ci`, same `seed`).
    """
    ids, pids = np.asarray(record_ids), np.asarray(patient_ids)
    out: dict[str, dict[str, GroupScore]] = {}
    for grouping, by_record in labels.items():
        of_window = np.array([by_record.get(str(r), "") for r in ids])
        for group in sorted(set(by_record.values())):
            rows = of_window == group
            if not rows.any():
                continue
            out.setdefault(grouping, {})[group] = _group_score(
                y[rows], y_hat[rows], {k: b[rows] for k, b in baselines.items()}, ids[rows],
                pids[rows], best, n_boot, seed)
    return out


def _group_score(y, y_hat, baselines, ids, pids, best, n_boot, seed) -> GroupScore:
    known = np.isfinite(y)
    total = known.sum()

    def pooled(forecast: np.ndarray) -> float:
        if not total:
            return math.nan
        return float(np.where(known, np.abs(forecast - y), 0.0).sum() / total)

    mae, base = pooled(y_hat), {k: pooled(b) for k, b in baselines.items()}
    cm = base.get(CYCLE_MEDIAN)
    return GroupScore(
        n_records=len(set(ids.tolist())), n_patients=len(set(pids.tolist())),
        n_windows=int(len(y)), mae=mae, baselines=base, skill=_ratio_skill(mae, base[best]),
        skill_ci95=bootstrap_skill_ci(y, y_hat, baselines[best], pids, n_boot=n_boot, seed=seed),
        skill_vs_cycle_median=None if cm is None else _ratio_skill(mae, cm),
    )
