"""The synthetic cohorts: real WFDB files, deterministic by seed, varied and coupled physiology;
and the MAP cohort (`--kind map`): Challenge 2009-shaped trends with hypotensive episodes whose
labels are the AHE rule's."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import wfdb

from models.events import AHE
from pipelines.cli import main
from pipelines.sources import synth, waveforms
from pipelines.sources.map_trends import make_map_series, make_map_spec
from pipelines.sources.physiology import (
    CHANNELS,
    NUMERIC_CHANNELS,
    NUMERIC_UNITS,
    UNITS,
    SynthError,
    make_cohort_specs,
)
from pipelines.sources.synth import MapSynthConfig, SynthConfig, write_cohort, write_map_cohort
from pipelines.sources.waveforms import make_patient, make_patient_signals

PATIENTS = 4
MINUTES = 1.0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    return write_cohort(SynthConfig(out=out, patients=PATIENTS, minutes=MINUTES, seed=7))


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _estimate_hr_bpm(ecg: np.ndarray, fs: float) -> float:
    from scipy.signal import find_peaks

    x = np.nan_to_num(ecg - np.nanmedian(ecg))
    peaks, _ = find_peaks(x, height=0.5 * np.nanmax(x), distance=int(0.3 * fs))
    return 60.0 * fs / float(np.median(np.diff(peaks)))


def test_same_seed_writes_byte_identical_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_cohort(SynthConfig(out=tmp_path / name, patients=2, minutes=MINUTES, seed=3))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)


def test_different_seeds_give_different_signals() -> None:
    s0, s1 = make_cohort_specs(1, seed=0)[0], make_cohort_specs(1, seed=1)[0]
    assert s0.hr_bpm != s1.hr_bpm
    ecg0, ecg1 = make_patient(s0, 0, MINUTES)["II"], make_patient(s1, 1, MINUTES)["II"]
    assert not np.array_equal(ecg0, ecg1)


def test_patient_is_the_same_whatever_the_cohort_size() -> None:
    assert make_cohort_specs(2, seed=5)[1] == make_cohort_specs(6, seed=5)[1]


def test_cohort_folder_has_records_file_and_one_folder_per_patient(cohort: list[Path]) -> None:
    root = cohort[0].parent.parent
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        f"p{i:06d}" for i in range(1, PATIENTS + 1)
    ]
    lines = (root / "RECORDS").read_text().split()
    assert len(lines) == 2 * PATIENTS
    assert f"{cohort[0].parent.name}/{cohort[0].name}n" in lines
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_waveform_records_read_back_with_names_units_fs_and_start(cohort: list[Path]) -> None:
    specs = make_cohort_specs(PATIENTS, seed=7)
    for path, spec in zip(cohort, specs, strict=True):
        record = wfdb.rdrecord(str(path))
        assert record.sig_name == list(CHANNELS)
        assert record.units == list(UNITS)
        assert record.fs == 125
        assert record.sig_len == int(MINUTES * 60 * 125)
        assert record.base_datetime == spec.start
        assert path.name == f"{spec.patient_id}-{spec.start:%Y-%m-%d-%H-%M}"


def test_files_hold_exactly_the_in_memory_patient(cohort: list[Path]) -> None:
    spec = make_cohort_specs(1, seed=7)[0]
    memory = waveforms.make_signal_matrix(make_patient(spec, 7, MINUTES))
    np.testing.assert_array_equal(wfdb.rdrecord(str(cohort[0])).p_signal, memory)


def test_patients_differ_in_estimated_heart_rate(cohort: list[Path]) -> None:
    hrs = [_estimate_hr_bpm(wfdb.rdrecord(str(p), channel_names=["II"]).p_signal[:, 0], 125)
           for p in cohort]
    specs = make_cohort_specs(PATIENTS, seed=7)
    assert min(np.diff(sorted(hrs))) > 1.0, hrs
    for hr, spec in zip(hrs, specs, strict=True):
        assert abs(hr - spec.hr_bpm) < 12, (hr, spec.hr_bpm)


def test_gaps_are_nan_runs_of_seconds_and_never_a_whole_channel(cohort: list[Path]) -> None:
    for path in cohort:
        signal = wfdb.rdrecord(str(path)).p_signal
        nan = np.isnan(signal)
        assert nan.any(), path.name
        assert not nan.all(axis=0).any(), path.name
        assert nan.mean() < 0.5


def test_abp_follows_the_r_peak_and_pleth_follows_abp() -> None:
    spec = make_cohort_specs(1, seed=2)[0]
    sig = make_patient_signals(spec, 2, MINUTES)
    fs = sig.fs

    def upstroke_delays(x: np.ndarray) -> np.ndarray:
        slope = np.diff(x)
        out = []
        for r in sig.r_peaks_s[:-2]:
            i0 = int(r * fs)
            w = slope[i0:i0 + int(0.6 * fs)]
            if w.size and not np.isnan(w).any():
                out.append(np.argmax(w) / fs)
        return np.asarray(out)

    abp = np.median(upstroke_delays(sig.waveforms["ABP"]))
    pleth = np.median(upstroke_delays(sig.waveforms["PLETH"]))
    assert spec.abp_delay_s <= abp <= spec.abp_delay_s + 0.1
    assert pleth > abp


def test_multi_segment_record_has_layout_null_segment_and_reads_whole(cohort: list[Path]) -> None:
    path = cohort[1]  # index 1 is multi-segment
    spec = make_cohort_specs(2, seed=7)[1]
    assert spec.multi_segment
    header = wfdb.rdheader(str(path), rd_segments=True)
    assert header.seg_name[0] == f"{spec.segment_prefix}_layout"
    assert "~" in header.seg_name
    assert header.sig_len == sum(header.seg_len)
    without_abp = [s for s in header.segments if s is not None and "ABP" not in s.sig_name]
    assert without_abp and without_abp[0].sig_len > 0
    record = wfdb.rdrecord(str(path))
    assert record.sig_name == list(CHANNELS)
    assert record.p_signal.shape == (int(MINUTES * 60 * 125), len(CHANNELS))
    null_at = sum(header.seg_len[: header.seg_name.index("~")])
    assert np.isnan(record.p_signal[null_at]).all()
    memory = waveforms.make_signal_matrix(make_patient(spec, 7, MINUTES))
    np.testing.assert_array_equal(record.p_signal, memory)


def test_numerics_record_is_per_minute_and_uses_zero_for_missing(cohort: list[Path]) -> None:
    for path in cohort:
        numerics = wfdb.rdrecord(str(path) + "n")
        assert numerics.sig_name == list(NUMERIC_CHANNELS)
        assert numerics.units == list(NUMERIC_UNITS)
        assert numerics.fs == pytest.approx(1 / 60)
        assert numerics.sig_len == int(MINUTES)
        assert not np.isnan(numerics.p_signal).any()
    ten_minutes = make_patient_signals(make_cohort_specs(1, seed=7)[0], 7, minutes=10).numerics
    assert sum(int((v == 0).sum()) for v in ten_minutes.values()) >= 1
    hr = ten_minutes["HR"][ten_minutes["HR"] > 0]
    assert 35 < hr.min() and hr.max() < 180


def test_cli_writes_a_cohort(tmp_path: Path) -> None:
    out = tmp_path / "raw" / "synthetic"
    rc = main(["synth", "--out", str(out), "--patients", "2", "--minutes", "1", "--seed", "0"])
    assert rc == 0
    assert (out / "p000002").is_dir()
    assert len((out / "RECORDS").read_text().split()) == 4


def test_cli_rejects_zero_patients_naming_the_value(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        rc = main(["synth", "--out", str(tmp_path / "x"), "--patients", "0"])
    assert rc != 0
    assert "patients must be between 1 and 999999, got 0" in caplog.text
    assert not (tmp_path / "x").exists()


def test_config_rejects_records_shorter_than_a_minute(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="minutes must be >= 1 .*got 0.5"):
        SynthConfig(out=tmp_path, minutes=0.5)


def test_existing_cohort_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "c"
    write_cohort(SynthConfig(out=out, patients=1, minutes=MINUTES, seed=0))
    with pytest.raises(SynthError, match="already exists"):
        write_cohort(SynthConfig(out=out, patients=1, minutes=MINUTES, seed=1))
    before = _files(out)
    write_cohort(SynthConfig(out=out, patients=1, minutes=MINUTES, seed=1, overwrite=True))
    assert _files(out) != before


def test_a_failed_write_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(signals: waveforms.PatientSignals, folder: Path) -> Path:
        calls.append(folder)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(signals, folder)

    original = synth.write_patient
    monkeypatch.setattr(synth, "write_patient", failing)
    with pytest.raises(OSError, match="disk full"):
        write_cohort(SynthConfig(out=tmp_path / "c", patients=3, minutes=MINUTES, seed=0))
    assert list(tmp_path.iterdir()) == []


# --- the MAP cohort (`--kind map`): Challenge 2009-shaped trends with hypotensive episodes ---

MAP_PATIENTS = 24


@pytest.fixture(scope="module")
def map_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth-map") / "cohort"
    write_map_cohort(MapSynthConfig(out=out, patients=MAP_PATIENTS, seed=0))
    return out


def _map_minutes(record: Path) -> np.ndarray:
    """The record's MAP a minute (mmHg), a 0 (no reading) as NaN, as the AHE rule reads it."""
    x = wfdb.rdrecord(str(record)).p_signal[:, 0]
    return np.where(x == 0, np.nan, x)


