"""Ingest keeps every usable stretch (issue 23): a stretch where a channel holds one value or sits
at its ADC limits for at least `min_still_s` is a gap, the rest of the record is kept; where the
time went is reported per record and in total; a mangled rate field is refused.

Every record is written here with `wfdb.wrsamp` (ADC values, so levels and rails are exact)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.ingest.cohort import coverage_totals, ingest
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.headers import parse_header
from pipelines.ingest.per_record import ingest_record
from pipelines.ingest.quality import RecordRules
from pipelines.ingest.records import read_header
from pipelines.ingest.samples import adc_limits
from pipelines.ingest.stretches import find_still

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # wfdb on pandas 3

GAIN = 200.0  # adu/mV, as MIMIC's ECG leads


def _ecg(seconds: float, fs: float) -> np.ndarray:
    """A moving lead II in mV: a 72 bpm beat with a QRS spike, never near 0 for long."""
    t = np.arange(int(round(seconds * fs))) / fs
    return 0.3 + 0.1 * np.sin(2 * np.pi * 1.2 * t) + np.sin(2 * np.pi * 1.2 * t) ** 31


def _write(folder: Path, name: str, mv: np.ndarray, fs: float, *, base_datetime=None) -> Path:
    """Lead II from mV values (NaN: WFDB's "no sample") as fmt 16 at `GAIN`, 16-bit ADC."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    digital = np.where(np.isnan(mv), -32768, np.clip(np.round(np.nan_to_num(mv) * GAIN),
                                                     -32767, 32767))
    wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=["II"], d_signal=digital[:, None].astype(
        np.int16), fmt=["16"], adc_gain=[GAIN], baseline=[0], base_datetime=base_datetime,
        write_dir=str(folder))
    return folder / name


def _config(tmp_path: Path, fs: float, **kw) -> IngestConfig:
    return IngestConfig(raw_dir=tmp_path / "raw", dataset_dir=tmp_path / "ds", channels=("II",),
                        fs=fs, **kw)


def _adds_up(coverage, j: int = 0) -> float:
    return (coverage.kept_s[j] + coverage.stuck_s[j] + coverage.clipped_s[j]
            + coverage.gap_s[j] + coverage.short_s[j] + coverage.skipped_s[j])


def test_a_three_hour_record_with_its_lead_off_95_percent_keeps_its_usable_minutes_as_rows(
    tmp_path: Path,
) -> None:
    import datetime

    import pandas as pd

    fs, hours = 50.0, 3.0
    ii = np.zeros(int(hours * 3600 * fs))  # lead off: 0 mV
    usable = [(1800, 180), (5400, 180), (9600, 180)]  # (start s, seconds): 9 min of 3 h
    for start, seconds in usable:
        ii[int(start * fs) : int((start + seconds) * fs)] = _ecg(seconds, fs)
    _write(tmp_path / "raw", "s00001-long", ii, fs,
           base_datetime=datetime.datetime(2100, 1, 2, 8, 0))

    report = ingest(_config(tmp_path, fs))

    assert report.skipped == ()
    rows = sorted(report.ingested, key=lambda r: r.record_id)
    assert [r.record_id for r in rows] == [f"s00001-long_{k:03d}" for k in range(3)]
    for row in rows:  # each usable stretch whole, give or take the samples that touch 0
        assert row.duration_s == pytest.approx(180, abs=0.1)
    manifest = pd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    starts = [t[11:16] for t in sorted(manifest.start_time)]
    assert starts == ["08:30", "09:30", "10:40"]
    ((_, coverage),) = report.coverage
    assert coverage.duration_s == hours * 3600
    assert coverage.kept_s[0] == pytest.approx(540, abs=0.5)
    assert coverage.stuck_s[0] == pytest.approx(hours * 3600 - 540, abs=0.5)  # 2.85 h dropped
    assert _adds_up(coverage) == pytest.approx(coverage.duration_s)
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    (total,) = meta["kept_and_dropped"]["total"]
    assert total["channel"] == "II" and total["records"] == 1
    assert total["stuck_s"] == pytest.approx(10260, abs=0.5) and total["clipped_s"] == 0
    (entry,) = meta["kept_and_dropped"]["records"]
    assert entry["record"].endswith("s00001-long") and entry["kept_s"] == total["kept_s"]
    text = " ".join(report.render().split())
    assert "time kept and dropped (1 records read):" in text
    assert "II: kept 9 min of 3 h (5.0%); dropped: stuck/flat 2.85 h" in text


