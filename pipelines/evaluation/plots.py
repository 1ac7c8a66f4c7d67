"""Figures of an evaluation, drawn on bare matplotlib `Figure`s (no pyplot state, no display).

- `new_figure`: a Figure with the Agg canvas and a constrained layout;
- `plot_records`: skill per record (sorted, against the best baseline, with the pooled skill and
  its 95 % interval, and the skill against `cycle_median` as dots), and beneath it forecast
  against truth for the best, median and worst record (`ForecastExamples` with `labels`).

Writing the PNGs is `pipelines.evaluation.report.write_report`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipelines.evaluation.metrics import Evaluation

_MAX_LABELLED = 60  # records named on the x axis; more get no tick labels
_HISTORY_HORIZONS = 2  # input drawn before the forecast, in horizons


@dataclass(frozen=True)
class ForecastExamples:
    """A few windows to draw: `x` `(n, input_steps, channels)`, `y`/`y_hat` `(n, horizon, targets)`.

    `target_idx` maps target k to its input channel (to draw the history); `baselines` holds
    optional baseline forecasts shaped like `y`; `fs` (Hz) puts the time axis in seconds;
    `labels` titles each window (`"best record: a103l\nskill 0.410"`).
    """

    x: np.ndarray
    y: np.ndarray
    y_hat: np.ndarray
    target_idx: tuple[int, ...]
    baselines: Mapping[str, np.ndarray] = field(default_factory=dict)
    target_names: tuple[str, ...] = ()
    fs: float | None = None
    labels: tuple[str, ...] = ()


def new_figure(width: float, height: float):
    """A bare Figure with the Agg canvas: no pyplot global state, no display backend needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finite(v: float | None) -> float:
    return v if v is not None and math.isfinite(v) else math.nan


def plot_records(result: Evaluation, examples: ForecastExamples | None = None):
    """Skill per record, then best / median / worst record examples (when given)."""
    records = sorted(result.records, key=lambda r: (-math.inf if not math.isfinite(r.skill)
                                                    else r.skill))
    n_ex = min(len(examples.x), 3) if examples is not None else 0
    fig = new_figure(max(11.0, min(0.18 * len(records), 18.0)), 3.8 + (3.0 if n_ex else 0))
    grid = fig.add_gridspec(2 if n_ex else 1, max(n_ex, 1),
                            height_ratios=[1.3, 1.0] if n_ex else [1.0])
    ax = fig.add_subplot(grid[0, :])
    pos = np.arange(len(records))
    skills = np.array([_finite(r.skill) for r in records])
    ax.bar(pos, skills, color=np.where(skills >= 0, "C2", "C3"), width=0.8,
           label=f"skill vs {result.best_baseline}")
    vs_cm = np.array([_finite(r.skill_vs_cycle_median) for r in records])
    if np.isfinite(vs_cm).any():
        ax.plot(pos, vs_cm, "o", color="k", markersize=3, label="skill vs cycle_median")
    lo, hi = result.skill_ci95
    ax.axhline(result.skill_mae_vs_best_baseline, color="C0", linewidth=1.2,
               label=f"pooled {result.skill_mae_vs_best_baseline:.3f}")
    if math.isfinite(lo) and math.isfinite(hi):
        ax.axhspan(lo, hi, color="C0", alpha=0.15, label=f"95% CI [{lo:.3f}, {hi:.3f}]")
    ax.axhline(0.0, color="0.3", linewidth=0.6)
    ax.set_xticks(pos)
    if len(records) <= _MAX_LABELLED:
        ax.set_xticklabels([r.record_id for r in records], rotation=90, fontsize=7)
    else:
        ax.set_xticklabels([])
    ax.set_xlabel(f"record ({len(records)}, sorted by skill)")
    ax.set_ylabel("skill = 1 - MAE model / MAE baseline")
    ax.set_title("Skill per record")
    ax.legend(fontsize=7, loc="best")
    if n_ex:
        _draw_examples(fig, grid, examples, n_ex, result.best_baseline)
    return fig


def _draw_examples(fig, grid, examples: ForecastExamples, n: int, best: str) -> None:
    horizon, steps = examples.y.shape[1], examples.x.shape[1]
    keep = min(steps, _HISTORY_HORIZONS * horizon)
    scale = 1.0 / examples.fs if examples.fs else 1.0
    past, future = (np.arange(keep) - keep) * scale, np.arange(horizon) * scale
    shown = {name: b for name, b in examples.baselines.items() if name in (best, "cycle_median")}
    for w in range(n):
        ax = fig.add_subplot(grid[1, w])
        t = examples.target_idx[0]
        ax.plot(past, examples.x[w, -keep:, t], color="0.55", label="input")
        ax.plot(future, examples.y[w, :, 0], color="k", label="truth")
        ax.plot(future, examples.y_hat[w, :, 0], color="C3", label="model")
        for name, b in shown.items():
            ax.plot(future, b[w, :, 0], linestyle="--", linewidth=0.9, label=name)
        label = examples.labels[w] if w < len(examples.labels) else f"window {w}"
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("s" if examples.fs else "samples")
        if w == 0:
            ax.legend(fontsize=7)
