"""The evaluation report: `render_markdown` (pure) and `write_report`, the edge that writes it.

`write_report` writes into `out_dir`, each file atomically (temp file, then rename):

- `evaluation.json`: `Evaluation.to_dict()`
- `evaluation.md`: `render_markdown(...)`
- `error_by_step.png`: MAE per horizon step, model and every baseline
- `forecast_examples.png`: input, truth and forecasts for a few windows (when examples are given)
- `records.png`: skill per record, and forecast against truth for the best, median and worst
  record (`pipelines.evaluation.plots`; when the evaluation has per-record scores)

The markdown adds, when the evaluation has them: the skill against `cycle_median`, error against
horizon at a few lead times, a table per record and per group (alarm type, true / false alarm),
and which windows were left out and why (`pipelines.evaluation.left_out`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_write
from pipelines.evaluation.left_out import describe_left_out
from pipelines.evaluation.metrics import ErrorSummary, Evaluation
from pipelines.evaluation.plots import (
    ForecastExamples,
    baseline_color,
    draw_example,
    example_axis,
    new_figure,
    plot_records,
    time_axis,
    time_from_origin_label,
    units_label,
    value_label,
)
from pipelines.report_format import format_number, has_interval, pooled_unit

_LEAD_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # of the horizon: the lead times of the horizon table


def _fmt(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.4g}"


_SKILL_DECIMALS = 3  # a skill (a fraction) and its interval: 0.071 [-0.049, 0.201]


def _skill(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else format_number(
        value, _SKILL_DECIMALS)


def _ci(interval, n_patients: int | None, n_records: int | None = None) -> str:
    """`95% CI [lo, hi]` at the skill's decimals; none for fewer than 2 patients or records."""
    if not has_interval(n_patients, n_records):
        return "no interval (one patient)" if n_patients == 1 else "no interval (one record)"
    lo, hi = interval or (math.nan, math.nan)
    return f"95% CI [{_skill(lo)}, {_skill(hi)}]"


def render_markdown(result: Evaluation, title: str = "Evaluation") -> str:
    """A markdown summary: one table row per forecaster (errors in the targets' unit), then skill
    with its 95% interval (`pipelines.report_format`: an interval at the skill's decimals, none
    over one patient)."""
    unit = pooled_unit(getattr(result, "units", ()))
    in_unit = f" ({unit})" if unit else ""

    def row(name: str, s: ErrorSummary) -> str:
        steps = s.mae_per_step
        first, last = (steps[0], steps[-1]) if steps else (math.nan, math.nan)
        return f"| {name} | {_fmt(s.mae)} | {_fmt(s.rmse)} | {_fmt(first)} | {_fmt(last)} |"

    n_records = len(result.records) if result.records else None
    lines = [
        f"# {title}",
        "",
        f"{result.n_windows} windows from {result.n_patients} patients."
        + (f" {result.n_windows_excluded} more left out as flat or stepped (a target still on "
           f"more than {result.max_still_fraction:g} of its steps: flat line, calibration)."
           if result.n_windows_excluded else ""),
        "",
        f"| forecaster | MAE{in_unit} | RMSE{in_unit} | MAE first step{in_unit} | "
        f"MAE last step{in_unit} |",
        "|---|---|---|---|---|",
        row("model", result.model),
        *(
            row(f"{name} (best baseline)" if name == result.best_baseline else name, s)
            for name, s in result.baselines.items()
        ),
        "",
        f"Skill (1 - MAE model / MAE {result.best_baseline}): "
        f"**{_skill(result.skill_mae_vs_best_baseline)}**, "
        f"{_ci(result.skill_ci95, result.n_patients, n_records)} "
        f"({result.n_bootstrap} bootstrap resamples of patients, seed {result.seed}).",
    ]
    if result.skill_vs_cycle_median is not None:
        ci_cm = _ci(result.skill_vs_cycle_median_ci95, result.n_patients, n_records)
        lines += ["", f"Skill against cycle_median (the median of cycle-aligned copies of the "
                  f"past, nothing learned): **{_skill(result.skill_vs_cycle_median)}**, "
                  f"{ci_cm}."]
    q = result.quantile_metrics
    if "interval" in q:
        iv = q["interval"]
        lines += [
            "",
            f"Interval [q{iv['lo']:g}, q{iv['hi']:g}] coverage: {_fmt(iv['coverage'])} "
            f"(nominal {_fmt(iv['nominal'])}).",
        ]
    if "pinball" in q:
        pairs = ", ".join(f"q{k}: {_fmt(v)}" for k, v in q["pinball"].items())
        lines += ["", f"Pinball loss: {pairs}."]
    lines += (_horizon_table(result, in_unit) + _records_table(result)
              + _groups_tables(result, in_unit))
    if result.left_out is not None:
        lines += ["", "## Left out", "", "```", *describe_left_out(result.left_out.to_dict()),
                  "```"]
    return "\n".join(lines) + "\n"


def _horizon_table(result: Evaluation, in_unit: str = "") -> list[str]:
    n = len(result.model.mae_per_step)
    if n < 2:
        return []
    steps = sorted({max(1, round(f * n)) for f in _LEAD_FRACTIONS})
    unit = (lambda k: f"{k / result.fs:.3g} s") if result.fs else (lambda k: f"step {k}")
    series = {"model": result.model, **result.baselines}
    return ["", f"## Error against horizon (MAE{in_unit} at each lead time)", "",
            "| forecaster | " + " | ".join(unit(k) for k in steps) + " |",
            "|---|" + "---|" * len(steps),
            *(f"| {name} | " + " | ".join(_fmt(s.mae_per_step[k - 1]) for k in steps) + " |"
              for name, s in series.items())]