def test_a_record_with_no_usable_stretch_left_is_skipped_with_its_time_by_cause(
    tmp_path: Path,
) -> None:
    fs = 50.0
    ii = np.zeros(int(1200 * fs))  # 20 min, lead off but for three 5 s bursts
    for start in (100, 500, 900):
        ii[int(start * fs) : int((start + 5) * fs)] = _ecg(5, fs)
    ii[int(1000 * fs) : int(1030 * fs)] = np.nan  # 30 s without a sample
    record = _write(tmp_path / "raw", "mostly_off", ii, fs)

    result = ingest_record(record, _config(tmp_path, fs))

    assert result.rows == ()
    ((_, reason),) = result.skipped
    assert reason == ("II: no usable stretch of at least 10 s: 19.2 min stuck at 0 mV, "
                      "15 s in pieces shorter than 10 s, 30 s gap or no reading")
    assert result.coverage.kept_s == (0.0,)
    assert result.coverage.short_s[0] == pytest.approx(15, abs=0.1)
    assert _adds_up(result.coverage) == pytest.approx(1200)


# a 16-bit ADC's lowest value is fmt 16's "no sample", so its limits are +-32767
@pytest.mark.parametrize(("adc_res", "low", "rail"), [(16, -32767, 32767), (12, -2048, 2047)])
def test_a_stretch_clipped_at_the_headers_adc_limit_becomes_a_gap_inside_the_row(
    tmp_path: Path, adc_res: int, low: int, rail: int
) -> None:
    fs = 125.0
    ii = _ecg(120, fs)
    ii[int(40 * fs) : int(70 * fs)] = rail / GAIN  # saturated at the ADC's top for 30 s
    record = _write(tmp_path / "raw", "railed", ii, fs)
    hea = record.with_suffix(".hea")  # the header's ADC resolution sets the rails
    hea.write_text(hea.read_text().replace("/mV 16 0", f"/mV {adc_res} 0"))
    assert adc_limits(read_header(record).segments[0].storage, 0) == (low / GAIN, rail / GAIN)

    result = ingest_record(record, _config(tmp_path, fs))

    (signal,) = result.signals  # 30 s is no longer than max_gap_s: a gap inside the one row
    assert signal.shape == (int(120 * fs), 1)
    gap = np.flatnonzero(np.isnan(signal[:, 0]))
    assert gap[0] == pytest.approx(40 * fs, abs=2) and gap[-1] == pytest.approx(70 * fs, abs=2)
    assert len(gap) == pytest.approx(30 * fs, abs=4)
    assert result.coverage.clipped_s[0] == pytest.approx(30, abs=0.05)
    assert result.coverage.stuck_s == (0.0,)


def test_a_still_stretch_shorter_than_min_still_s_is_kept_and_a_longer_one_is_cut(
    tmp_path: Path,
) -> None:
    fs = 125.0
    ii = _ecg(60, fs)
    ii[int(20 * fs) : int(28 * fs)] = 0.0  # 8 s at 0 mV: a pause, not a lead off
    record = _write(tmp_path / "raw", "pause", ii, fs)

    (signal,) = ingest_record(record, _config(tmp_path, fs)).signals
    assert np.isfinite(signal).all() and (signal[int(20 * fs) : int(28 * fs)] == 0).all()

    strict = ingest_record(record, _config(tmp_path, fs, min_still_s=5.0))
    (signal,) = strict.signals
    assert np.isnan(signal[int(20 * fs) + 5 : int(28 * fs) - 5]).all()
    assert strict.coverage.stuck_s[0] == pytest.approx(8, abs=0.05)


def test_a_record_flat_for_its_whole_length_is_still_skipped_with_the_whole_record_reason(
    tmp_path: Path,
) -> None:
    record = _write(tmp_path / "raw", "flat", np.full(int(60 * 125), 0.5), 125.0)

    result = ingest_record(record, _config(tmp_path, 125.0))

    assert result.skipped == ((str(record),
                               "II is flat for the whole record (std 0 mV, at most 0.02)"),)
    assert result.coverage.stuck_s == (60.0,) and result.coverage.kept_s == (0.0,)


