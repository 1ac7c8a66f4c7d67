"""Hour-ahead MAP trends and the acute-hypotension warning, judged as a clinician would.

`evaluate_events(records, forecaster, threshold, train_records, input_steps)` is the entry point
(`pulsecast train` / `pulsecast evaluate` call it on held-out patients); it returns an
`EventEvaluation` whose `to_dict()` is the JSON contract (every figure named with its unit), and
`pipelines.evaluation.event_report.write_event_report` writes it out. Cases are cut by
`pipelines.evaluation.event_cases`.

- Trends, on the cases 60, 120 and 180 minutes before T0, pooled: the model's `forecast` against
  the last value, the mean of the last 5 minutes and ridge AR (fitted on windows of the training
  records, the recipe's lags), MAE per minute ahead, skill against the best baseline with a
  bootstrap interval over patients (`pipelines.evaluation.metrics.compute_evaluation`).
- The warning, on the T0 cases, the early cut points and continuous monitoring: the model
  (`ahe_probability`, alarm at probability >= `threshold`, the one stored with the version) against
  MAP alone (the mean of the last 5 minutes; a logistic regression for its probability and its
  alarm threshold fitted on the training records' cases only, chosen as the model's is:
  `map_alone_fit`, `fit_map_alone`). AUROC with a 95 %
  bootstrap interval over patients, accuracy at the threshold ("k/n correct", the challenge's
  score), sensitivity, specificity, Brier score, reliability bins; for continuous monitoring also
  false alarms per patient-hour.

The figures themselves are `pipelines.evaluation.event_scores`. Pure numpy and scikit-learn;
nothing here touches disk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from models.events import AHE, EventRule
from pipelines.evaluation.baselines import RidgeAR, fit_ridge_ar, mean_last, persistence
from pipelines.evaluation.evaluate import Forecaster, predict_batched
from pipelines.evaluation.event_cases import (
    Cases,
    MapRecord,
    build_early_cases,
    build_monitoring_cases,
    build_t0_cases,
    filled_minutes,
)
from pipelines.evaluation.event_scores import (
    CRITERIA,
    MapAlone,
    WarningScores,
    fit_map_alone,
    score_warning,
)
from pipelines.evaluation.metrics import Evaluation, compute_evaluation, json_safe

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("t0", "early", "monitoring")


@dataclass(frozen=True)
class EventSettings:
    """How cases are cut and scored; the defaults are the Challenge 2009 recipe's."""

    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)  # the order of the model's `quantiles` output
    before_t0_min: tuple[int, ...] = (60, 120, 180)  # the early cut points
    every_min: int = 30  # continuous monitoring: a cut point every 30 minutes
    fill_gap_min: int = 15  # gaps up to this long are interpolated (ingest's fill_gap_s / 60)
    mean_last_min: int = 5  # MAP alone and the mean-of-last-minutes baseline
    ridge_lags: int = 30  # [evaluate] ridge_lags
    ridge_stride_min: int = 5  # training windows for ridge AR, one every 5 minutes
    n_boot: int = 1000
    seed: int = 0
    n_bins: int = 10  # reliability bins of width 1 / n_bins
    # Which training cases MAP alone is fitted on, and its threshold criterion; None: as
    # `pulsecast train` chooses the model's (`map_alone_fit`)
    map_alone_cases: tuple[str, ...] | None = None
    map_alone_criterion: str | None = None
    rule: EventRule = AHE

    def __post_init__(self) -> None:
        cases = self.map_alone_cases
        if cases is not None and (not cases or any(k not in KINDS for k in cases)):
            raise ValueError(f"map_alone_cases must be a non-empty selection of {list(KINDS)}, "
                             f"got {list(cases)}")
        if self.map_alone_criterion not in (None, *CRITERIA):
            raise ValueError(f"map_alone_criterion must be one of {list(CRITERIA)}, got "
                             f"{self.map_alone_criterion!r}")