def test_map_records_are_written_as_the_challenge_records_are(map_cohort: Path) -> None:
    names = (map_cohort / "RECORDS").read_text().split()
    assert names == [f"p{i:06d}n" for i in range(1, MAP_PATIENTS + 1)]
    header = wfdb.rdheader(str(map_cohort / names[0]))
    assert (header.sig_name, header.units, header.fmt, header.adc_gain) == (
        ["ABPMean"], ["mmHg"], ["16"], [10.0])
    assert header.fs == pytest.approx(1 / 60) and header.sig_len == 660
    assert header.comments[0] == "T0 at minute 600 (sample 600); minutes 600-659 are the " \
                                 "forecast window"


def test_map_cohort_has_episodes_and_its_labels_agree_with_the_rule(map_cohort: Path) -> None:
    import pandas as pd

    labels = pd.read_csv(map_cohort / "labels.csv", dtype={"record": str})
    assert labels.columns.tolist() == ["record", "group", "ahe_in_forecast_window", "t0_sample"]
    assert set(labels["t0_sample"]) == {600}
    by_group = labels.groupby("group")["ahe_in_forecast_window"].agg(["sum", "count"])
    assert by_group["count"].to_dict() == {"C1": 6, "C2": 6, "H2": 12}  # about half
    assert by_group.loc["H2", "sum"] >= 9 and by_group.loc[["C1", "C2"], "sum"].sum() == 0
    for row in labels.itertuples():
        x = _map_minutes(map_cohort / row.record)
        assert row.ahe_in_forecast_window == int(AHE.label(x[600:660])), row.record
        if row.group == "C2":  # its episode is before T0
            assert AHE.occurs(x[:600]), row.record
        valid = x[np.isfinite(x) & (x <= 300)]
        assert 40 <= valid.min() and valid.max() <= 250
        assert 65 <= np.median(x[np.isfinite(x)][:480]) <= 100  # around 70-95 mmHg