def test_with_two_channels_a_lead_off_is_a_gap_of_its_channel_and_the_row_stays(
    tmp_path: Path,
) -> None:
    import wfdb

    fs, n = 125.0, int(120 * 125)
    ecg = np.round(_ecg(120, fs) * GAIN)
    ecg[: int(100 * fs)] = 0  # II off for 100 s, 20 s of it left
    t = np.arange(n) / fs
    abp = np.round((90 + 20 * np.sin(2 * np.pi * 1.2 * t)) * 50)
    folder = tmp_path / "raw"
    folder.mkdir()
    wfdb.wrsamp("two", fs=fs, units=["mV", "mmHg"], sig_name=["II", "ABP"],
                d_signal=np.stack([ecg, abp], axis=1).astype(np.int16), fmt=["16", "16"],
                adc_gain=[GAIN, 50.0], baseline=[0, 0], write_dir=str(folder))
    config = IngestConfig(raw_dir=folder, dataset_dir=tmp_path / "ds", channels=("II", "ABP"),
                          fs=fs)

    result = ingest_record(folder / "two", config)

    (signal,) = result.signals
    assert signal.shape == (n, 2) and np.isfinite(signal[:, 1]).all()
    assert np.isnan(signal[: int(99 * fs), 0]).all()
    assert np.isfinite(signal[-int(19 * fs) :, 0]).all()
    cov = result.coverage
    assert cov.kept_s[1] == 120 and cov.stuck_s[0] == pytest.approx(100, abs=0.05)
    assert all(_adds_up(cov, j) == pytest.approx(120) for j in range(2))

    # II with 5 s left has no usable stretch: the record goes, ABP's time with it
    ecg[: int(115 * fs)] = 0
    wfdb.wrsamp("two", fs=fs, units=["mV", "mmHg"], sig_name=["II", "ABP"],
                d_signal=np.stack([ecg, abp], axis=1).astype(np.int16), fmt=["16", "16"],
                adc_gain=[GAIN, 50.0], baseline=[0, 0], write_dir=str(folder))
    skipped = ingest_record(folder / "two", config)
    assert skipped.rows == () and skipped.skipped[0][1].startswith(
        "II: no usable stretch of at least 10 s: 1.92 min stuck at 0 mV, ")
    assert skipped.coverage.skipped_s[1] == 120 and skipped.coverage.kept_s == (0.0, 0.0)


def test_kept_and_dropped_add_up_to_the_record_and_the_cli_takes_min_still_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fs = 125.0
    ii = _ecg(200, fs)
    ii[int(30 * fs) : int(50 * fs)] = 0.0  # 20 s stuck
    ii[int(53 * fs) : int(70 * fs)] = 32767 / GAIN  # 3 s of signal, then 17 s clipped
    ii[int(120 * fs) : int(124 * fs)] = np.nan  # 4 s without a sample
    _write(tmp_path / "raw", "mixed", ii, fs)
    args = ["ingest", "--raw", str(tmp_path / "raw"), "--dataset", str(tmp_path / "ds"),
            "--channels", "II", "--fs", "125", "--max-gap-s", "2"]

    assert main(args) == 0

    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["min_still_s"] == 10.0
    (entry,) = meta["kept_and_dropped"]["records"]
    assert entry["stuck_s"] == pytest.approx(20, abs=0.05)
    assert entry["clipped_s"] == pytest.approx(17, abs=0.05)
    assert entry["short_s"] == pytest.approx(3, abs=0.05)  # between two gaps > max_gap_s
    assert entry["gap_s"] == pytest.approx(4, abs=0.05)
    parts = ("kept_s", "stuck_s", "clipped_s", "gap_s", "short_s", "skipped_s")
    assert sum(entry[k] for k in parts) == pytest.approx(entry["duration_s"]) == 200
    out = " ".join(capsys.readouterr().out.split())
    assert "time dropped per record" in out and "mixed_001" in out

    assert main([*args, "--min-still-s", "30"]) == 0  # both stretches shorter: kept as read
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["min_still_s"] == 30.0
    (entry,) = meta["kept_and_dropped"]["records"]
    assert entry["stuck_s"] == entry["clipped_s"] == 0 and entry["gap_s"] == pytest.approx(4)
    assert main([*args, "--min-still-s", "0"]) == 1