def map_alone_fit(train_records: Sequence[MapRecord], input_steps: int,
                  s: EventSettings) -> tuple[tuple[str, ...], str]:
    """The training cases and the threshold criterion MAP alone is fitted with: the settings',
    else the rule `pulsecast train` gives the model (`pipelines.training.event_threshold`): the
    training records' T0 cases by accuracy when the records carry labels and those cases hold
    both classes (the challenge's cases and score), otherwise every training cut point (T0,
    early, monitoring) by Youden's J (at an arbitrary cut point an episode is rare, and the most
    accurate rule there is "never alarm")."""
    if s.map_alone_cases is not None:
        return s.map_alone_cases, s.map_alone_criterion or "accuracy"
    if any(r.label is not None for r in train_records):
        t0 = build_t0_cases(train_records, input_steps, rule=s.rule, fill_gap_min=s.fill_gap_min)
        if t0.label.any() and not t0.label.all():
            return ("t0",), s.map_alone_criterion or "accuracy"
    return KINDS, s.map_alone_criterion or "youden"


def training_cases(train_records: Sequence[MapRecord], input_steps: int,
                   settings: EventSettings, kinds: Sequence[str] = KINDS) -> Cases:
    """The warning cases of `kinds` (T0, early, monitoring) of the training records, a cut point
    once (a T0 case wins over a monitoring cut at the same minute: it carries the label)."""
    sets = _all_cases(train_records, input_steps, settings)
    seen: set[tuple[str, int]] = set()
    keep: list[tuple[Cases, int]] = []
    for kind in (k for k in KINDS if k in kinds):
        c = sets[kind]
        for i in range(c.n):
            key = (str(c.record_ids[i]), int(c.cut_min[i]))
            if key not in seen:
                seen.add(key)
                keep.append((c, i))

    def stack(attr: str) -> np.ndarray:
        return np.array([getattr(c, attr)[i] for c, i in keep])

    return Cases(kind="train", patient_ids=stack("patient_ids"), record_ids=stack("record_ids"),
                 cut_min=stack("cut_min"), before_t0_min=stack("before_t0_min"),
                 x=stack("x").reshape(len(keep), input_steps),
                 truth=stack("truth").reshape(len(keep), settings.rule.horizon_min),
                 label=stack("label").astype(bool))


def _all_cases(records: Sequence[MapRecord], input_steps: int,
               s: EventSettings) -> dict[str, Cases]:
    common = {"rule": s.rule, "fill_gap_min": s.fill_gap_min}
    return {"t0": build_t0_cases(records, input_steps, **common),
            "early": build_early_cases(records, input_steps, before_t0_min=s.before_t0_min,
                                       **common),
            "monitoring": build_monitoring_cases(records, input_steps, every_min=s.every_min,
                                                 **common)}


def fit_trend_ridge(train_records: Sequence[MapRecord], input_steps: int,
                    settings: EventSettings) -> RidgeAR:
    """Ridge AR on windows of the training records (one every `ridge_stride_min` minutes, short
    gaps filled), with `min(ridge_lags, input_steps)` lags, as `evaluate.fit_baselines` does."""
    horizon = settings.rule.horizon_min
    xs, ys = [], []
    for rec in train_records:
        m = filled_minutes(rec.minutes, settings.fill_gap_min)
        for cut in range(input_steps, len(m) - horizon + 1, settings.ridge_stride_min):
            xs.append(m[cut - input_steps : cut])
            ys.append(m[cut : cut + horizon])
    if not xs:
        raise ValueError(f"no training record is longer than input_steps + horizon = "
                         f"{input_steps + horizon} minutes: ridge AR cannot be fitted")
    return fit_ridge_ar(np.array(xs)[:, :, None], np.array(ys)[:, :, None], 0,
                        n_lags=min(settings.ridge_lags, input_steps))


# --- the entry point ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # arrays: compare fields, not objects
class ScoredCases:
    """One set of cases with what each warning and the model said about it (for the pictures
    and the per-case table; not part of `to_dict`). Model arrays are None when the forecaster
    gave no such output."""

    cases: Cases
    map_mmhg: np.ndarray  # (n,) the mean of the last `mean_last_min` minutes
    map_probability: np.ndarray  # (n,)
    map_alarm: np.ndarray  # (n,) bool
    probability: np.ndarray | None = None  # (n,) the model's `ahe_probability`
    alarm: np.ndarray | None = None  # (n,) bool
    forecast: np.ndarray | None = None  # (n, horizon_min) mmHg
    quantiles: np.ndarray | None = None  # (n, horizon_min, n_quantiles) mmHg


