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


# --- the command, against a stand-in for the server ---------------------------------------------

CONTRACT = {"channels": ["II"], "targets": ["II"], "units": ["mV"], "fs": 125.0,
            "input_steps": 250, "horizon": 125}


@pytest.fixture
def server(monkeypatch) -> list[dict]:
    """`predict._Client` answering the model's contract and a flat forecast; records each body."""
    from pipelines.commands import predict

    posted: list[dict] = []

    class FakeClient:
        def __init__(self, base: str, token: str | None, timeout_s: float) -> None:
            pass

        def get(self, path: str) -> dict:
            return {"model_name": "ecg", "version": 3, "metadata": CONTRACT}

        def post(self, path: str, body: dict) -> dict:
            posted.append(body)
            return {"model_name": "ecg", "version": 3, "fs": 125.0, "units": ["mV"],
                    "targets": ["II"], "forecast": {"II": [0.0] * 125}, "timestamps": []}

    monkeypatch.setattr(predict, "_Client", FakeClient)
    return posted


def _record(write_record) -> Path:
    import numpy as np

    t = np.arange(0, 10, 1 / 125)  # 10 s at 125 Hz
    return write_record("r1", np.sin(2 * np.pi * 1.2 * t), ["II"], fs=125.0)


def test_predict_takes_the_record_with_its_hea_suffix(server, write_record, caplog) -> None:
    from pipelines.cli import main

    record = _record(write_record)

    code = main(["predict", "--model-name", "ecg", "--record", f"{record}.hea", "--at", "5",
                 "--summary"])

    assert code == 0 and len(server) == 1
    assert len(server[0]["signal"]["II"]) == round(3.0 * 125)  # the 2 s window + 1 s margin
    assert "the record ends" not in caplog.text


def test_predict_warns_in_one_line_when_less_than_a_horizon_of_truth_remains(
        server, write_record, caplog) -> None:
    from pipelines.cli import main

    record = _record(write_record)

    assert main(["predict", "--model-name", "ecg", "--record", str(record), "--at", "9.6",
                 "--summary"]) == 0

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["the record ends 400 ms after --at 9.6 s, before the 1 s the model "
                        "forecasts: the MAE covers only that part (an earlier --at scores the "
                        "whole forecast)"]


def test_the_gap_fill_flag_is_fill_gap_s_and_max_gap_s_still_works_unlisted(
        server, write_record, capsys) -> None:
    from pipelines.cli import main

    record = _record(write_record)
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    predict_help = capsys.readouterr().out

    assert main(["predict", "--model-name", "ecg", "--record", str(record), "--at", "5",
                 "--fill-gap-s", "0.2", "--summary"]) == 0
    assert main(["predict", "--model-name", "ecg", "--record", str(record), "--at", "5",
                 "--max-gap-s", "0.3", "--summary"]) == 0
    assert [body["max_gap_s"] for body in server] == [0.2, 0.3]
    assert "--fill-gap-s" in predict_help and "--max-gap-s" not in predict_help


def test_predict_draws_the_forecast_to_out(server, write_record, tmp_path: Path) -> None:
    from pipelines.cli import main

    record = _record(write_record)
    out = tmp_path / "forecast.png"

    assert main(["predict", "--model-name", "ecg", "--record", str(record), "--at", "5",
                 "--out", str(out), "--summary"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
