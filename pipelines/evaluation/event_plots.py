"""Pictures of trends and the AHE warning, on bare matplotlib `Figure`s (`plots.new_figure`).

- `plot_fan`: one case: the history, the 10-90 % band, the median forecast, the truth, the
  60 mmHg line; the alarm state and probability in the title with record, model version and cut.
- `plot_roc`: ROC curves of the model and MAP alone on the same cases, each warning's operating
  point (its alarm threshold) marked, AUROC with its interval in the legend.
- `plot_calibration`: reliability (mean predicted probability against observed frequency, the
  diagonal for reference) above the number of cases per bin.
- `plot_trend_error`: MAE per minute ahead of the model and every baseline.

Legends sit below the axes (off the data); time ahead is in minutes. Writing the PNGs is
`pipelines.evaluation.event_report`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from pipelines.evaluation.event_scores import Calibration
from pipelines.evaluation.plots import new_figure

EVENT_LINE_MMHG = 60.0  # the AHE rule's threshold
_COLORS = {"model": "C3", "map_alone": "C0"}
_NAMES = {"model": "model", "map_alone": "MAP alone (mean of last 5 min)"}


def _legend_below(fig, ax, ncol: int) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def plot_fan(history: np.ndarray, truth: np.ndarray, median: np.ndarray,
             band: tuple[np.ndarray, np.ndarray] | None, *, title: str,
             band_label: str = "10-90 % band"):
    """One case: `history` `(input_steps,)` mmHg up to the forecast origin (minute 0), then
    `truth` and `median` `(horizon,)` at minutes 1..horizon, `band` (low, high) `(horizon,)`."""
    fig = new_figure(8.0, 4.6)
    ax = fig.add_subplot()
    past = np.arange(len(history)) - len(history) + 1  # ..., -1, 0
    ahead = np.arange(1, len(truth) + 1)
    ax.axhline(EVENT_LINE_MMHG, color="C3", linestyle="--", linewidth=1.0,
               label=f"{EVENT_LINE_MMHG:g} mmHg (AHE rule)")
    ax.axvline(0.0, color="0.6", linewidth=0.8)
    ax.plot(past, history, color="0.35", linewidth=1.2, label="history")
    ax.plot(ahead, truth, color="k", linewidth=1.4, label="what happened")
    if band is not None:
        ax.fill_between(ahead, band[0], band[1], color="C1", alpha=0.25, linewidth=0,
                        label=band_label)
    ax.plot(ahead, median, color="C1", linewidth=1.8, label="median forecast")
    values = np.concatenate([history, truth, median, *(band or ())])
    values = values[np.isfinite(values)]
    lo = min(float(values.min()), EVENT_LINE_MMHG) if values.size else EVENT_LINE_MMHG
    hi = float(values.max()) if values.size else EVENT_LINE_MMHG + 40
    ax.set_ylim(lo - 5.0, hi + 5.0)
    ax.set_xlim(past[0], ahead[-1])
    ax.set_xlabel("minutes from the forecast origin")
    ax.set_ylabel("MAP (mmHg)")
    ax.set_title(title, fontsize=10)
    _legend_below(fig, ax, ncol=5)
    return fig


def plot_roc(label: np.ndarray, scores: Mapping[str, np.ndarray],
             legend: Mapping[str, str], operating: Mapping[str, tuple[float, float]], *,
             title: str):
    """ROC curves of each warning's `scores[name]` `(n,)` against `label` `(n,)` (the same
    cases); `legend[name]` its legend text (AUROC), `operating[name]` (false positive rate,
    sensitivity) at its alarm threshold."""
    from sklearn.metrics import roc_curve

    fig = new_figure(6.2, 6.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1.0, label="chance")
    y = np.asarray(label, dtype=bool)
    # the model last and thinner, on top: where both curves agree, both stay visible
    for name in sorted(scores, key=lambda n: n == "model"):
        color = _COLORS.get(name, None)
        if y.all() or not y.any():
            continue
        fpr, tpr, _ = roc_curve(y, scores[name])
        ax.plot(fpr, tpr, color=color, linewidth=1.6 if name == "model" else 3.2,
                alpha=1.0 if name == "model" else 0.6, label=legend.get(name, name))
        if name in operating:
            ax.plot(*operating[name], "o", color=color, markersize=7, markeredgecolor="k",
                    label=f"{_NAMES.get(name, name)}: at its alarm threshold")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title, fontsize=10)
    _legend_below(fig, ax, ncol=1)
    return fig


def plot_calibration(calibrations: Mapping[str, Calibration], *, title: str):
    """Reliability of each warning's probability (`calibration_bins`) above the cases per bin."""
    fig = new_figure(6.4, 6.6)
    grid = fig.add_gridspec(2, 1, height_ratios=[2.3, 1.0])
    ax = fig.add_subplot(grid[0])
    counts_ax = fig.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1.0, label="perfect calibration")
    n = len(calibrations)
    for k, (name, cal) in enumerate(calibrations.items()):
        color = _COLORS.get(name, f"C{k + 2}")
        edges = np.asarray(cal.edges)
        width = float(np.diff(edges).min())
        count = np.asarray(cal.count)
        used = count > 0
        ax.plot(np.asarray(cal.mean_predicted)[used], np.asarray(cal.observed)[used], "o-",
                color=color, linewidth=1.4, label=_NAMES.get(name, name))
        left = edges[:-1] + width * (0.1 + 0.8 * k / n)
        counts_ax.bar(left, count, width=0.8 * width / n, align="edge", color=color)
        for x, c in zip(left[used], count[used], strict=True):
            counts_ax.annotate(str(int(c)), (x + 0.4 * width / n, c), ha="center",
                               va="bottom", fontsize=7)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("observed frequency of AHE")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelbottom=False)
    counts_ax.set_xlabel("predicted probability of AHE in the next 60 min")
    counts_ax.set_ylabel("cases per bin")
    top = max((max(c.count) for c in calibrations.values()), default=1)
    counts_ax.set_ylim(0, top * 1.25 + 1)
    _legend_below(fig, ax, ncol=3)
    return fig


def plot_trend_error(by_minute: Mapping[str, np.ndarray], *, title: str):
    """MAE (mmHg) per minute ahead `(horizon,)` of each forecaster, the model drawn thickest."""
    fig = new_figure(7.5, 4.4)
    ax = fig.add_subplot()
    colors = iter(("C0", "C1", "C2", "C4", "C5", "C6"))
    for name in sorted(by_minute, key=lambda n: n == "model"):  # the model last, on top
        mae = np.asarray(by_minute[name], dtype=np.float64)
        model = name == "model"
        ax.plot(np.arange(1, len(mae) + 1), mae, label=name, linewidth=2.0 if model else 1.2,
                color="C3" if model else next(colors), zorder=3 if model else 2)
    ax.set_xlabel("minutes ahead")
    ax.set_ylabel("MAE (mmHg)")
    ax.set_xlim(1, max((len(v) for v in by_minute.values()), default=2))
    ax.set_ylim(bottom=0.0)
    ax.set_title(title, fontsize=10)
    _legend_below(fig, ax, ncol=len(by_minute))
    return fig


def fmt_interval(value: float, ci: tuple[float, float]) -> str:
    """`0.81 [0.66, 0.93]`, or `n/a` for a value that could not be computed."""
    if not math.isfinite(value):
        return "n/a"
    lo, hi = ci
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{value:.2f} [{lo:.2f}, {hi:.2f}]"
    return f"{value:.2f}"