def test_map_cohort_has_minutes_without_reading_and_spikes_but_not_at_its_ends(
        map_cohort: Path) -> None:
    zeros = spikes = 0
    for record in sorted(map_cohort.glob("*.hea")):
        x = wfdb.rdrecord(str(record.with_suffix(""))).p_signal[:, 0]
        zeros += int((x == 0).sum())
        spikes += int((x > 300).sum())
        assert 0 < x[0] <= 300 and 0 < x[-1] <= 300, record.name  # T0 stays sample 600
    assert 10 <= zeros <= 4 * MAP_PATIENTS and 1 <= spikes <= MAP_PATIENTS // 2


def test_some_map_episodes_are_announced_by_a_slow_drift_down_and_some_are_not() -> None:
    specs = [make_map_spec(i, seed=0) for i in range(MAP_PATIENTS)]
    episodes = [s.episode for s in specs if s.group == "H2"]
    warned = [e for e in episodes if e.lead_drift_mmhg > 0]
    assert 0 < len(warned) < len(episodes)
    for spec in specs:
        e = spec.episode
        if spec.group != "H2" or not e.lead_drift_mmhg:
            continue
        x = make_map_series(spec, seed=0)
        before = x[e.onset_min - e.decline_min - e.lead_min - 30:
                   e.onset_min - e.decline_min - e.lead_min]
        last = x[e.onset_min - e.decline_min - 10: e.onset_min - e.decline_min]
        assert np.median(last[last > 0]) < np.median(before[before > 0]), spec.record_name


def test_map_cohort_is_the_same_for_a_seed_and_differs_across_seeds(tmp_path: Path,
                                                                    map_cohort: Path) -> None:
    write_map_cohort(MapSynthConfig(out=tmp_path / "a", patients=MAP_PATIENTS, seed=0))
    write_map_cohort(MapSynthConfig(out=tmp_path / "b", patients=4, seed=1))
    again, other = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert again == _files(map_cohort)
    assert other["p000001n.dat"] != again["p000001n.dat"]
    assert make_map_spec(3, seed=0) != make_map_spec(3, seed=1)


def test_the_synth_cli_writes_a_map_cohort_that_ingests_with_the_hypotension_recipe(
        tmp_path: Path) -> None:
    from pipelines.dataset.contract import load_dataset

    raw = tmp_path / "synthetic-map"
    assert main(["synth", "--kind", "map", "--out", str(raw), "--patients", "8",
                 "--seed", "0"]) == 0
    recipe = Path(__file__).resolve().parents[1] / "configs" / "hypotension.toml"
    assert main(["ingest", "--config", str(recipe), "--raw", str(raw),
                 "--dataset", str(tmp_path / "ds")]) == 0
    ds = load_dataset(tmp_path / "ds")
    assert len(ds.manifest) == 8 and set(ds.manifest["n_samples"]) == {660}
    assert ds.labels["record"].tolist() == [f"p{i:06d}n" for i in range(1, 9)]
    assert set(ds.patients()) == {f"p{i:06d}" for i in range(1, 9)}
    assert not np.isnan(ds.signal("p000001n")).any()


def test_the_map_cohort_refuses_records_too_short_for_an_episode_and_its_hour(
        tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="minutes must be an integer >= 300 .*got 120"):
        MapSynthConfig(out=tmp_path, minutes=120)
