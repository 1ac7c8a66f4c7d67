"""The AHE warning and trend report: `render_event_markdown` (pure) and `write_event_report`.

`write_event_report(result, out_dir)` writes, each file atomically (temp file, then rename):

- `events.json`: `EventEvaluation.to_dict()`
- `events.md`: the cases, the warning per set of cases (model against MAP alone), the trends
- `event_cases.csv`: one row per case: kind, record, patient, cut minute, minutes before T0,
  label, the model's probability and alarm, MAP (mean of the last minutes), MAP alone's
  probability and alarm
- `roc_<kind>.png`, `calibration_<kind>.png` for `t0`, `early`, `monitoring` (sets with cases)
- `trend_error.png`: MAE per minute ahead, model and baselines (when there are early cases)
- `fan_<kind>_ahe.png`, `fan_<kind>_no_ahe.png`: one typical case with and one without an AHE
  (the median model probability of its class) from the T0 cases (early ones when there are none)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.evaluation.event_cases import LEFT_OUT_REASONS
from pipelines.evaluation.event_plots import (
    fmt_interval,
    plot_calibration,
    plot_fan,
    plot_roc,
    plot_trend_error,
)
from pipelines.evaluation.events import EventEvaluation, ScoredCases
from pipelines.evaluation.report import ReportFiles

_TITLES = {"t0": "T0 cases (the challenge's forecast origin)",
           "early": "cut points 60, 120, 180 min before T0",
           "monitoring": "continuous monitoring (a cut point every 30 min)"}
_WHO = {"model": "model", "map_alone": "MAP alone"}
_LEADS_MIN = (1, 15, 30, 60)


def _f(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _kinds(kinds: tuple[str, ...]) -> str:
    return " / ".join({"t0": "T0"}.get(k, k) for k in kinds)


def _version(result: EventEvaluation) -> str:
    """`model v7` for a version number, `model <name>` for any other label."""
    v = result.model_version
    return "model" if not v else f"model v{v}" if v.isdigit() else f"model {v}"


def _cases_lines(result: EventEvaluation) -> list[str]:
    lines = ["| cases | n | patients | with AHE | left out |", "|---|---|---|---|---|"]
    for kind, sc in result.scored.items():
        c = sc.cases
        left = "; ".join(f"{n} {LEFT_OUT_REASONS[k]}" for k, n in c.left_out.items()) or "none"
        lines.append(f"| {_TITLES[kind]} | {c.n} | {c.n_patients} | {int(c.label.sum())} | "
                     f"{left} |")
    return lines


def _warning_lines(result: EventEvaluation) -> list[str]:
    out: list[str] = []
    for kind, by in result.warnings.items():
        monitoring = any(w.monitored_h is not None for w in by.values())
        head = ("| warning | alarm when | AUROC [95 % CI] | correct | sensitivity | specificity "
                "| Brier score |" + (" false alarms per patient-hour |" if monitoring else ""))
        out += ["", f"### {_TITLES[kind]}", "", head,
                "|---|---|---|---|---|---|---|" + ("---|" if monitoring else "")]
        for who, w in by.items():
            row = (f"| {_WHO[who]} | {w.alarm_rule} | {fmt_interval(w.auroc, w.auroc_ci95)} | "
                   f"{w.n_correct}/{w.n_cases} ({_f(w.accuracy, '.1%')}) | "
                   f"{_f(w.sensitivity, '.2f')} | {_f(w.specificity, '.2f')} | "
                   f"{_f(w.brier)} |")
            if monitoring:
                row += (f" {_f(w.false_alarms_per_patient_hour, '.2f')} ({w.n_false_alarms} in "
                        f"{_f(w.monitored_h, '.1f')} h) |")
            out.append(row)
        skipped = max(w.n_boot_one_class for w in by.values())
        if skipped:
            out += ["", f"{skipped} of {next(iter(by.values())).n_boot} bootstrap resamples held "
                    "one class only and were skipped."]
    return out


def _trend_lines(result: EventEvaluation) -> list[str]:
    e = result.trends
    if e is None:
        return ["", "## Trends", "", "No case before T0: no trend scored."]
    horizon = len(e.model.mae_per_step)
    leads = [k for k in _LEADS_MIN if k <= horizon]
    series = {"model": e.model, **e.baselines}
    lo, hi = e.skill_ci95
    lines = ["", f"## Trends, an hour ahead ({e.n_windows} cases "
             f"{', '.join(map(str, result.settings.before_t0_min))} min before T0 from "
             f"{e.n_patients} patients, pooled)", "",
             "| forecaster | MAE (mmHg) | " + " | ".join(f"{k} min ahead" for k in leads) + " |",
             "|---|---|" + "---|" * len(leads)]
    for name, s in series.items():
        best = " (best baseline)" if name == e.best_baseline else ""
        lines.append(f"| {name}{best} | {_f(s.mae, '.2f')} | "
                     + " | ".join(_f(s.mae_per_step[k - 1], ".2f") for k in leads) + " |")
    lines += ["", f"Skill (1 - MAE model / MAE {e.best_baseline}): "
              f"**{_f(e.skill_mae_vs_best_baseline)}**, 95 % CI [{_f(lo)}, {_f(hi)}] "
              f"({e.n_bootstrap} bootstrap resamples of patients)."]
    iv = e.quantile_metrics.get("interval")
    if iv:
        lines += ["", f"The {iv['lo']:g}-{iv['hi']:g} quantile band holds "
                  f"{_f(iv['coverage'], '.1%')} of the minutes that happened (nominal "
                  f"{_f(iv['nominal'], '.0%')})."]
    return lines


def render_event_markdown(result: EventEvaluation) -> str:
    """The report as markdown: cases, the warning per set of cases, then trends."""
    m = result.map_alone
    lines = [f"# Acute hypotensive episode warning and hour-ahead MAP ({_version(result)})", "",
             f"An AHE: {result.settings.rule.min_low} of {result.settings.rule.window_min} "
             f"consecutive minutes at or below {result.settings.rule.threshold:g} mmHg in the "
             f"{result.settings.rule.horizon_min} min after the cut point. The model reads "
             f"{result.input_steps} min of MAP; its alarm threshold is a probability of "
             f"{result.threshold:.3g}. MAP alone (the mean of the last {m.minutes} min) was "
             f"fitted on {m.n_train_cases} {_kinds(m.fitted_on)} cases of "
             f"{m.n_train_patients} training patients "
             f"({m.n_train_events} with an AHE): alarm when {m.alarm_rule} (P(AHE) >= "
             f"{m.threshold_probability:.3g}, the threshold with the {m.criterion} criterion).",
             "", "## Cases", "", *_cases_lines(result), "", "## The warning"]
    lines += _warning_lines(result) + _trend_lines(result)
    return "\n".join(lines) + "\n"


def cases_table(result: EventEvaluation) -> pd.DataFrame:
    """One row per case of every set (the `event_cases.csv` contract)."""
    frames = []
    for kind, sc in result.scored.items():
        c = sc.cases
        frames.append(pd.DataFrame({
            "kind": kind, "record_id": c.record_ids, "patient_id": c.patient_ids,
            "cut_min": c.cut_min, "before_t0_min": c.before_t0_min, "ahe": c.label,
            "model_probability": sc.probability if sc.probability is not None else np.nan,
            "model_alarm": sc.alarm if sc.alarm is not None else pd.NA,
            "map_mmhg": sc.map_mmhg, "map_alone_probability": sc.map_probability,
            "map_alone_alarm": sc.map_alarm}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def typical_rows(sc: ScoredCases) -> dict[str, int]:
    """The case with the median model probability (MAP alone's without one) among the cases
    with an AHE (`ahe`) and among those without (`no_ahe`)."""
    p = sc.probability if sc.probability is not None else sc.map_probability
    out = {}
    for name, mask in (("ahe", sc.cases.label), ("no_ahe", ~sc.cases.label)):
        rows = np.flatnonzero(mask)
        if rows.size:
            out[name] = int(rows[np.argsort(p[rows], kind="stable")[len(rows) // 2]])
    return out


def fan_figure(result: EventEvaluation, kind: str, row: int):
    """The fan chart of case `row` of the `kind` cases."""
    sc = result.scored[kind]
    c = sc.cases
    cut = int(c.cut_min[row])
    before = c.before_t0_min[row]
    where = ("at T0" if before == 0 else f"{int(before)} min before T0"
             if np.isfinite(before) else "")
    truth = "AHE" if c.label[row] else "no AHE"
    if sc.probability is not None:
        state = "ON" if sc.alarm[row] else "off"
        warn = (f"alarm {state}: P(AHE in next {result.settings.rule.horizon_min} min) = "
                f"{sc.probability[row]:.2f} (threshold {result.threshold:.2f})")
    else:
        warn = "no AHE probability from this model"
    title = (f"Record {c.record_ids[row]}, {_version(result)}, cut {where} (minute {cut})\n"
             f"{warn}; what happened: {truth}")
    qs = result.settings.quantiles
    median = sc.forecast[row] if sc.forecast is not None else np.full(c.truth.shape[1], np.nan)
    band = None
    if sc.quantiles is not None:
        lo, hi = int(np.argmin(qs)), int(np.argmax(qs))
        band = (sc.quantiles[row, :, lo], sc.quantiles[row, :, hi])
        if 0.5 in qs:
            median = sc.quantiles[row, :, qs.index(0.5)]
    label = f"{min(qs) * 100:g}-{max(qs) * 100:g} % band" if qs else "band"
    return plot_fan(c.x[row], c.truth[row], median, band, title=title, band_label=label)


def _roc_figure(result: EventEvaluation, kind: str):
    sc, by = result.scored[kind], result.warnings[kind]
    c = sc.cases
    scores = {"map_alone": -sc.map_mmhg}
    if sc.probability is not None:
        scores = {"model": sc.probability, **scores}
    legend = {who: f"{_WHO[who]}: AUROC {fmt_interval(w.auroc, w.auroc_ci95)}"
              for who, w in by.items()}
    operating = {who: (1.0 - w.specificity, w.sensitivity) for who, w in by.items()}
    title = (f"ROC of the AHE warning, {_version(result)}\n{_TITLES[kind]}\n{c.n} cases from "
             f"{c.n_patients} patients, {int(c.label.sum())} with AHE")
    return plot_roc(c.label, scores, legend, operating, title=title)


def _calibration_figure(result: EventEvaluation, kind: str):
    c = result.scored[kind].cases
    by = result.warnings[kind]
    briers = ", ".join(f"{_WHO[w]} {_f(s.brier)}" for w, s in by.items())
    title = (f"Calibration of P(AHE), {_version(result)}\n{_TITLES[kind]}: {c.n} cases, "
             f"{int(c.label.sum())} with AHE\nBrier score: {briers}")
    return plot_calibration({who: w.calibration for who, w in by.items()}, title=title)


def write_event_report(result: EventEvaluation, out_dir: str | Path) -> dict[str, str]:
    """Write events.json, events.md, event_cases.csv and the PNGs into `out_dir`; returns
    file name -> path."""
    files = ReportFiles(out_dir)
    text, png = files.text, files.png
    text("events.json", json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    text("events.md", render_event_markdown(result))
    text("event_cases.csv", cases_table(result).to_csv(index=False))
    for kind in result.warnings:
        png(f"roc_{kind}.png", _roc_figure(result, kind))
        png(f"calibration_{kind}.png", _calibration_figure(result, kind))
    if result.trends is not None:
        e = result.trends
        by_minute = {"model": e.model.mae_per_step,
                     **{n: s.mae_per_step for n, s in e.baselines.items()}}
        png("trend_error.png", plot_trend_error(
            by_minute, title=f"Hour-ahead MAP error, {_version(result)}: {e.n_windows} cases "
                             f"before T0 from {e.n_patients} patients"))
    kind = "t0" if result.scored.get("t0") and result.scored["t0"].cases.n else "early"
    if kind in result.scored:
        for name, row in typical_rows(result.scored[kind]).items():
            png(f"fan_{kind}_{name}.png", fan_figure(result, kind, row))
    return files.written
