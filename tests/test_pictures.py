"""The pictures people read: `pulsecast predict --out`'s forecast plot and the evaluation report's
records.png, forecast_examples.png and error_by_step.png. Each names what it shows in its title,
every axis with its unit, keeps its legend off the data, and puts time ahead in ms, s or minutes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.commands.predict import make_forecast_figure, write_forecast_plot
from pipelines.evaluation.breakdown import score_records
from pipelines.evaluation.metrics import compute_evaluation
from pipelines.evaluation.plots import ForecastExamples, format_duration, plot_records, time_axis
from pipelines.evaluation.report import _plot_error_by_step, _plot_examples, write_report


def _beat(t: np.ndarray) -> np.ndarray:
    return np.exp(-(((t * 1.2) % 1.0 - 0.3) / 0.02) ** 2)


def _window_and_answer(fs_model: float = 50.0, horizon: int = 25, truth_s: float = 1.0):
    """2 s sent at 100 Hz ending at 60 s; a `horizon`-step forecast at `fs_model` with q0.1/q0.9."""
    fs = 100.0
    t = np.arange(5800, 6000) / fs
    truth = _beat(np.arange(6000, 6000 + int(truth_s * fs)) / fs)
    window = {"signal": {"II": _beat(t).tolist()}, "fs": fs, "start_s": 58.0,
              "start_time": None, "truth": {"II": truth.tolist()}}
    fc = _beat(59.99 + np.arange(1, horizon + 1) / fs_model)
    answer = {"model_name": "ecg", "version": 3, "fs": fs_model, "units": ["mV"],
              "targets": ["II"], "forecast": {"II": (fc + 0.01).tolist()},
              "quantiles": {"0.1": {"II": (fc - 0.1).tolist()},
                            "0.9": {"II": (fc + 0.1).tolist()}}}
    return window, answer


def _legend_is_off_the_data(fig) -> bool:
    fig.canvas.draw()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            box, data = legend.get_window_extent(), ax.get_window_extent()
            if box.x0 < data.x1 and box.y0 < data.y1 and box.x1 > data.x0 and box.y1 > data.y0:
                return False
    return True


def test_the_forecast_plot_names_record_version_and_error_with_its_unit() -> None:
    window, answer = _window_and_answer()

    fig = make_forecast_figure(window, answer, Path("data/raw/p07/r0"), 60.0)
    ax = fig.axes[0]

    assert fig.get_suptitle() == "ecg v3, record p07/r0: 500 ms forecast from 60 s into the record"
    assert ax.get_title().startswith("II: MAE ") and " mV against what happened" in ax.get_title()
    assert ax.get_ylabel() == "II (mV)"
    assert ax.get_xlabel() == "time from the forecast origin (ms)"  # 1.5 s history + 0.5 s
    assert _legend_is_off_the_data(fig)


def test_the_forecast_plot_marks_the_origin_and_zooms_on_the_last_horizons() -> None:
    window, answer = _window_and_answer()

    ax = make_forecast_figure(window, answer, Path("r0"), 60.0).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}

    assert list(lines["forecast origin"].get_xdata()) == [0, 0]
    history = lines["history"].get_xdata()
    assert history[-1] == 0 and history[0] == pytest.approx(-1500)  # 3 horizons of 500 ms
    assert lines["forecast"].get_xdata()[-1] == pytest.approx(500)
    assert lines["history"].get_linestyle() == "-" and lines["history"].get_color() == "0.55"
    assert lines["truth (what happened)"].get_linestyle() == "--"
    assert lines["truth (what happened)"].get_color() == "black"
    assert ax.get_legend_handles_labels()[1][2] == "80 % band (q0.1-q0.9)"
    left, right = ax.get_xlim()
    assert -1600 < left < -1500 and 500 < right < 520


def test_a_trend_forecast_reads_in_minutes_and_says_where_the_record_ends() -> None:
    fs = 1 / 60
    window = {"signal": {"MAP": [80.0] * 121}, "fs": fs, "start_s": 0.0, "start_time": None,
              "truth": {"MAP": [81.0] * 10}}
    answer = {"model_name": "vitals", "version": 2, "fs": fs, "units": ["mmHg"],
              "targets": ["MAP"], "forecast": {"MAP": [82.0] * 15}}

    fig = make_forecast_figure(window, answer, Path("3000003/3000003n"), 7260.0)

    assert fig.axes[0].get_xlabel() == "time from the forecast origin (min)"
    assert fig.get_suptitle() == ("vitals v2, record 3000003/3000003n: 15 min forecast from "
                                  "7260 s (2:01:00) into the record")
    assert fig.axes[0].get_title() == ("MAP: MAE 1 mmHg against what happened in the first "
                                       "10 min (the record ends)")


def test_the_forecast_plot_is_written_as_a_png(tmp_path: Path) -> None:
    window, answer = _window_and_answer()

    write_forecast_plot(tmp_path / "out" / "forecast.png", window, answer, Path("r0"), 60.0)

    data = (tmp_path / "out" / "forecast.png").read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 10_000
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["forecast.png"]  # no temp left


@pytest.mark.parametrize(("span_s", "fs", "unit"), [
    (0.08, 50.0, "ms"), (2.0, 125.0, "ms"), (4.0, 125.0, "s"), (35.0, 10.0, "s"),
    (60.0, 1 / 60, "min"), (3600.0, None, "min"),
])
def test_time_reads_in_ms_s_or_minutes_by_what_is_shown(span_s, fs, unit) -> None:
    assert time_axis(span_s, fs).unit == unit


def test_durations_are_written_as_people_say_them() -> None:
    assert [format_duration(s) for s in (0.08, 1.0, 12.5, 900.0)] == [
        "80 ms", "1 s", "12.5 s", "15 min"]


def _evaluation(units: tuple[str, ...] = ("mV",), fs: float | None = 125.0):
    rng = np.random.default_rng(0)
    n, horizon, steps = 40, 125, 1000
    patients = np.array([f"p{i % 10:02d}" for i in range(n)])
    records = np.array([f"{p}-r{i % 2}" for i, p in enumerate(patients)])
    x = rng.normal(size=(n, steps, 1))
    y = rng.normal(size=(n, horizon, 1))
    y_model = y + rng.normal(scale=0.5, size=y.shape)
    baselines = {"persistence": np.repeat(x[:, -1:, :], horizon, axis=1),
                 "cycle_median": y + rng.normal(scale=0.7, size=y.shape)}
    result = compute_evaluation(y, y_model, baselines, patients, n_boot=50)
    result = dataclasses.replace(
        result, fs=fs, units=units,
        records=score_records(y, y_model, baselines, records, patients, "persistence"))
    examples = ForecastExamples(x=x[:3], y=y[:3], y_hat=y_model[:3], target_idx=(0,),
                                baselines={k: b[:3] for k, b in baselines.items()},
                                target_names=("II",), fs=fs,
                                labels=("best record: p00-r0\nskill 0.5", "median", "worst"))
    return result, examples


def test_records_png_draws_one_mark_per_quantity_with_a_legend_that_matches() -> None:
    result, examples = _evaluation()

    fig = plot_records(result, examples)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]

    assert texts[:2] == ["skill vs persistence, per record", "skill vs cycle_median, per record"]
    assert texts[2].startswith("pooled skill vs persistence: ")
    assert texts[3].startswith("its 95 % CI [") and len(texts) == 4
    bars = list(ax.containers[0])  # the BarContainer: one bar per record
    assert len({p.get_facecolor() for p in bars}) == 1  # one color, whatever the sign
    assert ax.get_legend().legend_handles[0].get_facecolor() == bars[0].get_facecolor()
    dots = next(line for line in ax.get_lines() if line.get_marker() == "o")
    assert dots.get_linestyle() == "None"
    assert "patients" in ax.get_title()
    assert [a.get_ylabel() for a in fig.axes[1:]] == ["II (mV)"] * 3
    assert all(a.get_xlabel() == "time from the forecast origin (s)" for a in fig.axes[1:])
    assert _legend_is_off_the_data(fig)


def test_error_by_step_puts_mae_in_its_unit_against_time_ahead_in_ms() -> None:
    result, _ = _evaluation()

    ax = _plot_error_by_step(result).axes[0]
    model = next(line for line in ax.get_lines() if line.get_label() == "model")

    assert ax.get_xlabel() == "time ahead (ms)"
    assert ax.get_ylabel() == "MAE (mV)"
    assert model.get_xdata()[0] == pytest.approx(8.0) and model.get_xdata()[-1] == 1000
    assert "windows" in ax.get_title()


def test_forecast_examples_name_the_unit_of_every_y_axis_and_time_in_seconds() -> None:
    result, examples = _evaluation()

    fig = _plot_examples(examples, result.units)

    assert [ax.get_ylabel() for ax in fig.axes] == ["II (mV)", "", ""]
    assert {ax.get_xlabel() for ax in fig.axes} == {"time from the forecast origin (s)"}
    assert fig.axes[0].get_title() == "II, best record: p00-r0\nskill 0.5"
    assert _legend_is_off_the_data(fig)


def test_without_a_recorded_unit_or_rate_the_axes_say_so() -> None:
    result, examples = _evaluation(units=(), fs=None)

    step_ax = _plot_error_by_step(result).axes[0]
    example_ax = _plot_examples(dataclasses.replace(examples, fs=None)).axes[0]

    assert step_ax.get_ylabel() == "MAE (unit not recorded)"
    assert step_ax.get_xlabel() == "time ahead (steps; sampling rate not recorded)"
    assert example_ax.get_ylabel() == "II (unit not recorded)"
    assert example_ax.get_xlabel() == "time from the forecast origin (steps)"


def test_mixed_units_are_named_rather_than_pooled_silently() -> None:
    result, _ = _evaluation(units=("bpm", "%", "mmHg"))

    assert _plot_error_by_step(result).axes[0].get_ylabel() == "MAE (mixed units: bpm, %, mmHg)"


def test_the_report_writes_every_picture_non_empty(tmp_path: Path) -> None:
    result, examples = _evaluation()

    written = write_report(result, tmp_path, examples)

    for name in ("records.png", "forecast_examples.png", "error_by_step.png"):
        data = Path(written[name]).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 10_000, name
    assert not math.isnan(result.skill_mae_vs_best_baseline)
