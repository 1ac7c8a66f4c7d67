"""`:forecast` takes only values a signal can hold, and never answers a forecast of `null`s.

Unit tests on `serve.http.forecast` (`make_window`, `make_forecast_response`) and
`models.units`, plus the REST app in-process against a fake servable (no TensorFlow): a value
outside its unit's plausible range, or above the model's `valid_range`, is a 400 naming the
channel and the value; one at or below the low end of `valid_range` is a gap, filled like a
`null`; a model output that is not finite is a 400, not a 200 of `null`s.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest

import serve.http.forecast as fc
from models.metadata import VersionMetadata
from models.units import PLAUSIBLE, plausible_range
from serve.errors import Code, ServingError
from serve.http.app import RestApp
from serve.settings import ServerSettings
from serve.types import SignatureInfo, TensorInfo, VersionState, VersionStatus

ECG = VersionMetadata(channels=("II",), fs=50.0, input_steps=4, horizon=2, targets=("II",),
                      units=("mV",), model_name="ecg")
# The hypotension recipe's contract, shortened: per-minute MAP, `[data] valid_range`.
MAP = VersionMetadata(channels=("ABPMEAN",), fs=1 / 60, input_steps=8, horizon=2,
                      targets=("ABPMEAN",), units=("mmHg",), target_units=("mmHg",),
                      valid_range=(10.0, 300.0), model_name="hypotension")
AHE = {"ahe": {"output": "ahe_probability", "threshold": 0.4, "horizon_min": 60,
               "chosen_on": "train"}}


def _meta(unit: str) -> VersionMetadata:
    return VersionMetadata(channels=("X",), fs=50.0, input_steps=4, horizon=2, targets=("X",),
                           units=(unit,) if unit is not None else ())


def _request(values: list, fs: float = 50.0, channel: str = "II", **extra) -> fc.ForecastRequest:
    return fc.parse_forecast_request({"signal": {channel: values}, "fs": fs, **extra})


def _refused(meta: VersionMetadata, request: fc.ForecastRequest) -> str:
    """The text of the INVALID_ARGUMENT (400) `make_window` raises."""
    with pytest.raises(ServingError) as info:
        fc.make_window(request, meta)
    assert info.value.code == Code.INVALID_ARGUMENT and info.value.http_status == 400
    return info.value.message


def _minutes(values: list, **extra) -> fc.ForecastRequest:
    return _request(values, fs=1 / 60, channel="ABPMean", **extra)


# --- the unit's plausible range ------------------------------------------------------------


def test_1e30_mv_is_a_400_naming_the_channel_the_value_and_the_range() -> None:
    assert _refused(ECG, _request([0.1, 0.2, 1e30, 0.3, 0.4])) == (
        "channel 'II' holds 1e+30 mV, outside the plausible range -50..50 mV of any signal in mV"
    )


def test_minus_1e9_mmhg_is_a_400_even_where_the_model_reads_low_values_as_no_reading() -> None:
    assert _refused(MAP, _minutes([80.0] * 7 + [-1e9])) == (
        "channel 'ABPMean' holds -1000000000.0 mmHg, outside the plausible range -100..400 mmHg "
        "of any signal in mmHg"
    )


def test_a_value_anywhere_in_the_signal_is_checked_not_only_the_window() -> None:
    assert _refused(ECG, _request([1e30] + [0.1] * 100)).startswith("channel 'II' holds 1e+30 mV")


@pytest.mark.parametrize("unit", sorted(PLAUSIBLE))
def test_each_units_ends_are_taken_and_the_next_float_beyond_them_is_refused(unit: str) -> None:
    low, high = PLAUSIBLE[unit]
    window = fc.make_window(_request([low, high, low, high], channel="X"), _meta(unit))
    np.testing.assert_array_equal(window[:, 0], np.float32([low, high, low, high]))
    for outside in (np.nextafter(low, -math.inf), np.nextafter(high, math.inf)):
        text = _refused(_meta(unit), _request([0.5 * (low + high)] * 3 + [outside], channel="X"))
        assert text == (f"channel 'X' holds {float(outside)!r} {unit}, outside the plausible "
                        f"range {low:g}..{high:g} {unit} of any signal in {unit}")


def test_units_are_matched_case_insensitively() -> None:
    assert plausible_range("MMHG") == plausible_range(" mmhg ") == (-100.0, 400.0)
    assert plausible_range("μV") == plausible_range("µV") == plausible_range("UV")
    assert _refused(_meta("MV"), _request([1.0, 2.0, 3.0, 60.0], channel="X")).startswith(
        "channel 'X' holds 60.0 MV, outside the plausible range -50..50 MV")


def test_an_unknown_unit_or_none_has_no_range_and_any_float32_value_passes() -> None:
    assert plausible_range("NU") is None and plausible_range("") is None
    assert plausible_range(None) is None
    for meta in (_meta("NU"), _meta("")):
        window = fc.make_window(_request([1e30, -1e30, 7.0, 1e30], channel="X"), meta)
        np.testing.assert_array_equal(window[:, 0], np.float32([1e30, -1e30, 7.0, 1e30]))
    no_units = VersionMetadata(channels=("X",), fs=50.0, input_steps=4, horizon=2,
                               targets=("X",))
    assert fc.make_window(_request([1e30] * 4, channel="X"), no_units).shape == (4, 1)


def test_a_value_beyond_float32_is_a_400_whatever_the_unit() -> None:
    assert _refused(_meta("NU"), _request([1.0, 2.0, 3.0, 1e300], channel="X")) == (
        "channel 'X' holds 1e+300 NU, beyond the +-3.40282e+38 a float32 input holds")


def test_null_and_nan_are_no_reading_filled_like_any_gap() -> None:
    for missing in (None, float("nan")):
        window = fc.make_window(_request([1.0, 2.0, missing, 4.0, 5.0]), ECG)
        np.testing.assert_array_equal(window[:, 0], [2.0, 3.0, 4.0, 5.0])


def test_an_infinite_value_is_still_a_400() -> None:
    with pytest.raises(ServingError, match=r"channel 'II' holds an infinite value"):
        _request([1.0, math.inf, 2.0, 3.0])


# --- the model's valid_range ---------------------------------------------------------------


def test_values_at_or_below_the_low_end_are_gaps_filled_linearly() -> None:
    # 10 (the low end itself), 3 and -40 (inside the unit's range) are no reading, as at ingest
    values = [80.0, 82.0, 84.0, 10.0, 88.0, 3.0, -40.0, 94.0, 96.0]
    request = _minutes(values, max_gap_s=180.0)
    window = fc.make_window(request, MAP)
    np.testing.assert_allclose(window[:, 0], [82, 84, 86, 88, 90, 92, 94, 96])
    assert request.signal["ABPMean"][3] == 10.0  # the request is not changed


def test_a_run_of_low_values_longer_than_max_gap_s_is_refused_as_a_gap() -> None:
    text = _refused(MAP, _minutes([80.0] * 5 + [0.0] * 4 + [90.0], max_gap_s=180.0))
    assert text.startswith("channel 'ABPMEAN' has a gap of 240.000 s (4 samples)")


def test_a_value_above_the_high_end_is_a_400_naming_the_channel_and_the_value() -> None:
    assert _refused(MAP, _minutes([80.0] * 8 + [412.0])) == (
        "channel 'ABPMean' holds 412.0 mmHg, above the 300 mmHg this model takes; values at or "
        "below 10 mmHg are read as no reading"
    )
    # the high end itself is a reading
    assert fc.make_window(_minutes([80.0] * 7 + [300.0]), MAP)[-1, 0] == 300.0


def test_a_valid_range_without_units_names_bare_values() -> None:
    meta = MAP.replace(units=(), target_units=())
    assert _refused(meta, _minutes([80.0] * 7 + [301.0])) == (
        "channel 'ABPMean' holds 301.0, above the 300 this model takes; values at or below 10 "
        "are read as no reading"
    )


def test_a_model_without_valid_range_reads_low_values_as_values() -> None:
    meta = MAP.replace(valid_range=None)
    window = fc.make_window(_minutes([80.0] * 7 + [5.0]), meta)
    assert window[-1, 0] == 5.0


# --- the model's output --------------------------------------------------------------------


def _outputs(forecast, quantiles=None, ahe=None) -> dict[str, np.ndarray]:
    out = {"forecast": np.asarray(forecast, dtype=np.float32).reshape(1, -1, 1)}
    if quantiles is not None:
        out["quantiles"] = np.asarray(quantiles, dtype=np.float32).reshape(1, -1, 1, 2)
    if ahe is not None:
        out["ahe_probability"] = np.float32([[ahe]])
    return out


def _not_forecast(meta: VersionMetadata, outputs: dict) -> ServingError:
    with pytest.raises(ServingError) as info:
        fc.make_forecast_response("ecg", 3, meta, outputs, _request([0.0] * 4))
    assert info.value.code == Code.FAILED_PRECONDITION and info.value.http_status == 400
    return info.value


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_forecast_is_a_failed_precondition_not_a_forecast_of_nulls(bad) -> None:
    assert _not_forecast(ECG, _outputs([0.1, bad])).message == (
        "model ecg version 3 produced a non-finite forecast (NaN or infinity) from an input that "
        "passed every check: this version cannot forecast this signal"
    )


def test_non_finite_quantiles_or_event_probabilities_are_refused_the_same_way() -> None:
    meta = ECG.replace(quantiles=(0.1, 0.9), events=AHE)
    doc = fc.make_forecast_response("ecg", 3, meta, _outputs([1, 2], [0, 2, 1, 3], 0.5),
                                    _request([0.0] * 4))
    assert doc["forecast"] == {"II": [1.0, 2.0]} and doc["events"]["ahe"]["alarm"] is True
    assert "non-finite quantiles" in _not_forecast(
        meta, _outputs([1, 2], [0, math.nan, 1, 3], 0.5)).message
    assert "non-finite ahe probability" in _not_forecast(
        meta, _outputs([1, 2], [0, 2, 1, 3], math.nan)).message


# --- through the REST app ------------------------------------------------------------------


class _Servable:
    """`ecg` version 3, whose model answers `answer` whatever its input."""

    name, version, path, runtime = "ecg", 3, None, "fake"
    metadata = ECG.to_dict()
    signatures = {"serving_default": SignatureInfo(
        "serving_default", "tensorflow/serving/predict",
        {"signal": TensorInfo("signal:0", "DT_FLOAT", (-1, 4, 1))},
        {"forecast": TensorInfo("f:0", "DT_FLOAT", (-1, 2, 1))},
    )}

    def __init__(self, answer: float) -> None:
        self.answer = answer

    def predict(self, signature_name, inputs, output_filter=()):
        return {"forecast": np.full((1, 2, 1), self.answer, dtype=np.float32)}


class _Manager:
    def __init__(self, answer: float) -> None:
        self.answer = answer

    def model_names(self):
        return ["ecg"]

    @contextmanager
    def acquire(self, name, version=None, label=None):
        yield _Servable(self.answer)

    def status(self, name, version=None, label=None):
        return [VersionStatus(3, VersionState.AVAILABLE)]

    def is_ready(self, name):
        return True

    def available_versions(self, name):
        return [3]


def _post(answer: float, body: bytes) -> tuple[int, dict]:
    testclient = pytest.importorskip("starlette.testclient")
    app = RestApp(_Manager(answer), ServerSettings(rest_api_num_threads=2))
    with testclient.TestClient(app) as c:
        r = c.post("/v1/models/ecg:forecast", content=body,
                   headers={"Content-Type": "application/json"})
        return r.status_code, r.json()


def test_the_server_answers_1e30_with_a_400_naming_it_not_a_forecast_of_nulls() -> None:
    status, doc = _post(0.5, b'{"signal": {"II": [0.1, 0.2, 1e30, 0.3, 0.4]}, "fs": 50}')
    assert (status, doc) == (400, {"error": "channel 'II' holds 1e+30 mV, outside the plausible "
                                            "range -50..50 mV of any signal in mV"})


def test_the_server_fills_a_nan_and_answers_a_finite_forecast() -> None:
    status, doc = _post(0.5, b'{"signal": {"II": [0.1, NaN, 0.3, null, 0.5]}, "fs": 50}')
    assert status == 200 and doc["forecast"] == {"II": [0.5, 0.5]}


def test_the_server_never_answers_a_200_of_nulls_when_the_model_gives_nan() -> None:
    status, doc = _post(math.nan, b'{"signal": {"II": [0.1, 0.2, 0.3, 0.4]}, "fs": 50}')
    assert status == 400 and doc["error"].startswith(
        "model ecg version 3 produced a non-finite forecast (NaN or infinity)")
