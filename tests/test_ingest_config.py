"""Ingest from a recipe's `[data]` table (`pulsecast ingest --config`): the same settings as
`pulsecast train` ingests with, readings outside `valid_range` set aside and counted, long
numerics records kept whole, and a raw folder's `labels.csv` carried into the dataset.

Records are MIMIC II numerics written with `wfdb.wrsamp` as the Challenge 2009's are (one signal
`ABPMean`, mmHg, fs 1/60, fmt 16, gain 10); the real ones are read from `../shared` when there."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.config import ConfigError, DataConfig, load_recipe, parse_recipe
from pipelines.dataset.contract import load_dataset
from pipelines.ingest.cohort import ingest
from pipelines.ingest.config import IngestConfig, ingest_config_from_recipe
from pipelines.ingest.incremental import ingest_incremental

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # wfdb on pandas 3

REPO = Path(__file__).resolve().parents[1]
HYPOTENSION = REPO / "configs" / "hypotension.toml"
CHALLENGE = REPO.parent / "shared" / "challenge-2009-map" / "training"
FS = 1 / 60
LABELS = "record,group,ahe_in_forecast_window,t0_sample\n"


def _map(minutes: int = 660, level: float = 80.0) -> np.ndarray:
    """A plausible MAP trend (mmHg, one value a minute): a slow wave around `level`."""
    t = np.arange(minutes)
    return np.round(level + 6 * np.sin(2 * np.pi * t / 170) + 2 * np.sin(t / 7.0), 1)


def _write_map(folder: Path, name: str, values: np.ndarray) -> Path:
    """A numerics record as MIMIC II writes one: `ABPMean` in mmHg at 1/60 Hz, gain 10."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    digital = np.round(np.asarray(values, dtype=np.float64) * 10).astype(np.int16)[:, None]
    wfdb.wrsamp(name, fs=FS, units=["mmHg"], sig_name=["ABPMean"], d_signal=digital, fmt=["16"],
                adc_gain=[10.0], baseline=[0], write_dir=str(folder))
    return folder / name


def _recipe(tmp_path: Path, data: str, name: str = "r.toml") -> Path:
    """A recipe file whose [data] table is `data` (a window on ABPMEAN, so it is a valid one)."""
    path = tmp_path / name
    path.write_text(f'name = "map"\n[data]\n{data}\n[window]\ninput_steps = 30\nhorizon = 10\n'
                    'stride = 1\ninputs = ["ABPMEAN"]\ntargets = ["ABPMEAN"]\n')
    return path


def _data(tmp_path: Path, **extra: str) -> str:
    keys = {"raw": f'"{tmp_path / "raw"}"', "dataset": f'"{tmp_path / "ds"}"',
            "channels": '["ABPMEAN"]', "fs": "0.016666666666666666", "numerics": "true", **extra}
    return "\n".join(f"{k} = {v}" for k, v in keys.items())


def test_the_recipe_gives_ingest_its_channels_fs_gaps_and_valid_range(tmp_path: Path) -> None:
    _write_map(tmp_path / "raw", "a001n", _map(240))
    recipe = _recipe(tmp_path, _data(tmp_path, valid_range="[20.0, 200.0]", max_gap_s="1800",
                                     min_duration_s="600", fill_gap_s="120"))
    assert main(["ingest", "--config", str(recipe)]) == 0
    ds = load_dataset(tmp_path / "ds")
    assert (ds.channels, ds.fs, ds.units) == (("ABPMEAN",), FS, ("mmHg",))
    settings = {k: ds.config[k] for k in ("numerics", "valid_range", "max_gap_s",
                                          "min_duration_s", "fill_gap_s")}
    assert settings == {"numerics": True, "valid_range": [20.0, 200.0], "max_gap_s": 1800.0,
                        "min_duration_s": 600.0, "fill_gap_s": 120.0}
    assert ds.manifest["n_samples"].tolist() == [240]


