"""The hypotension recipe end to end, as a user runs it: `pulsecast synth --kind map`,
`pulsecast ingest --config configs/hypotension.toml`, `pulsecast train`, then `pulsecast serve`
answering `:forecast` with the forecast, its quantiles and the AHE warning, and `:predict` with
the `ahe_probability` output a stock TF Serving client reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from live_server import LiveServer

from pipelines.cli import main

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A hypotension version trained for 2 epochs on a synthetic MAP cohort; returns the root
    (raw/, ds/, store/, runs/)."""
    root = tmp_path_factory.mktemp("hypotension")
    recipe = (REPO / "configs" / "hypotension.toml").read_text()
    recipe = re.sub(r"(?m)^epochs = \d+", "epochs = 2", recipe)
    (root / "hypotension.toml").write_text(recipe)
    assert main(["synth", "--kind", "map", "--out", str(root / "raw"), "--patients", "16",
                 "--seed", "1"]) == 0
    assert main(["ingest", "--config", str(root / "hypotension.toml"), "--raw",
                 str(root / "raw"), "--dataset", str(root / "ds")]) == 0
    assert (root / "ds" / "labels.csv").is_file()
    assert main(["train", "--config", str(root / "hypotension.toml"), "--dataset",
                 str(root / "ds"), "--model-store", str(root / "store"), "--out",
                 str(root / "runs")]) == 0
    return root


@pytest.fixture(scope="module")
def server(trained) -> Iterator[LiveServer]:
    with LiveServer(trained / "store", "--runtime", "savedmodel") as srv:
        yield srv


def _last_minutes(root: Path, n: int = 240) -> list[float | None]:
    import wfdb

    name = (root / "raw" / "RECORDS").read_text().split()[0]
    x = wfdb.rdrecord(str(root / "raw" / name)).p_signal[:600, 0]
    return [None if not np.isfinite(v) or v <= 10 else float(v) for v in x[-n:]]


def test_the_version_stores_its_alarm_threshold_chosen_on_training_t0_cases(trained) -> None:
    meta = json.loads((trained / "store" / "hypotension" / "1" / "assets.extra" /
                       "pulsecast.json").read_text())
    ahe = meta["events"]["ahe"]
    assert ahe["output"] == "ahe_probability" and ahe["horizon_min"] == 60
    assert ahe["chosen_on"] == "train_t0" and 0 <= ahe["threshold"] <= 1
    report = json.loads((trained / "runs" / "evaluation" / "events" / "events.json").read_text())
    assert set(report["warnings"]) >= {"t0", "monitoring"}
    assert set(report["warnings"]["t0"]) == {"model", "map_alone"}
    assert (trained / "runs" / "evaluation" / "events" / "roc_t0.png").stat().st_size > 1000


@pytest.mark.parametrize("channel", ["ABPMean", "ABP Mean", "ABPMEAN"])
def test_forecast_answers_the_hour_its_quantiles_and_the_warning(server, trained,
                                                                 channel) -> None:
    body = {"signal": {channel: _last_minutes(trained)}, "fs": 1 / 60, "max_gap_s": 900}
    doc = httpx.post(f"{server.url}/v1/models/hypotension:forecast", json=body,
                     timeout=30).json()
    assert doc["targets"] == ["ABPMEAN"] and doc["units"] == ["mmHg"]
    assert len(doc["forecast"]["ABPMEAN"]) == 60
    assert set(doc["quantiles"]) == {"0.1", "0.5", "0.9"}
    ahe = doc["events"]["ahe"]
    assert set(ahe) == {"probability", "alarm", "threshold", "horizon_min"}
    assert 0 <= ahe["probability"] <= 1 and ahe["horizon_min"] == 60
    assert ahe["alarm"] == (ahe["probability"] >= ahe["threshold"])


def test_predict_carries_the_probability_as_a_named_output(server, trained) -> None:
    window = [[v if v is not None else 80.0] for v in _last_minutes(trained, 120)]
    doc = httpx.post(f"{server.url}/v1/models/hypotension:predict",
                     json={"inputs": [window]}, timeout=30).json()
    assert np.asarray(doc["outputs"]["ahe_probability"]).shape == (1, 1)
    assert np.asarray(doc["outputs"]["forecast"]).shape == (1, 60, 1)


def test_too_little_history_is_a_400_naming_the_minutes(server, trained) -> None:
    body = {"signal": {"ABPMean": _last_minutes(trained, 60)}, "fs": 1 / 60}
    r = httpx.post(f"{server.url}/v1/models/hypotension:forecast", json=body, timeout=30)
    assert r.status_code == 400
    assert "120 minutes" in r.json()["error"]


def test_readings_at_or_below_10_mmhg_are_gaps_and_above_300_a_400(server, trained) -> None:
    minutes = _last_minutes(trained)
    minutes[-3:-1] = [0.0, -39.0]  # a flushed line: no reading, filled like ingest fills it
    ok = httpx.post(f"{server.url}/v1/models/hypotension:forecast", timeout=30,
                    json={"signal": {"ABPMean": minutes}, "fs": 1 / 60, "max_gap_s": 900})
    assert ok.status_code == 200, ok.text
    minutes[-1] = 412.0
    r = httpx.post(f"{server.url}/v1/models/hypotension:forecast", timeout=30,
                   json={"signal": {"ABPMean": minutes}, "fs": 1 / 60, "max_gap_s": 900})
    assert r.status_code == 400
    assert "412" in r.json()["error"] and "300 mmHg" in r.json()["error"]
