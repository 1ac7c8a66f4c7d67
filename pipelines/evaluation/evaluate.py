"""Evaluation on held-out patients: a forecaster against baselines on exactly the same windows.

`evaluate_forecaster` is the one place where windows of a split are cut, the model and the
baselines (persistence, last cycle, ridge autoregression fitted on the train split, cycle median)
forecast them, and `pipelines.evaluation.metrics.compute_evaluation` scores them with a
patient-level bootstrap; the scores per record and per group of records (`breakdown`, labels from
`groups`: PhysioNet's ALARMS file) and the account of the windows left out (`left_out`) are
attached. Used by `pulsecast train` (before publishing) and `pulsecast evaluate` (on a published
SavedModel).

The ridge baseline is fitted on the model's own training data: `pulsecast train` stores its
coefficients in the version's metadata (`ridge_to_metadata`, key `ridge_ar`), so scoring a version
on records it never saw compares it with a baseline that never saw them either.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.config import EvalConfig
from pipelines.dataset.contract import Dataset
from pipelines.evaluation.baselines import (
    CycleSteps,
    RidgeAR,
    cycle_steps,
    fit_ridge_ar,
    make_baseline_forecasts,
)
from pipelines.evaluation.breakdown import RecordScore, score_groups, score_records
from pipelines.evaluation.groups import read_dataset_groups
from pipelines.evaluation.left_out import (
    LeftOut,
    describe_left_out,
    read_left_out,
    summarize_left_out,
)
from pipelines.evaluation.metrics import Evaluation, compute_evaluation
from pipelines.evaluation.plots import ForecastExamples
from pipelines.evaluation.report import write_report
from pipelines.windows.batcher import WindowBatcher
from pipelines.windows.spec import NoWindowsError, WindowSpec

log = logging.getLogger(__name__)

# A forecaster maps x (batch, input_steps, channels) in physical units to a dict of outputs:
# "forecast" (batch, horizon, targets) and optionally "quantiles" (batch, horizon, targets, Q).
Forecaster = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class EvalWindows:
    """The windows of one split, evenly subsampled to at most `max_windows`."""

    x: np.ndarray  # (n, input_steps, channels), physical units
    y: np.ndarray  # (n, horizon, targets)
    patient_ids: np.ndarray  # (n,) str
    n_excluded: int = 0  # windows of the split left out as still (spec.max_still_fraction)
    record_ids: np.ndarray | None = None  # (n,) str
    left_out: LeftOut | None = None  # every reason a window was not scored (`account=True`)


def target_positions(spec: WindowSpec) -> list[int]:
    """Where each target channel sits among the inputs (baselines forecast from the inputs)."""
    missing = [t for t in spec.targets if t not in spec.inputs]
    if missing:
        raise ValueError(
            f"baselines need every target among the inputs; targets {missing} are not in "
            f"inputs {list(spec.inputs)}"
        )
    return [spec.inputs.index(t) for t in spec.targets]


def load_eval_windows(
    dataset: Dataset, spec: WindowSpec, split: str, max_windows: int, account: bool = False
) -> EvalWindows:
    """Cut every window of `split` and keep at most `max_windows`, evenly spaced (deterministic).

    Windows the spec leaves out as still (`spec.max_still_fraction`: a flat line, a calibration
    square wave) are left out for the model and every baseline alike, counted in `n_excluded`.
    With `account`, `left_out` says why every other window was not scored too (gaps, records too
    short, subsampling), and a split without windows raises with that account in the message.
    """
    records = dataset.records(split)
    if not records:
        raise ValueError(f"split {split!r} of dataset {dataset.root} has no records")
    try:
        batcher = WindowBatcher(dataset, spec, split=split, shuffle=False)
    except NoWindowsError as err:
        if not account:
            raise
        left = read_left_out(dataset, spec, split, records, {}, 0, max_windows)
        raise NoWindowsError("\n".join([str(err), *describe_left_out(left.to_dict())])) from None
    windows = batcher.index.windows  # (n, 2): (record position, start), in record order
    n = len(windows)
    pick = np.unique(np.linspace(0, n - 1, num=min(n, max_windows)).round().astype(np.int64))
    chosen = windows[pick]
    x, y = batcher.gather(chosen)[:2]
    manifest = dataset.manifest
    patient_of = dict(zip(manifest["record_id"], manifest["patient_id"], strict=True))
    rec_ids = batcher.record_ids
    patients = np.array([patient_of[rec_ids[int(r)]] for r in chosen[:, 0]])
    if batcher.index.n_still:
        log.info("%d %s windows left out as still (target still on > %g of its steps)",
                 batcher.index.n_still, split, spec.max_still_fraction)
    left = None
    if account:
        kept = np.bincount(windows[:, 0], minlength=len(rec_ids))
        left = read_left_out(dataset, spec, split, rec_ids,
                             dict(zip(rec_ids, kept.tolist(), strict=True)), len(chosen),
                             max_windows)
    return EvalWindows(x=x, y=y, patient_ids=patients, n_excluded=batcher.index.n_still,
                       record_ids=np.array([rec_ids[int(r)] for r in chosen[:, 0]]),
                       left_out=left)


def fit_baselines(dataset: Dataset, spec: WindowSpec, cfg: EvalConfig, split: str = "train"):
    """Ridge AR fitted on (a sample of) the train windows; None when the split has no windows."""
    try:
        train = load_eval_windows(dataset, spec, split, cfg.max_windows)
    except ValueError as err:
        log.warning("ridge_ar baseline not fitted: %s", err)
        return None
    lags = min(cfg.ridge_lags, spec.input_steps)
    return fit_ridge_ar(train.x, train.y, target_positions(spec), n_lags=lags)


def ridge_to_metadata(ridge: RidgeAR | None) -> dict | None:
    """JSON-ready form of a fitted ridge baseline (float32 precision is plenty for a baseline)."""
    if ridge is None:
        return None
    return {
        "target_idx": list(ridge.target_idx),
        "n_lags": ridge.n_lags,
        "horizon": ridge.horizon,
        "coef": np.asarray(ridge.coef, dtype=np.float32).tolist(),  # (horizon * targets, features)
        "intercept": np.asarray(ridge.intercept, dtype=np.float32).tolist(),
    }


def ridge_from_metadata(data: dict) -> RidgeAR:
    """The `RidgeAR` that `ridge_to_metadata` wrote; raises ValueError naming a bad shape."""
    coef = np.asarray(data["coef"], dtype=np.float64)
    intercept = np.asarray(data["intercept"], dtype=np.float64)
    target_idx = tuple(int(i) for i in data["target_idx"])
    n_lags, horizon = int(data["n_lags"]), int(data["horizon"])
    rows, features = horizon * len(target_idx), n_lags * len(target_idx)
    if coef.shape != (rows, features) or intercept.shape != (rows,):
        raise ValueError(f"ridge_ar metadata has coef {coef.shape} and intercept "
                         f"{intercept.shape}, expected ({rows}, {features}) and ({rows},)")
    return RidgeAR(target_idx=target_idx, n_lags=n_lags, horizon=horizon, coef=coef,
                   intercept=intercept)


def predict_batched(
    forecaster: Forecaster, x: np.ndarray, batch_size: int = 512
) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), batch_size):
        for name, value in forecaster(x[i : i + batch_size]).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(v) for name, v in parts.items()}


def cycle_median_steps(cfg: EvalConfig, spec: WindowSpec, fs: float) -> CycleSteps | None:
    """The `cycle_median` settings of `[evaluate]` at `fs`; None (with a warning) when the window
    cannot hold a cycle of `min_period_s`."""
    try:
        return cycle_steps(fs, spec.input_steps, cfg.min_period_s, cfg.max_period_s,
                           cfg.cycle_search_s, cfg.cycle_match_s, cfg.cycle_candidates,
                           cfg.cycle_level_decay_s)
    except ValueError as err:
        log.warning("cycle_median baseline skipped: %s", err)
        return None


def evaluate_forecaster(
    forecaster: Forecaster,
    dataset: Dataset,
    spec: WindowSpec,
    cfg: EvalConfig,
    *,
    split: str = "test",
    quantiles: tuple[float, ...] = (),
    seed: int = 0,
    ridge=None,
    groups: Mapping[str, Mapping[str, str]] | None = None,
    groups_source: str | None = None,
) -> tuple[Evaluation, ForecastExamples]:
    """Score `forecaster` and the baselines on the windows of `split` (held-out patients).

    `groups` (`{grouping: {record_id: group}}`) defaults to the labels `read_dataset_groups`
    finds for the dataset (PhysioNet's ALARMS file in its raw folder); `{}` scores no groups.
    The examples are one window of the best, the median and the worst record by skill.
    """
    windows = load_eval_windows(dataset, spec, split, cfg.max_windows, account=True)
    log.info("%s", summarize_left_out(windows.left_out.to_dict()))
    idx = target_positions(spec)
    if ridge is None:
        ridge = fit_baselines(dataset, spec, cfg)
    outputs = predict_batched(forecaster, windows.x)
    y_hat = outputs["forecast"]
    if y_hat.shape != windows.y.shape:
        raise ValueError(f"forecast has shape {y_hat.shape}, the windows need {windows.y.shape}")
    # last_cycle needs two cycles inside the input window
    max_period_s = min(cfg.max_period_s, spec.input_steps / dataset.fs / 2)
    cycle_ok = max_period_s > cfg.min_period_s
    if not cycle_ok:
        log.warning("last_cycle baseline skipped: a %d-step window at %g Hz cannot hold two "
                    "cycles of >= %g s", spec.input_steps, dataset.fs, cfg.min_period_s)
    baselines = make_baseline_forecasts(
        windows.x, spec.horizon, idx, fs=dataset.fs if cycle_ok else None,
        min_period_s=cfg.min_period_s, max_period_s=max_period_s, ridge=ridge,
        cycle=cycle_median_steps(cfg, spec, dataset.fs),
    )
    result = compute_evaluation(
        windows.y, y_hat, baselines, windows.patient_ids,
        quantiles=quantiles or None, q_hat=outputs.get("quantiles"), n_boot=cfg.n_boot, seed=seed,
    )
    best = result.best_baseline
    records = score_records(windows.y, y_hat, baselines, windows.record_ids,
                            windows.patient_ids, best)
    if groups is None:
        groups, groups_source = read_dataset_groups(dataset)
    by_group = score_groups(windows.y, y_hat, baselines, windows.record_ids, windows.patient_ids,
                            groups, best, n_boot=cfg.n_boot, seed=seed)
    result = dataclasses.replace(
        result, n_windows_excluded=windows.n_excluded, max_still_fraction=spec.max_still_fraction,
        fs=dataset.fs, records=records, groups=by_group,
        groups_source=groups_source if by_group else None, left_out=windows.left_out,
        units=tuple(dict(zip(dataset.channels, dataset.units, strict=True)).get(t, "")
                    for t in spec.targets))
    rows, labels = record_examples(records, windows.record_ids, windows.y, y_hat)
    examples = ForecastExamples(
        x=windows.x[rows], y=windows.y[rows], y_hat=y_hat[rows], target_idx=idx,
        baselines={name: b[rows] for name, b in baselines.items()},
        target_names=spec.targets, fs=dataset.fs, labels=labels,
    )
    return result, examples


def record_examples(records: tuple[RecordScore, ...], record_ids: np.ndarray, y: np.ndarray,
                    y_hat: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Rows of one window each of the best, median and worst record by skill, and their labels.

    Within a record the window of median model error is drawn: a typical window, not a lucky
    one. A record appears once (one record: one window).
    """
    ranked = sorted((r for r in records if np.isfinite(r.skill)), key=lambda r: -r.skill)
    if not ranked:
        ranked = list(records)
    picks = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
    err = np.nan_to_num(np.abs(y_hat - y)).mean(axis=(1, 2))  # (n,); unknown truth: 0
    rows, labels, seen = [], [], set()
    for which, rec in picks.items():
        if rec.record_id in seen:
            continue
        seen.add(rec.record_id)
        mine = np.flatnonzero(record_ids == rec.record_id)
        rows.append(int(mine[np.argsort(err[mine], kind="stable")[len(mine) // 2]]))
        labels.append(f"{which} record: {rec.record_id}\nskill {rec.skill:.3f}")
    return np.array(rows, dtype=np.int64), tuple(labels)


def write_evaluation(result: Evaluation, examples: ForecastExamples, out_dir: Path) -> dict:
    """evaluation.json, evaluation.md and the PNG plots in `out_dir`."""
    return write_report(result, out_dir, examples)