def test_a_flag_given_explicitly_overrides_the_recipe(tmp_path: Path) -> None:
    values = _map(300)
    values[150:155] = 0  # five minutes without a reading
    _write_map(tmp_path / "raw", "a001n", values)
    recipe = _recipe(tmp_path, _data(tmp_path, max_gap_s="3600", min_duration_s="600"))
    other = tmp_path / "other"
    assert main(["ingest", "--config", str(recipe), "--max-gap-s", "60",
                 "--dataset", str(other)]) == 0
    assert not (tmp_path / "ds").exists()  # --dataset overrode [data] dataset
    ds = load_dataset(other)
    assert ds.config["max_gap_s"] == 60.0 and ds.config["min_duration_s"] == 600.0
    assert ds.manifest["record_id"].tolist() == ["a001n_000", "a001n_001"]  # split at the gap


def test_values_at_or_below_low_and_above_high_become_gaps_and_are_counted(
        tmp_path: Path) -> None:
    values = _map(60)
    values[[10, 11, 12]] = [0.0, -39.2, 10.0]  # no reading: at or below 10 mmHg
    values[[20, 21]] = [10.1, 300.0]  # readings: just above low, at high
    values[[30, 31]] = [300.1, 420.0]  # artefacts: above 300 mmHg
    record = _write_map(tmp_path / "raw", "a001n", values)
    config = IngestConfig(tmp_path / "raw", tmp_path / "ds", ("ABPMEAN",), FS, numerics=True,
                          valid_range=(10.0, 300.0), max_gap_s=600)
    report = ingest(config)
    signal = load_dataset(tmp_path / "ds").signal("a001n")[:, 0]
    assert np.flatnonzero(np.isnan(signal)).tolist() == [10, 11, 12, 30, 31]
    np.testing.assert_allclose(signal[[20, 21]], [10.1, 300.0], atol=1e-4)
    ((path, readings),) = report.readings
    assert (path, readings.no_reading_s, readings.artefact_s) == (str(record), (180.0,), (120.0,))
    invalid = json.loads((tmp_path / "ds" / "dataset.json").read_text())["invalid_readings"]
    assert invalid == [{"record": str(record), "channel": "ABPMEAN", "no_reading_s": 180.0,
                        "artefact_s": 120.0}]
    assert "no reading 3 min in 1 record; artefact 2 min in 1 record" in report.render()


def test_without_valid_range_a_negative_pressure_passes_as_before(tmp_path: Path) -> None:
    values = _map(60)
    values[10:12] = [0.0, -39.2]
    _write_map(tmp_path / "raw", "a001n", values)
    report = ingest(IngestConfig(tmp_path / "raw", tmp_path / "ds", ("ABPMEAN",), FS,
                                 numerics=True))
    signal = load_dataset(tmp_path / "ds").signal("a001n")[:, 0]
    assert np.isnan(signal[10]) and signal[11] == pytest.approx(-39.2)  # only 0 is no reading
    assert report.readings[0][1].no_reading_s == (60.0,)


def test_a_record_with_no_valid_minute_is_skipped_with_the_reason(tmp_path: Path) -> None:
    values = np.zeros(11)
    values[[3, 7]] = [350.0, 5.0]
    bad = _write_map(tmp_path / "raw", "b001n", values)
    _write_map(tmp_path / "raw", "a001n", _map(20))
    config = IngestConfig(tmp_path / "raw", tmp_path / "ds", ("ABPMEAN",), FS, numerics=True,
                          valid_range=(10.0, 300.0))
    report = ingest(config)
    assert [r.record_id for r in report.ingested] == ["a001n"]
    assert report.skipped == ((str(bad), "ABPMEAN has no valid value (11 min read: 10 min no "
                                         "reading at or below 10, 1 min artefact above 300)"),)