def _records_table(result: Evaluation) -> list[str]:
    if not result.records:
        return []
    names = list(result.baselines)
    ranked = sorted(result.records, key=lambda r: -r.skill if math.isfinite(r.skill) else 1e9)
    return ["", f"## Per record ({len(ranked)}; skill against {result.best_baseline})", "",
            "| record | patient | windows | MAE model | " + " | ".join(names)
            + " | skill | skill vs cycle_median |",
            "|---|---|---|---|" + "---|" * len(names) + "---|---|",
            *(f"| {r.record_id} | {r.patient_id} | {r.n_windows} | {_fmt(r.mae)} | "
              + " | ".join(_fmt(r.baselines.get(b)) for b in names)
              + f" | {_skill(r.skill)} | {_skill(r.skill_vs_cycle_median)} |" for r in ranked)]


def _groups_tables(result: Evaluation, in_unit: str = "") -> list[str]:
    out: list[str] = []
    for grouping, groups in result.groups.items():
        out += ["", f"## Per {grouping} (labels from {result.groups_source})", "",
                f"| {grouping} | records | windows | MAE model{in_unit} | "
                f"MAE {result.best_baseline}{in_unit} | skill | 95% CI | skill vs cycle_median |",
                "|---|---|---|---|---|---|---|---|"]
        for name, g in groups.items():
            # a bootstrap over one patient (or record) has no interval: none is shown
            lo, hi = g.skill_ci95
            ci = (f"[{_skill(lo)}, {_skill(hi)}]" if has_interval(g.n_patients, g.n_records)
                  else "-")
            out.append(f"| {name} | {g.n_records} | {g.n_windows} | {_fmt(g.mae)} | "
                       f"{_fmt(g.baselines.get(result.best_baseline))} | {_skill(g.skill)} | "
                       f"{ci} | {_skill(g.skill_vs_cycle_median)} |")
    return out


def _plot_error_by_step(result: Evaluation):
    """MAE (in the targets' unit) against time ahead (ms, s or minutes; steps without `fs`)."""
    fig = new_figure(8, 4)
    ax = fig.add_subplot()
    series = {"model": result.model, **result.baselines}
    n = len(result.model.mae_per_step)
    axis = time_axis(n / result.fs, result.fs) if result.fs else None
    for name, s in series.items():
        ahead = np.arange(1, len(s.mae_per_step) + 1)  # step k is k samples ahead
        x = axis.of(ahead / result.fs) if axis is not None else ahead
        model = name == "model"
        ax.plot(x, s.mae_per_step, label=name, linewidth=2.2 if model else 1.1,
                color="tab:red" if model else baseline_color(name), zorder=3 if model else 2)
    ax.set_xlabel(f"time ahead ({axis.unit})" if axis is not None
                  else "time ahead (steps; sampling rate not recorded)")
    ax.set_ylabel(f"MAE ({units_label(result.units)})")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_title(f"Error against time ahead ({result.n_windows} windows of "
                 f"{result.n_patients} patients)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def _plot_examples(examples: ForecastExamples, units: tuple[str, ...] = (),
                   max_windows: int = 4, max_targets: int = 4):
    """A few windows per target: the last inputs, truth, model and baselines around the origin,
    each y axis with its unit (`units`, one per target), time in ms, s or minutes."""
    n = min(len(examples.x), max_windows)
    k = min(examples.y.shape[2], max_targets)
    fig = new_figure(3.6 * n + 1.8, 2.7 * k + 0.6)
    axis, keep = example_axis(examples)
    for t in range(k):
        name = examples.target_names[t] if t < len(examples.target_names) else f"target {t}"
        for w in range(n):
            ax = fig.add_subplot(k, n, t * n + w + 1)
            draw_example(ax, examples, w, t, axis, keep, examples.baselines)
            title = examples.labels[w] if w < len(examples.labels) else f"window {w}"
            ax.set_title(f"{name}, {title}", fontsize=9)
            if t == k - 1:
                ax.set_xlabel(time_from_origin_label(axis))
            if w == 0:
                ax.set_ylabel(value_label(name, units[t] if t < len(units) else None))
            if t == 0 and w == n - 1:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                          borderaxespad=0.0)
    fig.suptitle(f"Forecasts of {n} test windows: model against truth and baselines")
    return fig


class ReportFiles:
    """A report's files, each written atomically into one folder (made if missing);
    `written` maps each file name to its path."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.written: dict[str, str] = {}

    def text(self, name: str, content: str) -> None:
        atomic_write(self.out / name, lambda p: p.write_text(content, encoding="utf-8"))
        self.written[name] = str(self.out / name)

    def png(self, name: str, fig) -> None:
        atomic_write(self.out / name, lambda p: fig.savefig(p, format="png"))
        self.written[name] = str(self.out / name)


def write_report(
    result: Evaluation,
    out_dir: str | Path,
    examples: ForecastExamples | None = None,
) -> dict[str, str]:
    """Write evaluation.json, evaluation.md and the PNGs into `out_dir`; returns name -> path."""
    files = ReportFiles(out_dir)
    text, png = files.text, files.png
    text("evaluation.json", json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    text("evaluation.md", render_markdown(result))
    png("error_by_step.png", _plot_error_by_step(result))
    if examples is not None and len(examples.x):
        png("forecast_examples.png", _plot_examples(examples, result.units))
    if result.records:
        png("records.png", plot_records(result, examples if examples is not None
                                        and examples.labels else None))
    return files.written
