"""The event evaluation of a forecaster on a pipelines dataset: the edge `pulsecast train`,
`pulsecast evaluate` and `pulsecast retrain` call for a recipe with `[model] events`.

Reads the held-out split's and the training split's records (`event_cases.read_map_records`:
signals, and T0 and group labels from the dataset's `labels.csv`), runs
`events.evaluate_events` (trends against last value, the mean of the last 5 minutes and ridge
AR; the warning against MAP alone, both fitted on the training split only), writes the report
(`event_report.write_event_report`) and returns the report's JSON form plus `summary`, the few
figures a version's metadata and the promotion gate read (`summarize_events`).
`recipe_event_evaluation` does all that with a recipe's settings and returns the summary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.evaluation.baselines import RidgeAR
from pipelines.evaluation.event_cases import read_map_records
from pipelines.evaluation.event_report import write_event_report
from pipelines.evaluation.events import EventSettings, Forecaster, evaluate_events

if TYPE_CHECKING:
    from pipelines.config import Recipe
    from pipelines.dataset.contract import Dataset

log = logging.getLogger(__name__)


def event_settings(quantiles: tuple[float, ...], fill_gap_s: float, ridge_lags: int,
                   seed: int = 0) -> EventSettings:
    """`EventSettings` from a recipe's values: its quantile levels, ingest's gap filling (the
    served model fills gaps up to it too) and ridge AR's lags."""
    return EventSettings(quantiles=tuple(quantiles), fill_gap_min=int(fill_gap_s // 60),
                         ridge_lags=int(ridge_lags), seed=int(seed))


def summarize_events(report: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of an event report: per case set and warning, AUROC (95 % interval),
    accuracy (k/n correct), Brier score and false alarms per patient-hour; the trend's pooled
    MAE (mmHg) beside the best baseline's and the skill over it."""
    out: dict[str, Any] = {"event": report.get("event")}
    keep = ("auroc", "auroc_ci95", "accuracy", "correct", "brier_score",
            "false_alarms_per_patient_hour")
    for kind, by in (report.get("warnings") or {}).items():
        out[kind] = {who: {k: w[k] for k in keep if w.get(k) is not None}
                     for who, w in by.items()}
    trends = report.get("trends")
    if trends:
        best = trends.get("best_baseline")
        forecasters = trends.get("forecasters", {})
        out["trends"] = {
            "mae_mmhg": forecasters.get("model", {}).get("mae_mmhg"),
            "best_baseline": best,
            "best_baseline_mae_mmhg": forecasters.get(best, {}).get("mae_mmhg"),
            "skill_vs_best_baseline": trends.get("skill_vs_best_baseline"),
            "skill_ci95": trends.get("skill_ci95"),
        }
    return out


def evaluate_dataset_events(forecaster: Forecaster, dataset: Any, input_steps: int,
                            threshold: float, settings: EventSettings, out_dir: Path, *,
                            split: str = "test", target: str | None = None,
                            ridge: RidgeAR | None = None,
                            model_version: str = "") -> dict[str, Any]:
    """Evaluate `forecaster`'s trends and warning on `split` of `dataset`, MAP alone and (unless
    `ridge` is given: a version's stored one) ridge AR fitted on its train split; writes the
    report into `out_dir` and returns its JSON form with `summary` added."""
    held_out = read_map_records(dataset, split, channel=target)
    train = read_map_records(dataset, "train", channel=target)
    result = evaluate_events(held_out, forecaster, threshold, train, input_steps,
                             settings=settings, ridge=ridge, model_version=model_version)
    write_event_report(result, out_dir)
    report = result.to_dict()
    report["summary"] = summarize_events(report)
    return report


def recipe_event_evaluation(forecaster, recipe: Recipe, dataset: Dataset,
                            events: Mapping[str, Mapping], out_dir: Path,
                            split: str = "test", ridge=None) -> dict[str, Any]:
    """The headline figures of the event evaluation on `split`, with the recipe's quantiles, gap
    filling, ridge lags and seed, at the version's threshold (`events`, as in pulsecast.json);
    the full report, pictures included, is written into `out_dir`."""
    (name, entry), = events.items()  # one event per recipe: the AHE
    settings = event_settings(tuple(recipe.model.get("quantiles", [])), recipe.data.fill_gap_s,
                              recipe.evaluate.ridge_lags, recipe.train.seed)
    report = evaluate_dataset_events(forecaster, dataset, recipe.window.input_steps,
                                     float(entry["threshold"]), settings, out_dir, split=split,
                                     target=recipe.window.targets[0], ridge=ridge)
    summary = report["summary"]
    t0 = summary.get("t0", {})
    log.info("%s warning at T0 on %s: model %s, MAP alone %s", name, split,
             t0.get("model"), t0.get("map_alone"))
    return summary
