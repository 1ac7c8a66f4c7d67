"""`pulsecast ingest` on synthetic WFDB records written into tmp_path: the dataset contract, gaps,
rates, multi-segment records, numerics, patient ids, splits, skips, atomic writes and exit codes."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.dataset.contract import MANIFEST_COLUMNS, load_dataset
from pipelines.ingest.cohort import ingest
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.per_record import ingest_record
from pipelines.ingest.records import find_records

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # wfdb on pandas 3

FS = 125.0


def _wave(seconds: float, fs: float = FS, freq: float = 1.2, offset: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * fs))) / fs
    return offset + np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(2 * np.pi * 5 * t)


def _config(tmp_path: Path, channels: tuple[str, ...] = ("II", "ABP"), **kw) -> IngestConfig:
    return IngestConfig(raw_dir=tmp_path / "raw", dataset_dir=tmp_path / "ds", channels=channels,
                        fs=kw.pop("fs", FS), **kw)


def _write_multisegment(
    folder: Path, name: str, segments: list[tuple[str | None, int]], fs: float = FS,
    layout: list[tuple[str, str]] | None = None,
) -> Path:
    """Write a master header by hand; segments are (name or None for `~`, n_frames)."""
    lines = []
    if layout:
        lines.append(f"{name}_layout 0")
        body = "".join(f"~ 0 200/{unit} 16 0 0 0 0 {ch}\n" for ch, unit in layout)
        (folder / f"{name}_layout.hea").write_text(f"{name}_layout {len(layout)} {fs:g} 0\n" + body)
    lines += [f"{seg or '~'} {n}" for seg, n in segments]
    total = sum(n for _, n in segments)
    n_sig = len(layout) if layout else 2
    header = f"{name}/{len(lines)} {n_sig} {fs:g} {total} 10:00:00 01/02/2100\n"
    (folder / f"{name}.hea").write_text(header + "\n".join(lines) + "\n")
    return folder / name


@pytest.fixture
def two_channel(write_record: Callable[..., Path]) -> Callable[..., Path]:
    def _write(name: str, seconds: float = 20.0, folder: str = "raw", **kw) -> Path:
        signal = np.stack([_wave(seconds, offset=90.0) * 10, _wave(seconds)], axis=1)
        return write_record(name, signal, ["ABP", "II"], units=["mmHg", "mV"], folder=folder, **kw)

    return _write


def test_a_record_is_ingested_with_the_requested_channels_in_the_requested_order(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    two_channel("rec1")
    report = ingest(_config(tmp_path))
    ds = load_dataset(tmp_path / "ds")
    assert report.written and [r.record_id for r in report.ingested] == ["rec1"]
    assert ds.channels == ("II", "ABP") and ds.units == ("mV", "mmHg") and ds.fs == FS
    assert tuple(ds.manifest.columns) == MANIFEST_COLUMNS
    row = ds.manifest.iloc[0]
    assert (row.channels, row.units, row.n_samples, row.quality) == ("II,ABP", "mV,mmHg", 2500, "")
    signal = ds.signal("rec1")
    assert signal.dtype == np.float32 and signal.shape == (2500, 2)
    np.testing.assert_allclose(signal[:, 0], _wave(20.0), atol=1e-3)  # II first, in mV
    np.testing.assert_allclose(signal[:, 1], _wave(20.0, offset=90.0) * 10, atol=0.05)


def test_an_aliased_channel_name_is_matched_and_stored_under_the_requested_name(
    tmp_path: Path, write_record: Callable[..., Path]
) -> None:
    write_record("mit", _wave(12.0, fs=360.0), ["MLII"], fs=360.0)
    ingest(_config(tmp_path, channels=("II",)))
    ds = load_dataset(tmp_path / "ds")
    assert ds.channels == ("II",) and ds.signal("mit").shape == (1500, 1)
    np.testing.assert_allclose(ds.signal("mit")[10:-10, 0], _wave(12.0)[10:-10], atol=2e-3)


def test_a_record_lacking_a_requested_channel_is_skipped_with_its_name(
    tmp_path: Path, two_channel: Callable[..., Path], write_record: Callable[..., Path]
) -> None:
    two_channel("good")
    bad = write_record("ecg_only", _wave(20.0)[:, None], ["II"])
    report = ingest(_config(tmp_path))
    assert report.skipped == ((str(bad), "lacks channels ABP (has II)"),)
    assert [r.record_id for r in report.ingested] == ["good"]


def test_a_record_shorter_than_min_duration_is_skipped_with_its_length(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    two_channel("long")
    short = two_channel("short", seconds=4.0)
    report = ingest(_config(tmp_path))
    assert report.skipped == (
        (str(short), "piece at +0.0 s lasts 4.0 s, shorter than min_duration_s 10 s"),
    )


def test_a_short_nan_gap_stays_nan_in_place_and_a_long_one_splits_the_record(
    tmp_path: Path, write_record: Callable[..., Path]
) -> None:
    x = _wave(200.0)
    x[int(20 * FS) : int(25 * FS)] = np.nan  # 5 s gap: stays inside the row
    x[int(60 * FS) : int(140 * FS)] = np.nan  # 80 s gap > max_gap_s 60: splits
    write_record("gappy", x, ["II"])
    report = ingest(_config(tmp_path, channels=("II",)))
    ds = load_dataset(tmp_path / "ds")
    assert [r.record_id for r in report.ingested] == ["gappy_000", "gappy_001"]
    first = ds.signal("gappy_000")[:, 0]
    assert len(first) == int(60 * FS)
    assert np.isnan(first[int(20 * FS) : int(25 * FS)]).all()
    assert np.isfinite(first[: int(20 * FS)]).all() and np.isfinite(first[int(25 * FS) :]).all()
    assert ds.manifest.start_time.isna().all()  # a header without base_date has no start time
    assert len(ds.signal("gappy_001")) == int(60 * FS)


def test_fill_gap_s_interpolates_short_gaps_per_channel_and_keeps_longer_ones_nan(
    tmp_path: Path, write_record: Callable[..., Path]
) -> None:
    ii, abp = _wave(60.0), _wave(60.0, offset=80.0)
    ii[int(10 * FS) : int(11 * FS)] = np.nan  # 1 s: filled
    abp[int(30 * FS) : int(34 * FS)] = np.nan  # 4 s > fill_gap_s 2: stays NaN
    write_record("gappy", np.column_stack([ii, abp]), ["II", "ABP"])
    ingest(_config(tmp_path, fill_gap_s=2.0))
    ds = load_dataset(tmp_path / "ds")
    got = ds.signal("gappy")
    a, b = int(10 * FS), int(11 * FS)
    expected = np.interp(np.arange(a, b), [a - 1, b], [got[a - 1, 0], got[b, 0]])
    np.testing.assert_allclose(got[a:b, 0], expected, rtol=1e-5, atol=1e-5)  # a straight line
    assert np.isnan(got[int(30 * FS) : int(34 * FS), 1]).all()
    assert np.isfinite(got[:, 0]).all() and np.isfinite(got[: int(30 * FS), 1]).all()
    assert ds.config["fill_gap_s"] == 2.0  # recorded, so retraining ingests new records alike


def test_fill_short_gaps_leaves_the_edges_alone() -> None:
    from models.conditioning import fill_short_gaps

    x = np.array([[np.nan], [1.0], [np.nan], [3.0], [np.nan]], dtype=np.float32)
    assert fill_short_gaps(x, 1) == 1
    np.testing.assert_array_equal(x[1:4, 0], [1.0, 2.0, 3.0])
    assert np.isnan(x[0, 0]) and np.isnan(x[4, 0])  # nothing to interpolate from outside


def test_a_channel_at_another_rate_is_resampled_to_fs(
    tmp_path: Path, write_record: Callable[..., Path]
) -> None:
    write_record("fast", _wave(20.0, fs=500.0)[:, None], ["II"], fs=500.0)
    ingest(_config(tmp_path, channels=("II",)))
    signal = load_dataset(tmp_path / "ds").signal("fast")
    assert signal.shape == (2500, 1)
    np.testing.assert_allclose(signal[10:-10, 0], _wave(20.0)[10:-10], atol=2e-3)


def test_upsampling_beyond_the_limit_is_skipped_naming_the_rates(
    tmp_path: Path, write_record: Callable[..., Path]
) -> None:
    rec = write_record("slow", _wave(60.0, fs=5.0, freq=0.2)[:, None], ["II"], fs=5.0)
    report = ingest(_config(tmp_path, channels=("II",)))
    assert not report.written
    assert report.skipped == (
        (str(rec), "channel II at 5 Hz cannot be resampled to 125 Hz (more than 10x upsampling)"),
    )


def test_a_multisegment_record_with_a_null_segment_is_one_row_with_nan_in_the_gap(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    folder = two_channel("ms_1", seconds=12.0, folder="raw/ms").parent
    two_channel("ms_2", seconds=12.0, folder="raw/ms")
    _write_multisegment(folder, "ms", [("ms_1", 1500), (None, 250), ("ms_2", 1500)])
    assert find_records(tmp_path / "raw") == [folder / "ms"]
    report = ingest(_config(tmp_path))
    signal = load_dataset(tmp_path / "ds").signal("ms")
    assert [r.record_id for r in report.ingested] == ["ms"] and signal.shape == (3250, 2)
    assert np.isnan(signal[1500:1750]).all()
    assert np.isfinite(signal[:1500]).all() and np.isfinite(signal[1750:]).all()


def test_a_null_segment_longer_than_max_gap_splits_the_record_into_numbered_rows(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    folder = two_channel("ms_1", seconds=12.0, folder="raw/ms").parent
    two_channel("ms_2", seconds=12.0, folder="raw/ms")
    _write_multisegment(folder, "ms", [(None, 10_000), ("ms_1", 1500), (None, 8_000),
                                       ("ms_2", 1500), ("ms_3", 10_000_000)])  # ms_3 is missing
    report = ingest(_config(tmp_path))
    ds = load_dataset(tmp_path / "ds")
    assert [r.record_id for r in report.ingested] == ["ms_000", "ms_001"]
    assert ds.manifest.start_time.tolist() == ["2100-02-01T10:01:20", "2100-02-01T10:02:36"]
    assert all(len(ds.signal(r)) == 1500 for r in ds.record_ids)


def test_a_channel_missing_from_some_segments_of_a_variable_layout_is_nan_there(
    tmp_path: Path, write_record: Callable[..., Path]
) -> None:
    folder = write_record("v_1", _wave(12.0)[:, None], ["II"], folder="raw/v").parent
    write_record("v_2", np.stack([_wave(12.0), _wave(12.0, offset=90)], axis=1), ["II", "ABP"],
                 units=["mV", "mmHg"], folder="raw/v")
    _write_multisegment(folder, "v", [("v_1", 1500), ("v_2", 1500)],
                        layout=[("II", "mV"), ("ABP", "mmHg")])
    assert find_records(tmp_path / "raw") == [folder / "v"]
    ingest(_config(tmp_path))
    ds = load_dataset(tmp_path / "ds")
    signal = ds.signal("v")
    assert ds.units == ("mV", "mmHg") and signal.shape == (3000, 2)
    assert np.isfinite(signal[:, 0]).all()
    assert np.isnan(signal[:1500, 1]).all() and np.isfinite(signal[1500:, 1]).all()


def test_numerics_are_skipped_without_the_flag_and_zeros_are_missing_with_it(
    tmp_path: Path, write_record: Callable[..., Path]
) -> None:
    hr = np.full(30, 80.0)
    hr[10:12] = 0.0
    rec = write_record("p000001-2100-01-01-00-00n", np.stack([hr, np.full(30, 97.0)], axis=1),
                       ["HR", "SpO2"], fs=1 / 60, units=["bpm", "%"])
    report = ingest(_config(tmp_path, channels=("HR", "SPO2"), fs=1 / 60))
    assert report.skipped == ((str(rec), "numerics record (use --numerics)"),)
    report = ingest(_config(tmp_path, channels=("HR", "SPO2"), fs=1 / 60, numerics=True))
    signal = load_dataset(tmp_path / "ds").signal(report.ingested[0].record_id)
    assert report.ingested[0].patient_id == "p000001" and signal.shape == (30, 2)
    assert np.isnan(signal[10:12, 0]).all() and np.isfinite(np.delete(signal, [10, 11], 0)).all()


def test_with_numerics_a_waveform_record_is_skipped(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    rec = two_channel("wave")
    report = ingest(_config(tmp_path, numerics=True))
    assert report.skipped == (
        (str(rec), "not a numerics record (--numerics ingests only numerics records)"),
    )


def test_a_corrupt_header_is_skipped_and_the_other_records_still_go_in(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    two_channel("good")
    (tmp_path / "raw" / "broken.hea").write_text("broken two 125 abc\nnonsense\n")
    report = ingest(_config(tmp_path))
    assert [r.record_id for r in report.ingested] == ["good"]
    (path, reason), = report.skipped
    assert path == str(tmp_path / "raw" / "broken")
    assert reason.startswith("unreadable header broken.hea: ")


def test_a_header_opening_with_a_slash_line_is_skipped_with_a_reason_not_lost(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    # Found by the ingest fuzzer: "/" before the record line looked like a multi-segment master
    # naming the record itself as its segment, so the record vanished from find_records.
    two_channel("good")
    bad = two_channel("bad")
    hea = bad.with_suffix(".hea")
    hea.write_text("/\n" + hea.read_text())
    bad.with_suffix(".dat").write_bytes(b"")
    assert find_records(tmp_path / "raw") == [bad, tmp_path / "raw" / "good"]
    report = ingest(_config(tmp_path))
    assert [r.record_id for r in report.ingested] == ["good"]
    (path, reason), = report.skipped
    assert path == str(bad) and reason.strip()


def test_a_record_with_a_missing_or_truncated_signal_file_is_skipped_with_the_reason(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    missing, truncated = two_channel("missing"), two_channel("truncated")
    missing.with_suffix(".dat").unlink()
    with open(truncated.with_suffix(".dat"), "r+b") as fh:
        fh.truncate(1000)
    report = ingest(_config(tmp_path))
    assert not report.written
    assert report.skipped[0] == (str(missing), "missing signal file missing.dat")
    assert report.skipped[1][0] == str(truncated)
    assert report.skipped[1][1].startswith("unreadable signal data: ")


def test_patient_ids_come_from_the_config_a_mimic_name_an_own_folder_or_the_record_name(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    two_channel("s00042-2100-01-01", folder="raw/shared")
    two_channel("plain", folder="raw/shared")
    two_channel("alone", folder="raw/patient_a")
    two_channel("r1", folder="raw/p000123/deep")
    ids = {r.record_id: r.patient_id for r in ingest(_config(tmp_path)).ingested}
    assert ids == {"s00042-2100-01-01": "s00042", "plain": "plain", "alone": "patient_a",
                   "r1": "p000123"}
    forced = ingest(_config(tmp_path, patient_id="X1")).ingested
    assert {r.patient_id for r in forced} == {"X1"}


def test_splits_are_by_patient_and_identical_on_every_run(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    for p in range(12):
        for r in range(2):
            two_channel(f"rec{r}", seconds=11.0, folder=f"raw/p{p:06d}")
    first = load_dataset(ingest(_config(tmp_path)).dataset_dir).manifest
    second = load_dataset(ingest(_config(tmp_path)).dataset_dir).manifest
    assert first[["record_id", "split"]].equals(second[["record_id", "split"]])
    assert (first.groupby("patient_id")["split"].nunique() == 1).all()
    assert len(first) == 24 and first.record_id.is_unique  # same names in 12 folders


def test_an_existing_dataset_is_replaced_and_kept_when_nothing_is_ingested(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    two_channel("a")
    ingest(_config(tmp_path))
    two_channel("b")
    ingest(_config(tmp_path))
    assert load_dataset(tmp_path / "ds").record_ids == ["a", "b"]
    report = ingest(_config(tmp_path, channels=("PAP",)))
    assert not report.written and load_dataset(tmp_path / "ds").record_ids == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_interrupted_ingest_leaves_no_half_written_dataset(
    tmp_path: Path, two_channel: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.ingest.cohort as ingest_module

    two_channel("a")
    two_channel("b")
    real = ingest_module.ingest_record

    def dies_on_b(path: Path, config: IngestConfig):
        if path.name == "b":
            raise KeyboardInterrupt
        return real(path, config)

    monkeypatch.setattr(ingest_module, "ingest_record", dies_on_b)
    with pytest.raises(KeyboardInterrupt):
        ingest(_config(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_dataset_json_holds_the_config_units_version_and_skips(
    tmp_path: Path, two_channel: Callable[..., Path], write_record: Callable[..., Path]
) -> None:
    two_channel("a")
    bad = write_record("ecg", _wave(20.0)[:, None], ["II"])
    ingest(_config(tmp_path))
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["raw_dir"] == str(tmp_path / "raw") and meta["channels"] == ["II", "ABP"]
    assert meta["units"] == ["mV", "mmHg"] and meta["fs"] == FS
    assert meta["split_fractions"] == [0.7, 0.15, 0.15] and meta["pulsecast_version"]
    assert meta["skipped"] == [{"record": str(bad), "reason": "lacks channels ABP (has II)"}]


def test_the_sha256_changes_with_the_raw_bytes(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    rec = two_channel("a")
    first = ingest_record(rec, _config(tmp_path)).rows[0]["sha256"]
    assert ingest_record(rec, _config(tmp_path)).rows[0]["sha256"] == first
    with open(rec.with_suffix(".dat"), "r+b") as fh:
        fh.write(b"\x01\x02")
    assert ingest_record(rec, _config(tmp_path)).rows[0]["sha256"] != first


def test_ingest_record_results_pickle_and_a_process_pool_gives_the_same_dataset(
    tmp_path: Path, two_channel: Callable[..., Path]
) -> None:
    for name in ("a", "b", "c"):
        two_channel(name)
    result = ingest_record(tmp_path / "raw" / "a", _config(tmp_path))
    assert pickle.loads(pickle.dumps(result)).rows == result.rows
    one = load_dataset(ingest(_config(tmp_path)).dataset_dir).manifest
    two = load_dataset(ingest(_config(tmp_path, workers=2)).dataset_dir).manifest
    assert one.equals(two)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fs": -1}, "fs must be > 0, got -1"),
        ({"split_fractions": (0.5, 0.2, 0.2)},
         "split fractions must sum to 1, got (0.5, 0.2, 0.2)"),
        ({"channels": ()}, "channels must be non-empty names without commas, got ()"),
        ({"channels": ("II", "ii")}, "channels must not repeat, got ('II', 'ii')"),
        ({"max_gap_s": -2}, "max_gap_s must be >= 0, got -2"),
        ({"fill_gap_s": -1}, "fill_gap_s must be >= 0, got -1"),
        ({"workers": 0}, "workers must be an integer >= 1, got 0"),
    ],
)
def test_a_bad_config_value_is_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    kwargs = {"channels": ("II",), **kwargs}
    with pytest.raises(ValueError) as err:
        _config(tmp_path, **kwargs)
    assert str(err.value) == message


def test_a_missing_raw_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"raw folder does not exist: {tmp_path / 'raw'}"):
        ingest(_config(tmp_path))


def test_the_cli_exits_zero_on_success_and_one_when_nothing_is_ingested(
    tmp_path: Path, two_channel: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    two_channel("a")
    args = ["ingest", "--raw", str(tmp_path / "raw"), "--dataset", str(tmp_path / "ds"),
            "--fs", "125"]
    assert main([*args, "--channels", "II,ABP"]) == 0
    assert "ingested 1 rows from 1 records" in capsys.readouterr().out
    assert main([*args, "--channels", "PAP"]) == 1
    assert "lacks channels PAP" in capsys.readouterr().out


def test_the_cli_with_strict_fails_and_writes_nothing_when_a_record_is_skipped(
    tmp_path: Path, two_channel: Callable[..., Path], write_record: Callable[..., Path]
) -> None:
    two_channel("a")
    write_record("ecg", _wave(20.0)[:, None], ["II"])
    args = ["ingest", "--raw", str(tmp_path / "raw"), "--dataset", str(tmp_path / "ds"),
            "--channels", "II,ABP", "--fs", "125"]
    assert main([*args, "--strict"]) == 1 and not (tmp_path / "ds").exists()
    assert main(args) == 0 and (tmp_path / "ds").exists()


def test_the_cli_names_a_bad_value_and_exits_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "raw").mkdir()
    base = ["ingest", "--raw", str(tmp_path / "raw"), "--dataset", str(tmp_path / "ds"),
            "--channels", "II"]
    assert main([*base, "--fs", "-1"]) == 1
    assert "fs must be > 0, got -1" in caplog.text
    assert main([*base, "--fs", "125", "--split-fractions", "0.5,0.2,0.2"]) == 1
    assert "split fractions must sum to 1, got (0.5, 0.2, 0.2)" in caplog.text
    assert main([*base[:2], str(tmp_path / "nope"), *base[3:], "--fs", "125"]) == 1
    assert f"raw folder does not exist: {tmp_path / 'nope'}" in caplog.text


# --- bad input: a requested channel absent or flat for the whole record, or with no usable
# stretch left once its still stretches are cut (tests/test_ingest_stretches.py), is skipped ---


def _write_digital(folder: Path, name: str, digital: np.ndarray, channels: list[str],
                   units: list[str], gains: list[float]) -> Path:
    """A fmt-16 record from ADC values; -32768 is WFDB's "no sample" (a channel may be all of it,
    which `wfdb.wrsamp` from physical values cannot write)."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=FS, units=units, sig_name=channels, d_signal=digital.astype(np.int16),
                fmt=["16"] * len(channels), adc_gain=gains, baseline=[0] * len(channels),
                write_dir=str(folder))
    return folder / name