def test_a_few_minutes_without_a_reading_do_not_split_a_record_under_the_recipe(
        tmp_path: Path) -> None:
    values = _map(660)
    values[300:306] = 0  # six minutes without a reading, as monitors have
    values[450:452] = -5.0  # a flushed line
    _write_map(tmp_path / "raw", "a001n", values)
    recipe = load_recipe(HYPOTENSION)
    config = ingest_config_from_recipe(recipe.data, raw=tmp_path / "raw", dataset=tmp_path / "ds")
    report = ingest(config)
    assert [(r.record_id, r.n_samples) for r in report.ingested] == [("a001n", 660)]
    signal = load_dataset(tmp_path / "ds").signal("a001n")[:, 0]
    assert not np.isnan(signal).any()  # up to 15 minutes are interpolated (fill_gap_s)
    assert 60 < signal[303] < 100 and signal[451] > 60
    bare = ingest(IngestConfig(tmp_path / "raw", tmp_path / "ds2", ("ABPMEAN",), FS,
                               numerics=True))
    assert len(bare.ingested) == 2  # the default max_gap_s (60 s) splits at the six minutes


def test_labels_csv_is_carried_into_the_dataset_and_read_back(tmp_path: Path) -> None:
    _write_map(tmp_path / "raw", "th101n", _map(60, level=55))
    _write_map(tmp_path / "raw", "tc101n", _map(60))
    _write_map(tmp_path / "raw", "tc102n", np.zeros(60))  # skipped: no valid minute
    text = LABELS + "th101n,H1,1,600\ntc101n,C1,0,600\ntc102n,C1,0,600\n"
    (tmp_path / "raw" / "labels.csv").write_text(text)
    report = ingest(IngestConfig(tmp_path / "raw", tmp_path / "ds", ("ABPMEAN",), FS,
                                 numerics=True, valid_range=(10.0, 300.0)))
    assert report.written and len(report.skipped) == 1 and report.labels_rows == 3
    assert (tmp_path / "ds" / "labels.csv").read_text() == text  # as it was, every row
    labels = load_dataset(tmp_path / "ds").labels
    assert labels.columns.tolist() == ["record", "group", "ahe_in_forecast_window", "t0_sample"]
    assert labels["record"].tolist() == ["th101n", "tc101n", "tc102n"]
    assert labels["t0_sample"].tolist() == [600, 600, 600]
    assert labels["ahe_in_forecast_window"].tolist() == [1, 0, 0]


def test_a_dataset_without_labels_has_none_and_a_labels_file_without_record_is_left_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_map(tmp_path / "raw", "a001n", _map(60))
    config = IngestConfig(tmp_path / "raw", tmp_path / "ds", ("ABPMEAN",), FS, numerics=True)
    ingest(config)
    assert load_dataset(tmp_path / "ds").labels is None
    (tmp_path / "raw" / "labels.csv").write_text("name,group\na001n,C1\n")
    with caplog.at_level(logging.WARNING):
        assert ingest(config).written
    assert "has no 'record' column (has ['name', 'group']); not carried" in caplog.text
    assert load_dataset(tmp_path / "ds").labels is None


def test_an_incremental_ingest_keeps_the_labels_and_adds_the_new_ones(tmp_path: Path) -> None:
    for i, folder in enumerate(("raw", "new")):
        _write_map(tmp_path / folder, f"p00000{i + 1}n", _map(60, level=70 + 10 * i))
        (tmp_path / folder / "labels.csv").write_text(LABELS + f"p00000{i + 1}n,C1,0,600\n")
    ingest(IngestConfig(tmp_path / "raw", tmp_path / "ds", ("ABPMEAN",), FS, numerics=True))
    assert ingest_incremental(tmp_path / "ds", tmp_path / "new").written
    labels = load_dataset(tmp_path / "ds").labels
    assert labels["record"].tolist() == ["p000001n", "p000002n"]


