"""`pulsecast predict`'s summary: the forecast held against what the record did next."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipelines.commands.predict import forecast_mae, render_summary, truth_at_forecast


def _window(truth: list[float]) -> dict:
    # 100 samples sent at 100 Hz from t = 0: the last one at 0.99 s; truth from 1.00 s on
    return {"signal": {"II": [0.0] * 100}, "fs": 100.0, "start_s": 0.0, "start_time": None,
            "truth": {"II": truth}}


def _answer(forecast: list[float], quantiles: dict | None = None) -> dict:
    answer = {"model_name": "ecg", "version": 3, "fs": 50.0, "units": ["mV"], "targets": ["II"],
              "forecast": {"II": forecast}}
    if quantiles:
        answer["quantiles"] = quantiles
    return answer


def test_the_truth_is_read_at_each_forecast_time_between_the_records_samples() -> None:
    window = _window([1.0 + k / 100 for k in range(10)])  # the record goes on as v(t) = t
    # forecast steps at 50 Hz after 0.99 s: 1.01, 1.03, 1.05 s
    assert truth_at_forecast(window, _answer([0.0, 0.0, 0.0]), "II") == pytest.approx(
        [1.01, 1.03, 1.05])


def test_the_mae_counts_only_the_steps_the_record_covers() -> None:
    window = _window([1.0 + k / 100 for k in range(4)])  # ends at 1.03 s: the third step is past
    assert forecast_mae(window, _answer([1.01, 1.13, 9.0]), "II") == pytest.approx(0.05)
    assert math.isnan(forecast_mae(_window([]), _answer([1.0]), "II"))


def test_the_summary_names_model_version_horizon_and_the_error() -> None:
    window = _window([1.0 + k / 100 for k in range(10)])
    text = render_summary(Path("raw/p1/r"), 60.0, window, _answer([1.01, 1.03, 1.15]))
    assert text.splitlines()[0] == "ecg v3: 3 steps (0.06 s at 50 Hz) after 60 s of raw/p1/r"
    assert "II: MAE against what happened 0.03333 mV" in text
    ended = render_summary(Path("r"), 1.0, _window([]), _answer([1.0]))
    assert "the record ends before the forecast" in ended
