"""`:forecast` costs what a request weighs and answers a 400, never a 500, for any value: a rate
whose exact ratio to the model's needs huge terms is resampled on a bounded grid (or refused
naming it), and a start time whose forecast passes the year 9999 is refused naming it.

Unit tests on `serve.http.forecast` (`parse_forecast_request`, `make_window`,
`make_forecast_response`); no server.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import serve.http.forecast as fc
from models.conditioning import condition_tail
from models.metadata import VersionMetadata
from serve.errors import Code, ServingError

META = VersionMetadata(channels=("II",), fs=125.0, input_steps=500, horizon=8, targets=("II",),
                       units=("mV",), model_name="limits")
PROBE_FS = 5.813946611267183  # 2,113,517/98,303 of 125 Hz within 1e-6: 42 million taps unbounded


def _request(x: np.ndarray, fs: float, **extra) -> fc.ForecastRequest:
    return fc.parse_forecast_request({"signal": {"II": x.tolist()}, "fs": fs, **extra})


def _sine(n: int, fs: float, f_hz: float = 0.5) -> np.ndarray:
    return np.sin(2 * np.pi * f_hz * np.arange(n) / fs)


def _refused(call, *args) -> str:
    """The text of the INVALID_ARGUMENT `call(*args)` raises."""
    with pytest.raises(ServingError) as info:
        call(*args)
    assert info.value.code == Code.INVALID_ARGUMENT and info.value.http_status == 400
    assert "\n" not in info.value.message
    return info.value.message


def _forecast(meta: VersionMetadata, request: fc.ForecastRequest) -> dict:
    outputs = {"forecast": np.zeros((1, meta.horizon, len(meta.targets)), dtype=np.float32)}
    return fc.make_forecast_response("limits", 1, meta, outputs, request)


# --- rates ----------------------------------------------------------------------------------


def test_the_5_8_hz_probe_is_answered_fast_with_a_window_on_its_signals_clock() -> None:
    request = _request(_sine(49, PROBE_FS), PROBE_FS)
    t0 = time.perf_counter()
    window = fc.make_window(request, META)
    took = time.perf_counter() - t0
    assert took < 5.0, f"took {took:.2f} s"  # about 10 ms; 8.5 s and 2.1 GB unbounded
    assert window.shape == (500, 1) and np.isfinite(window).all()
    # the last of the signal's 1054 samples at 125 Hz; away from the end, where the filter reaches
    # past the signal, the window is the sine itself
    t = np.arange(1054 - 500, 1054) / 125
    np.testing.assert_allclose(window[:-250, 0], np.sin(2 * np.pi * 0.5 * t[:-250]), atol=2e-3)


@pytest.mark.parametrize("fs", [360.0, 250.0, 500.0, 100.0])
def test_a_rate_whose_ratio_fits_the_bound_gives_ingests_numbers_bit_for_bit(fs) -> None:
    x = _sine(int(10 * fs), fs, f_hz=1.3)
    x[-int(0.5 * fs) : -int(0.5 * fs) + 3] = np.nan  # a short gap, filled
    want = condition_tail(x, fs, 125.0, 500, fc.DEFAULT_MAX_GAP_S, "II").astype(np.float32)
    np.testing.assert_array_equal(fc.make_window(_request(x, fs), META)[:, 0], want)


def test_a_rate_no_bounded_ratio_places_closely_is_a_400_naming_it(monkeypatch) -> None:
    # At 1000, MIMIC's 249.89 Hz has no ratio closer than 1/2: 0.14 samples off at the window's
    # ends (at the server's 5000 it is resampled within 1e-4 of the exact method)
    monkeypatch.setattr(fc, "MAX_RATIO_TERM", 1000)
    text = _refused(fc.make_window, _request(_sine(2500, 249.89), 249.89), META)
    assert text == (
        "'fs' of 249.89 Hz has no resampling ratio to the model's 125 Hz with terms up to 1000 "
        "that keeps the 625 samples of the window and its margin within 0.05 samples of their "
        "times (the closest is off by 0.138): resample the signal to 125 Hz, or to a rate with "
        "a simpler ratio to it, before sending"
    )


def test_a_rate_more_than_max_ratio_term_times_the_models_is_a_400_naming_it() -> None:
    fs = 125.0 * fc.MAX_RATIO_TERM + 0.5  # a short signal: the rate is refused first
    text = _refused(fc.make_window, _request(np.zeros(10), fs), META)
    assert text == ("'fs' of 625000.5 Hz is too high for a model sampled at 125 Hz (at most "
                    "5000x downsampling): downsample the signal first")


def test_the_most_downsampling_allowed_is_answered() -> None:
    fs = 125.0 * fc.MAX_RATIO_TERM
    window = fc.make_window(_request(_sine(int(4.5 * fs), fs), fs), META)
    assert np.isfinite(window).all()


# --- times ----------------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["9999-12-31T23:59:59", "9999-12-31T23:59:59+14:00",
                                   "9999-12-31T23:59:59.999999-12:00"])
def test_a_far_future_start_time_is_a_400_naming_it_before_the_model_runs(start) -> None:
    request = _request(_sine(500, 100.0), 100.0, start_time=start)
    text = _refused(fc.make_window, request, META)
    assert text.startswith(f"'start_time' {start} plus the signal (4.99 s) and the forecast "
                           "horizon (0.064 s) passes the year 9999")
    assert _refused(_forecast, META, request) == text  # the response refuses it too


def test_a_signal_long_and_slow_enough_to_run_past_the_year_9999_is_a_400() -> None:
    # 2000 samples at 0.01 Hz are 55 hours: from two days before the end of 9999
    meta = VersionMetadata(channels=("II",), fs=1.0, input_steps=4, horizon=2, targets=("II",),
                           units=("mV",), model_name="slow")
    request = _request(_sine(2000, 0.01, f_hz=0.001), 0.01, start_time="9999-12-30T00:00:00")
    assert _refused(fc.make_window, request, meta).startswith(
        "'start_time' 9999-12-30T00:00:00 plus the signal (199900 s) and the forecast horizon "
        "(2 s) passes the year 9999")


def test_an_aware_start_time_just_inside_the_calendar_keeps_its_offset() -> None:
    request = _request(_sine(500, 100.0), 100.0, start_time="9999-12-31T23:59:00-05:00")
    fc.make_window(request, META)
    stamps = _forecast(META, request)["timestamps"]
    assert stamps[0] == "9999-12-31T23:59:04.998-05:00"
    assert stamps[-1] == "9999-12-31T23:59:05.054-05:00"


def test_the_earliest_start_time_gives_times_after_it() -> None:
    request = _request(_sine(500, 100.0), 100.0, start_time="0001-01-01T00:00:00")
    fc.make_window(request, META)
    assert _forecast(META, request)["timestamps"][0] == "0001-01-01T00:00:04.998"


def test_without_a_start_time_the_times_are_seconds_after_the_end() -> None:
    request = _request(_sine(500, 100.0), 100.0)
    assert _forecast(META, request)["timestamps"] == [0.008, 0.016, 0.024, 0.032, 0.04, 0.048,
                                                      0.056, 0.064]