@dataclass(frozen=True, eq=False)  # arrays: compare fields, not objects
class EventEvaluation:
    """Trends and the warning on held-out records; `to_dict()` is the JSON contract."""

    model_version: str
    threshold: float  # the model's alarm threshold (probability)
    input_steps: int  # minutes of history the model reads
    settings: EventSettings
    map_alone: MapAlone
    trends: Evaluation | None  # None: no case before T0
    warnings: Mapping[str, Mapping[str, WarningScores]]  # kind -> {"model", "map_alone"}
    scored: Mapping[str, ScoredCases] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; NaN becomes None. Units are in the names (mmhg, min, h)."""
        s = self.settings
        return json_safe({
            "model_version": self.model_version,
            "event": s.rule.name,
            "horizon_min": s.rule.horizon_min,
            "input_min": self.input_steps,
            "model_alarm_threshold_probability": self.threshold,
            "map_alone": self.map_alone.to_dict(),
            "settings": {k: v for k, v in asdict(s).items() if k != "rule"},
            "cases": {k: sc.cases.to_dict() for k, sc in self.scored.items()},
            "trends": _trends_dict(self.trends, s) if self.trends is not None else None,
            "warnings": {k: {who: w.to_dict() for who, w in by.items()}
                         for k, by in self.warnings.items()},
        })


def _trends_dict(e: Evaluation, s: EventSettings) -> dict[str, Any]:
    series = {"model": e.model, **e.baselines}
    out = {
        "cases": f"{', '.join(str(b) for b in s.before_t0_min)} min before T0, pooled",
        "n_cases": e.n_windows, "n_patients": e.n_patients,
        "forecasters": {name: {"mae_mmhg": v.mae, "rmse_mmhg": v.rmse,
                               "mae_mmhg_by_minute_ahead": list(v.mae_per_step)}
                        for name, v in series.items()},
        "best_baseline": e.best_baseline,
        "skill_vs_best_baseline": e.skill_mae_vs_best_baseline,
        "skill_ci95": list(e.skill_ci95), "n_boot": e.n_bootstrap,
    }
    q = e.quantile_metrics
    if "interval" in q:
        iv = q["interval"]
        out["interval_coverage"] = {"lo_quantile": iv["lo"], "hi_quantile": iv["hi"],
                                    "nominal": iv["nominal"], "observed": iv["coverage"]}
    if "pinball" in q:
        out["pinball_mmhg"] = dict(q["pinball"])
    return out


def _run_model(forecaster: Forecaster, cases: Cases, horizon: int) -> dict[str, np.ndarray]:
    if cases.n == 0:
        return {}
    out = predict_batched(forecaster, cases.x[:, :, None].astype(np.float32))
    forecast = out.get("forecast")
    if forecast is None or forecast.shape != (cases.n, horizon, 1):
        raise ValueError(f"the forecaster's 'forecast' must be ({cases.n}, {horizon}, 1) for "
                         f"{cases.n} {cases.kind} cases, got "
                         f"{None if forecast is None else forecast.shape}")
    return out


def _score_cases(cases: Cases, out: Mapping[str, np.ndarray], threshold: float,
                 map_alone: MapAlone, s: EventSettings) -> ScoredCases:
    m = cases.mean_last(s.mean_last_min)
    p = out.get(s.rule.output)
    q = out.get("quantiles")
    return ScoredCases(
        cases=cases, map_mmhg=m, map_probability=map_alone.probability(m),
        map_alarm=map_alone.alarm(m),
        probability=None if p is None else np.asarray(p, np.float64).reshape(cases.n),
        alarm=None if p is None else np.asarray(p).reshape(cases.n) >= threshold,
        forecast=None if "forecast" not in out else np.asarray(out["forecast"])[:, :, 0],
        quantiles=None if q is None else np.asarray(q)[:, :, 0, :])


def _warnings(sc: ScoredCases, threshold: float, map_alone: MapAlone,
              s: EventSettings) -> dict[str, WarningScores]:
    c = sc.cases
    common = {"n_boot": s.n_boot, "seed": s.seed, "n_bins": s.n_bins,
              "every_min": s.every_min if c.kind == "monitoring" else None}
    out = {}
    if sc.probability is not None:
        out["model"] = score_warning(c.label, sc.probability, sc.probability, sc.alarm,
                                     c.patient_ids, f"probability >= {threshold:.3g}", **common)
    out["map_alone"] = score_warning(c.label, -sc.map_mmhg, sc.map_probability, sc.map_alarm,
                                     c.patient_ids, map_alone.alarm_rule, **common)
    return out


def _score_trends(sc: ScoredCases, ridge: RidgeAR, s: EventSettings) -> Evaluation | None:
    c = sc.cases
    if c.n == 0 or sc.forecast is None:
        return None
    x, y = c.x[:, :, None], c.truth[:, :, None]
    h = s.rule.horizon_min
    baselines = {"last_value": persistence(x, h, 0),
                 f"mean_last_{s.mean_last_min}_min": mean_last(x, h, 0, s.mean_last_min),
                 "ridge_ar": ridge.predict(x)}
    q_hat = None if sc.quantiles is None else sc.quantiles[:, :, None, :]
    e = compute_evaluation(y, sc.forecast[:, :, None], baselines, c.patient_ids,
                           quantiles=s.quantiles if q_hat is not None else None, q_hat=q_hat,
                           n_boot=s.n_boot, seed=s.seed)
    return replace(e, fs=1.0 / 60.0)


def evaluate_events(
    records: Sequence[MapRecord],
    forecaster: Forecaster,
    threshold: float,
    train_records: Sequence[MapRecord],
    input_steps: int,
    *,
    settings: EventSettings | None = None,
    ridge: RidgeAR | None = None,
    model_version: str = "",
) -> EventEvaluation:
    """Trends and the AHE warning of `forecaster` on held-out `records`.

    `forecaster` maps `x` `(n, input_steps, 1)` mmHg to `{"forecast": (n, 60, 1), "quantiles":
    (n, 60, 1, Q), "ahe_probability": (n, 1)}` (quantiles and probability optional: without a
    probability only MAP alone is scored as a warning). `threshold` is the model's alarm
    threshold (probability), chosen on training records. `train_records` are the records the
    model trained on: MAP alone and (unless `ridge` is given, e.g. the version's stored one)
    ridge AR are fitted on them, never on `records`.
    """
    s = settings or EventSettings()
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    kinds, criterion = map_alone_fit(train_records, input_steps, s)
    train = training_cases(train_records, input_steps, s, kinds)
    try:
        map_alone = fit_map_alone(train.label, train.mean_last(s.mean_last_min),
                                  train.patient_ids, s.mean_last_min, criterion)
    except ValueError as err:
        raise ValueError(f"MAP alone cannot be fitted on the {train.n} training cases of "
                         f"{len(train_records)} records: {err}") from None
    map_alone = replace(map_alone, fitted_on=tuple(kinds))
    if ridge is None:
        ridge = fit_trend_ridge(train_records, input_steps, s)
    scored: dict[str, ScoredCases] = {}
    warnings: dict[str, dict[str, WarningScores]] = {}
    for kind, cases in _all_cases(records, input_steps, s).items():
        log.info("%s cases: %d from %d patients, %d with an event; left out %s", kind, cases.n,
                 cases.n_patients, int(cases.label.sum()), dict(cases.left_out) or "none")
        out = _run_model(forecaster, cases, s.rule.horizon_min)
        scored[kind] = _score_cases(cases, out, threshold, map_alone, s)
        if cases.n:
            warnings[kind] = _warnings(scored[kind], threshold, map_alone, s)
    if scored["t0"].probability is None and scored["t0"].cases.n:
        log.warning("the forecaster gives no %r output: only MAP alone is scored as a warning",
                    s.rule.output)
    return EventEvaluation(model_version=model_version, threshold=float(threshold),
                           input_steps=int(input_steps), settings=s, map_alone=map_alone,
                           trends=_score_trends(scored["early"], ridge, s), warnings=warnings,
                           scored=scored)