def test_shipped_recipes_ingest_exactly_as_train_did_before_the_new_keys(tmp_path: Path) -> None:
    # what `pulsecast train` built when the dataset was missing, before [data] had gap keys
    for name in ("ecg", "abp", "resp", "vitals"):
        data = load_recipe(REPO / "configs" / f"{name}.toml").data
        before = IngestConfig(raw_dir=tmp_path / "raw", dataset_dir=tmp_path / "ds",
                              channels=data.channels, fs=data.fs, numerics=data.numerics,
                              fill_gap_s=data.fill_gap_s)
        assert ingest_config_from_recipe(data, raw=tmp_path / "raw",
                                         dataset=tmp_path / "ds") == before, name
    bare, recipe = IngestConfig("r", "d", ("II",), 125.0), DataConfig()
    for key in ("numerics", "fill_gap_s", "max_gap_s", "min_duration_s", "valid_range"):
        assert getattr(recipe, key) == getattr(bare, key), key


def test_train_and_the_cli_ingest_a_recipe_with_the_same_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.ingest.cohort as cohort
    from pipelines.training.train import TrainingError, ensure_dataset

    seen = []
    monkeypatch.setattr(cohort, "ingest", lambda config: seen.append(config) or
                        cohort.IngestReport(config.dataset_dir, False, 0))
    recipe = load_recipe(HYPOTENSION)
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(
        recipe.data, raw=str(tmp_path / "raw"), dataset=str(tmp_path / "ds")))
    with pytest.raises(TrainingError, match="wrote no dataset"):
        ensure_dataset(recipe)
    main(["ingest", "--config", str(HYPOTENSION), "--raw", str(tmp_path / "raw"),
          "--dataset", str(tmp_path / "ds")])
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0].valid_range == (10.0, 300.0) and seen[0].max_gap_s == 3600.0


def test_without_a_recipe_the_cli_names_the_flags_it_lacks(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert main(["ingest", "--raw", str(tmp_path), "--fs", "1/60"]) == 1
    assert ("ingest needs --dataset, --channels (or --config RECIPE to take them from its "
            "[data] table)") in caplog.text


@pytest.mark.parametrize("value", ["[300.0, 10.0]", "[10.0]", '["low", 300]', "[10, 10]"])
def test_a_valid_range_that_is_not_low_below_high_is_named(value: str) -> None:
    import tomllib

    raw = {"name": "map", "data": {"channels": ["ABPMEAN"], "fs": FS,
                                   "valid_range": tomllib.loads(f"v = {value}")["v"]},
           "window": {"inputs": ["ABPMEAN"], "targets": ["ABPMEAN"]}}
    with pytest.raises(ConfigError, match=r"^\[data\] valid_range must be \[low, high\], two "
                                          r"finite numbers with low < high, got \["):
        parse_recipe(raw)
    with pytest.raises(ValueError, match="valid_range must"):
        IngestConfig("r", "d", ("ABPMEAN",), FS, valid_range=(300.0, 10.0))


@pytest.mark.shared
def test_the_60_challenge_records_ingest_whole_with_their_labels(tmp_path: Path) -> None:
    if not CHALLENGE.is_dir():
        pytest.skip(f"Challenge 2009 records not found at {CHALLENGE} (no ../shared)")
    dataset = tmp_path / "hypotension"
    assert main(["ingest", "--config", str(HYPOTENSION), "--raw", str(CHALLENGE),
                 "--dataset", str(dataset)]) == 0
    ds = load_dataset(dataset)
    assert len(ds.manifest) == 60 and set(ds.manifest["n_samples"]) == {660}
    assert sorted(ds.record_ids) == sorted((CHALLENGE / "RECORDS").read_text().split())
    assert ds.labels is not None and len(ds.labels) == 60
    assert set(ds.labels["t0_sample"]) == {600}
    groups = ds.labels.groupby(ds.labels["group"].str[0])["ahe_in_forecast_window"].sum()
    assert groups.to_dict() == {"C": 0, "H": 30}
    invalid = ds.config["invalid_readings"]
    assert [(Path(e["record"]).name, e["no_reading_s"]) for e in invalid] == [("tc214n", 240.0)]
