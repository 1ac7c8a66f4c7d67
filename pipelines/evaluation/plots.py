"""Figures of an evaluation, drawn on bare matplotlib `Figure`s (no pyplot state, no display).

- `new_figure`: a Figure with the Agg canvas and a constrained layout;
- `plot_records`: skill per record (sorted bars against the best baseline, dots against
  `cycle_median`, the pooled skill as a line in its 95 % interval band), and beneath it forecast
  against truth for the best, median and worst record (`ForecastExamples` with `labels`);
- the vocabulary every forecast picture shares (`pulsecast predict`'s plot and the report's):
  `time_axis` (ms, s or minutes, by what is shown), `draw_forecast` (history solid grey, truth
  dashed black, the model in red with its band, the origin a dotted vertical line at 0) and
  `value_label` (a channel and its unit).

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
# History drawn before a forecast, in horizons: the last beats a forecast continues, not a whole
# window that shrinks the forecast to a sliver at the right edge.
HISTORY_HORIZONS = 3
TREND_FS = 1 / 30  # Hz: a series sampled this slowly is a trend, and its time reads in minutes
_MS_UP_TO_S = 2.0  # a span this short reads in ms (a beat's detail)
_MIN_FROM_S = 20 * 60.0  # a span this long reads in minutes

# The look every forecast picture shares: `pulsecast predict`'s plot and the report's examples.
HISTORY_STYLE = {"color": "0.55", "linewidth": 1.0, "zorder": 2}
TRUTH_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.1, "zorder": 4}
FORECAST_STYLE = {"color": "tab:red", "linewidth": 1.5, "zorder": 3}
BAND_STYLE = {"color": "tab:red", "alpha": 0.18, "linewidth": 0, "zorder": 1}
ORIGIN_STYLE = {"color": "0.25", "linestyle": ":", "linewidth": 1.0, "zorder": 1}
BASELINE_STYLE = {"linestyle": ":", "linewidth": 1.1, "zorder": 2}
# One color per baseline in every picture (never the model's red): the bars of records.png share
# the color of the baseline they compare against.
BASELINE_COLORS = {"persistence": "tab:blue", "cycle_median": "tab:orange",
                   "last_cycle": "tab:green", "ridge_ar": "tab:purple", "mean_last": "tab:brown"}
_OTHER_COLORS = ("tab:olive", "tab:cyan", "tab:pink", "tab:gray")


def baseline_color(name: str) -> str:
    """The color of baseline `name` (stable across pictures; never red, the model's)."""
    return BASELINE_COLORS.get(name) or _OTHER_COLORS[sum(map(ord, name)) % len(_OTHER_COLORS)]


@dataclass(frozen=True)
class TimeAxis:
    """How times are written on an axis: `unit` ("ms", "s", "min", or "steps" without a rate)
    and `per_s`, the units in a second (`of(seconds)` converts)."""

    unit: str
    per_s: float

    def of(self, seconds) -> np.ndarray:
        return np.asarray(seconds, dtype=np.float64) * self.per_s


STEPS = TimeAxis("steps", 1.0)  # no sampling rate known: times are counted in samples


def time_axis(span_s: float, fs: float | None = None) -> TimeAxis:
    """The unit a person reads a span of `span_s` seconds in: minutes for trends (`fs` at or
    below 1/30 Hz, or a span over 20 minutes), ms for a span up to 2 s, else seconds."""
    if (fs is not None and fs <= TREND_FS) or span_s > _MIN_FROM_S:
        return TimeAxis("min", 1 / 60)
    if span_s <= _MS_UP_TO_S:
        return TimeAxis("ms", 1000.0)
    return TimeAxis("s", 1.0)


def format_duration(seconds: float) -> str:
    """`0.08` -> "80 ms", `1.0` -> "1 s", `900` -> "15 min" (3 significant digits)."""
    if seconds < 1.0:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 600.0:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min"


def value_label(name: str, unit: str | None) -> str:
    """A y axis: the channel and its unit, `"II (mV)"`; says so when the unit is not recorded."""
    return f"{name} ({unit})" if unit else f"{name} (unit not recorded)"


def units_label(units) -> str:
    """The unit of an error pooled over targets (`pipelines.report_format.pooled_unit`): `"mV"`,
    `"mixed units: mV, mmHg"`, or says it is not recorded."""
    from pipelines.report_format import pooled_unit

    return pooled_unit(units) or "unit not recorded"


def draw_forecast(ax, axis: TimeAxis, t_history_s, history, t_forecast_s, forecast, *,
                  t_truth_s=None, truth=None, band=None, band_label: str = "80 % band",
                  forecast_label: str = "forecast") -> None:
    """History, origin marker (a dotted vertical line at time 0), band, forecast and truth on
    `ax`, times in seconds from the forecast origin (history <= 0 < forecast)."""
    ax.plot(axis.of(t_history_s), history, label="history", **HISTORY_STYLE)
    ax.axvline(0.0, label="forecast origin", **ORIGIN_STYLE)
    if band is not None:
        ax.fill_between(axis.of(t_forecast_s), band[0], band[1], label=band_label, **BAND_STYLE)
    ax.plot(axis.of(t_forecast_s), forecast, label=forecast_label, **FORECAST_STYLE)
    if truth is not None and np.isfinite(np.asarray(truth, dtype=np.float64)).any():
        ax.plot(axis.of(t_truth_s), truth, label="truth (what happened)", **TRUTH_STYLE)


def time_from_origin_label(axis: TimeAxis) -> str:
    return f"time from the forecast origin ({axis.unit})"


@dataclass(frozen=True)
class ForecastExamples:
    """A few windows to draw: `x` `(n, input_steps, channels)`, `y`/`y_hat` `(n, horizon, targets)`.

    `target_idx` maps target k to its input channel (to draw the history); `baselines` holds
    optional baseline forecasts shaped like `y`; `fs` (Hz) puts the time axis in ms, s or
    minutes (`time_axis`; steps without it); `labels` titles each window
    (`"best record: a103l\nskill 0.410"`).
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
    """Skill per record, then best / median / worst record examples (when given).

    One mark per quantity, each in the legend as drawn: bars (skill against the best baseline),
    dots (skill against `cycle_median`), a line in a band (the pooled skill and its 95 % CI).
    """
    records = sorted(result.records, key=lambda r: (-math.inf if not math.isfinite(r.skill)
                                                    else r.skill))
    n_ex = min(len(examples.x), 3) if examples is not None else 0
    fig = new_figure(max(12.0, min(0.18 * len(records) + 3.0, 20.0)),
                     4.2 + (3.6 if n_ex else 0))
    grid = fig.add_gridspec(2 if n_ex else 1, max(n_ex, 1),
                            height_ratios=[1.3, 1.0] if n_ex else [1.0])
    ax = fig.add_subplot(grid[0, :])
    pos = np.arange(len(records))
    best = result.best_baseline
    skills = np.array([_finite(r.skill) for r in records])
    ax.bar(pos, skills, color=baseline_color(best), width=0.8,
           label=f"skill vs {best}, per record")
    vs_cm = np.array([_finite(r.skill_vs_cycle_median) for r in records])
    if np.isfinite(vs_cm).any():
        ax.plot(pos, vs_cm, "o", color=baseline_color("cycle_median"), markeredgecolor="black",
                markeredgewidth=0.5, markersize=5, linestyle="none",
                label="skill vs cycle_median, per record")
    lo, hi = result.skill_ci95
    pooled = result.skill_mae_vs_best_baseline
    ax.axhline(pooled, color="navy", linewidth=1.3, label=f"pooled skill vs {best}: {pooled:.3f}")
    if math.isfinite(lo) and math.isfinite(hi):
        ax.axhspan(lo, hi, color="navy", alpha=0.12,
                   label=f"its 95 % CI [{lo:.3f}, {hi:.3f}]")
    ax.axhline(0.0, color="0.3", linewidth=0.6)
    ax.set_xticks(pos)
    if len(records) <= _MAX_LABELLED:
        ax.set_xticklabels([r.record_id for r in records], rotation=90, fontsize=7)
    else:
        ax.set_xticklabels([])
    ax.set_xlim(-0.7, len(records) - 0.3)
    ax.set_xlabel(f"record ({len(records)}, sorted by skill vs {best})")
    ax.set_ylabel("skill = 1 - MAE model / MAE baseline")
    ax.set_title(f"Skill per record: above 0 the model beats the baseline "
                 f"({result.n_windows} windows of {result.n_patients} patients)")
    handles, labels = ax.get_legend_handles_labels()
    rank = ("skill vs " + best + ",", "skill vs cycle_median", "pooled", "its 95 %")
    order = sorted(range(len(labels)),
                   key=lambda i: next((k for k, r in enumerate(rank)
                                       if labels[i].startswith(r)), len(rank)))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if n_ex:
        unit = result.units[0] if result.units else None
        _draw_examples(fig, grid, examples, n_ex, best, unit)
    return fig


def example_axis(examples: ForecastExamples) -> tuple[TimeAxis, int]:
    """The time axis of the examples and how many input steps of history they show
    (`HISTORY_HORIZONS` horizons, at most the whole input)."""
    horizon, steps = examples.y.shape[1], examples.x.shape[1]
    keep = min(steps, HISTORY_HORIZONS * horizon)
    if not examples.fs:
        return STEPS, keep
    return time_axis((keep + horizon) / examples.fs, examples.fs), keep


def draw_example(ax, examples: ForecastExamples, w: int, t: int, axis: TimeAxis, keep: int,
                 baselines: Mapping[str, np.ndarray]) -> None:
    """Window `w`, target `t`: its last `keep` input steps, truth, model and `baselines`, with
    time 0 at the last input sample (forecast step k is k + 1 samples ahead)."""
    step_s = 1.0 / examples.fs if examples.fs else 1.0
    past = (np.arange(keep) - keep + 1) * step_s
    future = (np.arange(examples.y.shape[1]) + 1) * step_s
    draw_forecast(ax, axis, past, examples.x[w, -keep:, examples.target_idx[t]], future,
                  examples.y_hat[w, :, t], t_truth_s=future, truth=examples.y[w, :, t],
                  forecast_label="model")
    for name, b in baselines.items():
        ax.plot(axis.of(future), b[w, :, t], label=name, color=baseline_color(name),
                **BASELINE_STYLE)


def _draw_examples(fig, grid, examples: ForecastExamples, n: int, best: str,
                   unit: str | None) -> None:
    axis, keep = example_axis(examples)
    shown = {name: b for name, b in examples.baselines.items() if name in (best, "cycle_median")}
    name = examples.target_names[0] if examples.target_names else "target"
    for w in range(n):
        ax = fig.add_subplot(grid[1, w])
        draw_example(ax, examples, w, 0, axis, keep, shown)
        label = examples.labels[w] if w < len(examples.labels) else f"window {w}"
        ax.set_title(label, fontsize=8)
        ax.set_xlabel(time_from_origin_label(axis))
        ax.set_ylabel(value_label(name, unit))
        if w == n - 1:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                      borderaxespad=0.0)