@pytest.fixture
def bad_input(tmp_path: Path, two_channel: Callable[..., Path]) -> dict[str, Path]:
    """One good record and one each with ABP absent, flat, clipped or disconnected (noise)."""
    n = int(60 * FS)
    ecg = np.round(_wave(60.0) * 200)  # II at 200 adu/mV
    abp = np.round(_wave(60.0, offset=90.0) * 10 * 50)  # ABP at 50 adu/mmHg
    pinned = abp.copy()
    pinned[int(0.04 * n):] = 32767  # the ADC's top (16 bits) after 2.4 s: 655 mmHg
    noise = np.round(-14.8 * 50 + np.random.default_rng(0).normal(0, 5, n))  # 0.1 mmHg
    folder = tmp_path / "raw"
    records = {"good": two_channel("good", seconds=60.0)}
    for name, pressure in (("absent", np.full(n, -32768)), ("flat", np.full(n, 80 * 50)),
                           ("clipped", pinned), ("open", noise)):
        records[name] = _write_digital(folder, name, np.stack([ecg, pressure], axis=1),
                                       ["II", "ABP"], ["mV", "mmHg"], [200.0, 50.0])
    return records


def test_records_whose_channel_is_absent_flat_or_clipped_throughout_are_skipped_by_reason(
    tmp_path: Path, bad_input: dict[str, Path]
) -> None:
    report = ingest(_config(tmp_path))
    assert report.written and [r.record_id for r in report.ingested] == ["good"]
    reasons = {Path(path).name: reason for path, reason in report.skipped}
    assert reasons == {
        "absent": "ABP is absent for the whole record (no valid sample)",
        "flat": "ABP is flat for the whole record (std 0 mmHg, at most 0.5)",
        # the clipped stretch is cut like a gap (issue 23): 2.4 s of ABP remain, too short
        "clipped": "ABP: no usable stretch of at least 10 s: 57.6 s clipped at the ADC limit "
                   "(655 mmHg), 2.4 s in pieces shorter than 10 s",
        "open": "ABP is flat for the whole record (std 0.1 mmHg, at most 0.5)",
    }
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert {Path(s["record"]).name for s in meta["skipped"]} == set(reasons)
    assert meta["min_channel_std"] == {"mmHg": 0.5, "mV": 0.02}
    assert meta["min_still_s"] == 10.0 and meta["skip_unusable_channels"] is True
    assert sorted(p.stem for p in (tmp_path / "ds" / "signals").iterdir()) == ["good"]


