"""The evaluation report: `render_markdown` (pure) and `write_report`, the edge that writes it.

`write_report` writes into `out_dir`, each file atomically (temp file, then rename):

- `evaluation.json`: `Evaluation.to_dict()`
- `evaluation.md`: `render_markdown(...)`
- `error_by_step.png`: MAE per horizon step, model and every baseline
- `forecast_examples.png`: input, truth and forecasts for a few windows (when examples are given)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_write
from pipelines.evaluation.metrics import ErrorSummary, Evaluation


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
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ForecastExamples:
    """A few windows to draw: `x` `(n, input_steps, channels)`, `y`/`y_hat` `(n, horizon, targets)`.

    `target_idx` maps target k to its input channel (to draw the history); `baselines` holds
    optional baseline forecasts shaped like `y`; `fs` (Hz) puts the time axis in seconds.
    """

    x: np.ndarray
    y: np.ndarray
    y_hat: np.ndarray
    target_idx: tuple[int, ...]
    baselines: Mapping[str, np.ndarray] = field(default_factory=dict)
    target_names: tuple[str, ...] = ()
    fs: float | None = None


def _figure(width: float, height: float):
    # A bare Figure with the Agg canvas: no pyplot global state, no display backend needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_error_by_step(result: Evaluation):
    fig = _figure(7, 4)
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
    fig = _figure(4 * n, 2.6 * k)
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
            ax.set_title(f"{name}, window {w}", fontsize=9)
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
    return written
