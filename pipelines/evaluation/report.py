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
from pipelines.evaluation.plots import ForecastExamples, new_figure, plot_records

_LEAD_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # of the horizon: the lead times of the horizon table


def _fmt(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.4g}"


def render_markdown(result: Evaluation, title: str = "Evaluation") -> str:
    """A markdown summary: one table row per forecaster, then skill with its 95% interval."""

    def row(name: str, s: ErrorSummary) -> str:
        steps = s.mae_per_step
        first, last = (steps[0], steps[-1]) if steps else (math.nan, math.nan)
        return f"| {name} | {_fmt(s.mae)} | {_fmt(s.rmse)} | {_fmt(first)} | {_fmt(last)} |"

    lo, hi = result.skill_ci95
    lines = [
        f"# {title}",
        "",
        f"{result.n_windows} windows from {result.n_patients} patients."
        + (f" {result.n_windows_excluded} more left out as flat or stepped (a target still on "
           f"more than {result.max_still_fraction:g} of its steps: flat line, calibration)."
           if result.n_windows_excluded else ""),
        "",
        "| forecaster | MAE | RMSE | MAE first step | MAE last step |",
        "|---|---|---|---|---|",
        row("model", result.model),
        *(
            row(f"{name} (best baseline)" if name == result.best_baseline else name, s)
            for name, s in result.baselines.items()
        ),
        "",
        f"Skill (1 - MAE model / MAE {result.best_baseline}): "
        f"**{_fmt(result.skill_mae_vs_best_baseline)}**, 95% CI [{_fmt(lo)}, {_fmt(hi)}] "
        f"({result.n_bootstrap} bootstrap resamples of patients, seed {result.seed}).",
    ]
    if result.skill_vs_cycle_median is not None:
        clo, chi = result.skill_vs_cycle_median_ci95 or (math.nan, math.nan)
        lines += ["", f"Skill against cycle_median (the median of cycle-aligned copies of the "
                  f"past, nothing learned): **{_fmt(result.skill_vs_cycle_median)}**, 95% CI "
                  f"[{_fmt(clo)}, {_fmt(chi)}]."]
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
    lines += _horizon_table(result) + _records_table(result) + _groups_tables(result)
    if result.left_out is not None:
        lines += ["", "## Left out", "", "```", *describe_left_out(result.left_out.to_dict()),
                  "```"]
    return "\n".join(lines) + "\n"


def _horizon_table(result: Evaluation) -> list[str]:
    n = len(result.model.mae_per_step)
    if n < 2:
        return []
    steps = sorted({max(1, round(f * n)) for f in _LEAD_FRACTIONS})
    unit = (lambda k: f"{k / result.fs:.3g} s") if result.fs else (lambda k: f"step {k}")
    series = {"model": result.model, **result.baselines}
    return ["", "## Error against horizon (MAE at each lead time)", "",
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
              + f" | {_fmt(r.skill)} | {_fmt(r.skill_vs_cycle_median)} |" for r in ranked)]


def _groups_tables(result: Evaluation) -> list[str]:
    out: list[str] = []
    for grouping, groups in result.groups.items():
        out += ["", f"## Per {grouping} (labels from {result.groups_source})", "",
                f"| {grouping} | records | windows | MAE model | MAE {result.best_baseline} | "
                "skill | 95% CI | skill vs cycle_median |", "|---|---|---|---|---|---|---|---|"]
        for name, g in groups.items():
            lo, hi = g.skill_ci95
            out.append(f"| {name} | {g.n_records} | {g.n_windows} | {_fmt(g.mae)} | "
                       f"{_fmt(g.baselines.get(result.best_baseline))} | {_fmt(g.skill)} | "
                       f"[{_fmt(lo)}, {_fmt(hi)}] | {_fmt(g.skill_vs_cycle_median)} |")
    return out


def _plot_error_by_step(result: Evaluation):
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    series = {"model": result.model, **result.baselines}
    for name, s in series.items():
        steps = np.arange(1, len(s.mae_per_step) + 1)
        ax.plot(steps, s.mae_per_step, label=name, linewidth=2.0 if name == "model" else 1.2)
    ax.set_xlabel("horizon step")
    ax.set_ylabel("MAE (physical units)")
    ax.set_title("Error by horizon step")
    ax.legend()
    return fig


def _plot_examples(examples: ForecastExamples, max_windows: int = 4, max_targets: int = 4):
    n = min(len(examples.x), max_windows)
    k = min(examples.y.shape[2], max_targets)
    fig = new_figure(4 * n, 2.6 * k)
    steps, horizon = examples.x.shape[1], examples.y.shape[1]
    scale = 1.0 / examples.fs if examples.fs else 1.0
    past = (np.arange(steps) - steps) * scale
    future = np.arange(horizon) * scale
    for t in range(k):
        name = examples.target_names[t] if t < len(examples.target_names) else f"target {t}"
        for w in range(n):
            ax = fig.add_subplot(k, n, t * n + w + 1)
            ax.plot(past, examples.x[w, :, examples.target_idx[t]], color="0.5", label="input")
            ax.plot(future, examples.y[w, :, t], color="k", label="truth")
            ax.plot(future, examples.y_hat[w, :, t], color="C3", label="model")
            for name_b, b in examples.baselines.items():
                ax.plot(future, b[w, :, t], linestyle="--", linewidth=0.9, label=name_b)
            title = examples.labels[w] if w < len(examples.labels) else f"window {w}"
            ax.set_title(f"{name}, {title}", fontsize=9)
            ax.set_xlabel("s" if examples.fs else "samples")
            if t == 0 and w == 0:
                ax.legend(fontsize=7)
    return fig


def write_report(
    result: Evaluation,
    out_dir: str | Path,
    examples: ForecastExamples | None = None,
) -> dict[str, str]:
    """Write evaluation.json, evaluation.md and the PNGs into `out_dir`; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def text(name: str, content: str) -> None:
        atomic_write(out / name, lambda p: p.write_text(content, encoding="utf-8"))
        written[name] = str(out / name)

    def png(name: str, fig) -> None:
        atomic_write(out / name, lambda p: fig.savefig(p, format="png"))
        written[name] = str(out / name)

    text("evaluation.json", json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    text("evaluation.md", render_markdown(result))
    png("error_by_step.png", _plot_error_by_step(result))
    if examples is not None and len(examples.x):
        png("forecast_examples.png", _plot_examples(examples))
    if result.records:
        png("records.png", plot_records(result, examples if examples is not None
                                        and examples.labels else None))
    return written