def test_a_record_with_only_its_requested_channel_absent_names_it(
    tmp_path: Path, bad_input: dict[str, Path]
) -> None:
    result = ingest_record(bad_input["absent"], _config(tmp_path, channels=("ABP",)))
    assert result.rows == () and result.skipped == (
        (str(bad_input["absent"]), "ABP is absent for the whole record (no valid sample)"),)
    assert ingest_record(bad_input["flat"], _config(tmp_path, channels=("II",))).rows


def test_the_bad_input_rule_is_configurable_and_can_be_turned_off(
    tmp_path: Path, bad_input: dict[str, Path]
) -> None:
    lenient = _config(tmp_path, min_channel_std={"mmHg": 0.01}, min_still_s=60.0)
    assert ingest_record(bad_input["open"], lenient).rows
    assert ingest_record(bad_input["clipped"], lenient).rows
    everything = ingest(_config(tmp_path, skip_unusable_channels=False))
    assert len(everything.ingested) == 5 and everything.skipped == ()
    flags = {r.record_id: r.quality for r in everything.ingested}  # flags describe, keep
    assert flags["absent"] == "empty:ABP" and flags["flat"] == "flat:ABP"
    assert "clipped:ABP" in flags["clipped"]


def test_the_cli_reports_skipped_bad_records_and_writes_the_good_ones(
    tmp_path: Path, bad_input: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["ingest", "--raw", str(tmp_path / "raw"), "--dataset", str(tmp_path / "ds"),
            "--channels", "ABP", "--fs", "125"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "skipped 4" in out and "ingested 1 rows from 5 records" in out
    assert main([*args, "--strict"]) == 1  # never half a dataset: all or (strict) nothing


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_still_s": 0.0}, "min_still_s must be > 0 seconds, got 0"),
        ({"min_still_s": float("inf")}, "min_still_s must be > 0 seconds, got inf"),
        ({"min_channel_std": {"mmHg": -1}}, "min_channel_std must map units to numbers >= 0, "
                                            "got ('mmHg', -1)"),
        ({"min_channel_std": [("mmHg",)]}, "min_channel_std must map units to numbers, "
                                           "got ('mmHg',)"),
    ],
)
def test_a_bad_bad_input_threshold_is_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        _config(tmp_path, **kwargs)
    assert str(err.value) == message