@pytest.mark.parametrize("rate", ["-1", "abc", "0"])
def test_a_mangled_rate_field_is_refused_naming_it(tmp_path: Path, rate: str) -> None:
    record = _write(tmp_path / "raw", "r", _ecg(30, 250.0), 250.0)
    hea = record.with_suffix(".hea")
    hea.write_text(hea.read_text().replace("r 1 250 ", f"r 1 {rate} ", 1))

    result = ingest_record(record, _config(tmp_path, 125.0))

    assert result.rows == () and result.skipped == ((
        str(record), f"unreadable header r.hea: fs field {rate!r} of the record line is not a "
                     "positive decimal number (leave it out for WFDB's default 250 Hz)"),)


def test_an_absent_rate_field_is_wfdbs_default_250_hz(tmp_path: Path) -> None:
    record = _write(tmp_path / "raw", "r", _ecg(30, 250.0), 250.0)
    hea = record.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(["r 1", *lines[1:]]) + "\n")  # no rate, hence no length either

    assert read_header(record).fs == 250
    assert parse_header("r 1 125/1000(0) 10\nr.dat 16\n")["fs"] == 125  # counter freq: fine


def test_find_still_finds_one_value_within_the_tolerance_and_never_a_moving_signal() -> None:
    fs, rules = 100.0, RecordRules(min_still_s=2.0)
    rng = np.random.default_rng(0)
    x = np.sin(2 * np.pi * np.arange(1000) / 97) * 10  # range 20: a band is 0.02 wide
    x[300:600] = 3.0 + rng.uniform(0, 0.02, 300)  # within one band: one value
    still = find_still(x, fs, rules)
    assert still.stuck[300:600].all() and not still.stuck[:290].any()
    assert not still.stuck[610:].any() and not still.clipped.any()
    x[300:600] = 3.0 + rng.uniform(0, 0.1, 300)  # spread over five bands: moving
    assert not find_still(x, fs, rules).stuck.any()
    x[300:600] = 3.0
    x[450] = np.nan  # a NaN ends a stretch: two of 1.5 s are too short
    assert not find_still(x, fs, rules).stuck.any()
    x[450] = 3.0
    clipped = find_still(x, fs, rules, limits=((-3.0, 3.0),))
    assert clipped.clipped[300:600].all() and not clipped.stuck.any()


# --- the 5-minute Challenge 2015 cohort keeps every record it kept (skipped without ../shared) ---

CHALLENGE_2015 = (Path(__file__).resolve().parents[1].parent / "shared" / "physionet-mirror"
                  / "challenge-2015" / "1.0.0" / "training")


@pytest.mark.shared
@pytest.mark.parametrize("channel", ["II", "ABP"])
def test_the_challenge_2015_cohort_keeps_every_record_it_kept_before_still_stretches_were_cut(
    tmp_path: Path, channel: str
) -> None:
    if not (CHALLENGE_2015 / "RECORDS").is_file():
        pytest.skip(f"Challenge 2015 mirror not found at {CHALLENGE_2015} (no ../shared)")
    report = ingest(IngestConfig(raw_dir=CHALLENGE_2015, dataset_dir=tmp_path / "ds",
                                 channels=(channel,), fs=125.0))

    kept = {Path(path).name for path, c in report.coverage if any(c.kept_s)}
    skipped = {Path(path).name: reason for path, reason in report.skipped
               if Path(path).name not in kept}
    assert len(kept) + len(skipped) == report.n_records == 263
    if channel == "II":  # 251 before: f530s (lead off 96% of it) now gives its 11.8 s of ECG
        assert len(kept) == 252 and "f530s" in kept
        assert all(r.startswith("lacks channels II") for r in skipped.values())
    else:  # 229 before and after; the same 34 skipped, flat or absent as before
        assert len(kept) == 229
        assert all(r.startswith(("ABP is flat for the whole record",
                                 "ABP is absent for the whole record")) or name == "v141l"
                   for name, r in skipped.items())
        assert skipped["v141l"].startswith("ABP: no usable stretch of at least 10 s: 5.5 min "
                                           "stuck (most at 0 mmHg)")
    assert not any(f"flat:{channel}" in r.quality and r.record_id.startswith(("b835l", "v531l"))
                   for r in report.ingested)  # their lead-off minutes are gaps now
    (total,) = coverage_totals(report.coverage)
    parts = ("kept_s", "stuck_s", "clipped_s", "gap_s", "short_s", "skipped_s")
    assert sum(total[k] for k in parts) == pytest.approx(total["duration_s"])
