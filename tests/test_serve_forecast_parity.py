"""One signal conditioning on both sides of the offline/online line (issue 15): `:forecast` on a
raw WFDB record at its own rate sees the very window ingest made of that record.

A synthetic record at 360 Hz (ABP and lead II, stored in that order) is ingested at the model's
125 Hz by `pipelines.ingest`; the whole record, every channel at its native rate as wfdb reads
it, is the `:forecast` body, and the last `input_steps` rows of `signals/<record_id>.npy` are the
`:predict` body. Ingest resamples the whole record, so its last window is exactly what the
forecast route's tail conditioning computes (`models.conditioning.condition_tail`). In the `gap`
case lead II misses 0.1 s inside that window: ingest fills it (`fill_gap_s`), the request fills
it (`max_gap_s`), both at the model's rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.metadata import VersionMetadata
from pipelines.ingest.cohort import ingest
from pipelines.ingest.config import IngestConfig
from serve.http.forecast import make_window, parse_forecast_request

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # wfdb on pandas 3

RAW_FS = 360.0  # the record's own rate; 125 / 360 = 25 / 72
N_RAW = 7213  # 20.036 s: not a whole number of model samples, so the tail's rounding counts
MAX_GAP_S = 0.25  # ingest's fill_gap_s and the request's max_gap_s: the same gaps are filled
META = VersionMetadata(channels=("II", "ABP"), fs=125.0, input_steps=64, horizon=8,
                       targets=("II",), units=("mV", "mmHg"), model_name="parity")
CASES = ("clean", "gap")


def write_raw_record(folder: Path, name: str, gap: bool) -> Path:
    """ABP (mmHg) and lead II (mV) at 360 Hz; with `gap`, lead II misses 0.1 s starting 0.3 s
    before the end (inside the model's last 0.512 s window)."""
    import wfdb

    t = np.arange(N_RAW) / RAW_FS
    rng = np.random.default_rng(7)
    ii = (np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.sin(2 * np.pi * 7.3 * t)
          + 0.05 * rng.standard_normal(N_RAW))
    abp = 90 + 20 * np.sin(2 * np.pi * 1.2 * t + 0.4) + 2 * rng.standard_normal(N_RAW)
    if gap:
        start = N_RAW - int(0.3 * RAW_FS)
        ii[start : start + int(0.1 * RAW_FS)] = np.nan
    folder.mkdir(parents=True)
    wfdb.wrsamp(name, fs=RAW_FS, units=["mmHg", "mV"], sig_name=["ABP", "II"],
                p_signal=np.stack([abp, ii], axis=1), fmt=["16", "16"], write_dir=str(folder))
    return folder / name


def forecast_body(record: Path) -> dict:
    """The whole record, every channel at its native rate in physical units, NaN as null."""
    import wfdb

    rec = wfdb.rdrecord(str(record))
    signal = {name: [None if np.isnan(v) else float(v) for v in rec.p_signal[:, k]]
              for k, name in enumerate(rec.sig_name)}
    return {"signal": signal, "fs": float(rec.fs), "max_gap_s": MAX_GAP_S}


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, tuple[dict, np.ndarray]]:
    """case -> (the `:forecast` body of the raw record, the last window ingest made of it)."""
    out = {}
    for case in CASES:
        root = tmp_path_factory.mktemp(case)
        record = write_raw_record(root / "raw", f"rec_{case}", gap=case == "gap")
        config = IngestConfig(raw_dir=root / "raw", dataset_dir=root / "ds", channels=META.channels,
                              fs=META.fs, fill_gap_s=MAX_GAP_S)
        report = ingest(config)
        assert report.written and [r.record_id for r in report.ingested] == [record.name]
        signal = np.load(root / "ds" / "signals" / f"{record.name}.npy")
        tail = signal[-META.input_steps :]
        assert tail.dtype == np.float32 and np.isfinite(tail).all()  # the gap was filled
        out[case] = (forecast_body(record), tail)
    return out


@pytest.mark.parametrize("case", CASES)
def test_the_forecast_window_of_a_raw_record_is_the_last_window_ingest_made_of_it(
    records, case: str
) -> None:
    body, tail = records[case]
    window = make_window(parse_forecast_request(body), META)
    assert window.shape == tail.shape == (META.input_steps, len(META.channels))
    np.testing.assert_allclose(window, tail, rtol=1e-6, atol=1e-6)  # a float32 rounding at most


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator:
    """The real server over a store holding one small pulsecast model at 125 Hz (window 64 of
    II and ABP -> 8 samples of II), linear so every input sample reaches the forecast."""
    import keras
    from live_server import LiveServer

    from models.export import export_savedmodel

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(META.input_steps, len(META.channels)), name="signal")
    z = keras.layers.Dense(META.horizon)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Reshape((META.horizon, 1), name="forecast")(z))
    warmup = np.random.default_rng(0).normal(size=(2, META.input_steps, 2)).astype("float32")
    store = tmp_path_factory.mktemp("store")
    export_savedmodel(model, store / "parity" / "1", META, warmup)
    with LiveServer(store) as srv:
        yield srv


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_forecast_on_a_raw_record_answers_what_predict_answers_on_the_ingested_window(
    records, server, case: str
) -> None:
    httpx = pytest.importorskip("httpx")
    body, tail = records[case]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        fc = client.post("/v1/models/parity:forecast", json=body)
        pr = client.post("/v1/models/parity:predict", json={"instances": [tail.tolist()]})
    assert fc.status_code == 200 and pr.status_code == 200, (fc.text, pr.text)
    forecast = np.array(fc.json()["forecast"]["II"])
    predicted = np.ravel(pr.json()["predictions"])
    assert forecast.shape == predicted.shape == (META.horizon,)
    np.testing.assert_allclose(forecast, predicted, rtol=1e-5, atol=1e-5)