# --- splits of small synthetic cohorts (`pulsecast synth`) ---


@pytest.fixture(scope="module")
def synthetic_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("synth") / "raw"
    assert main(["synth", "--out", str(raw), "--patients", "12", "--minutes", "1",
                 "--seed", "0"]) == 0
    return raw


@pytest.mark.parametrize("n_patients", [3, 8, 12])
def test_small_synthetic_cohorts_get_a_patient_in_every_split(
    tmp_path: Path, synthetic_cohort: Path, n_patients: int
) -> None:
    import shutil

    from pipelines.dataset.splits import split_counts

    raw = tmp_path / "raw"
    for folder in sorted(p for p in synthetic_cohort.iterdir() if p.is_dir())[:n_patients]:
        shutil.copytree(folder, raw / folder.name)
    report = ingest(_config(tmp_path))
    assert report.written and not [r for _, r in report.skipped if "numerics" not in r]
    manifest = load_dataset(tmp_path / "ds").manifest
    split_of = dict(zip(manifest.patient_id, manifest.split, strict=True))
    counts = split_counts(split_of)
    assert len(split_of) == n_patients and min(counts.values()) >= 1, counts
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    again = load_dataset(ingest(_config(tmp_path)).dataset_dir).manifest
    assert again[["record_id", "split"]].equals(manifest[["record_id", "split"]])
