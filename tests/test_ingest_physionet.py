"""Ingest on the real PhysioNet excerpts in ../shared/physionet (skipped when absent).

Every record there is either ingested or skipped with the documented reason, for three dataset
recipes; the awkward ones (variable-layout MIMIC records, missing segment files, multi-rate frames,
`.mat` and FLAC signal files, numerics) are checked for what they give.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pipelines.dataset.contract import Dataset, load_dataset
from pipelines.ingest.cohort import IngestReport, ingest
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.per_record import ingest_record
from pipelines.ingest.records import find_records

pytestmark = [pytest.mark.shared, pytest.mark.filterwarnings("ignore:The inplace keyword")]

S25047 = "mimic2wdb/s25047/s25047-2704-05-04-10-44"
P000878 = "multi-segment/p000878/p000878-2137-10-26-16-57"
NUMERICS_SKIP = "numerics record (use --numerics)"
NOT_NUMERICS = "not a numerics record (--numerics ingests only numerics records)"

# record -> "ingested" or the skip reason, for channels II,ABP at 125 Hz
EXPECTED_II_ABP = {
    "challenge-2015/a103l": "lacks channels ABP (has II, V, PLETH)",
    "formats/3000003_0003": "lacks channels ABP (has II, V)",
    "formats/test01_00s": "lacks channels II, ABP (has ECG 1, ECG 2, ECG 3, ECG 4)",
    "formats/test_generator_2": "lacks channels ABP (has squarewave, ramp, pulse, ECG, noise, "
    "sine 1 Hz, sine 8 Hz, sine 8.5 Hz, sine 15 Hz, sine 17 Hz, sine 50 Hz, EDF Annotations)",
    "icu-flac/mixedsignals": "ingested",
    S25047: "ingested",
    S25047 + "n": NUMERICS_SKIP,
    "mimicdb/03700181": "lacks channels II (has MCL1, ABP, RESP)",
    "mitdb/100": "lacks channels ABP (has MLII, V5)",
    "multi-segment/041s/041s": "lacks channels II (has III, I, V, ABP, PAP, PLETH, RESP)",
    P000878: "lacks channels ABP (has PLETH, II)",
}

# channels II at 125 Hz
EXPECTED_II = {
    "challenge-2015/a103l": "ingested",
    "formats/3000003_0003": "piece at +0.0 s lasts 8.2 s, shorter than min_duration_s 10 s",
    "formats/test01_00s": "lacks channels II (has ECG 1, ECG 2, ECG 3, ECG 4)",
    "formats/test_generator_2": "ingested",  # its `ECG` channel is an alias of II
    "icu-flac/mixedsignals": "ingested",
    S25047: "ingested",
    S25047 + "n": NUMERICS_SKIP,
    "mimicdb/03700181": "lacks channels II (has MCL1, ABP, RESP)",
    "mitdb/100": "ingested",
    "multi-segment/041s/041s": "lacks channels II (has III, I, V, ABP, PAP, PLETH, RESP)",
    P000878: "ingested",
}

# numerics HR,SPO2 at 1/60 Hz
EXPECTED_NUMERICS = {name: NOT_NUMERICS for name in EXPECTED_II} | {S25047 + "n": "ingested"}


def _outcomes(report: IngestReport, raw: Path) -> dict[str, str]:
    outcome = {}
    for row in load_dataset(report.dataset_dir).manifest.itertuples():
        outcome[str(Path(row.source_path).relative_to(raw))] = "ingested"
    for path, reason in report.skipped:
        outcome.setdefault(str(Path(path).relative_to(raw)), reason)
    return outcome


@pytest.fixture(scope="module")
def ii_abp(physionet_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ii_abp") / "ds"
    report = ingest(IngestConfig(physionet_dir, out, ("II", "ABP"), 125.0))
    return report, load_dataset(out)


@pytest.fixture(scope="module")
def ii(physionet_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ii") / "ds"
    report = ingest(IngestConfig(physionet_dir, out, ("II",), 125.0))
    return report, load_dataset(out)


def test_records_are_found_without_their_segments_or_layouts(physionet_dir: Path) -> None:
    found = [str(p.relative_to(physionet_dir)) for p in find_records(physionet_dir)]
    assert found == sorted(EXPECTED_II)


def test_every_record_is_ingested_or_skipped_as_documented_for_ii_abp(
    ii_abp: tuple[IngestReport, Dataset], physionet_dir: Path
) -> None:
    report, ds = ii_abp
    assert _outcomes(report, physionet_dir) == EXPECTED_II_ABP
    assert ds.channels == ("II", "ABP") and ds.units == ("mV", "mmHg") and ds.fs == 125.0
    for record_id in ds.record_ids:
        signal = ds.signal(record_id)
        assert signal.dtype == np.float32 and signal.ndim == 2 and signal.shape[1] == 2


def test_every_record_is_ingested_or_skipped_as_documented_for_ii(
    ii: tuple[IngestReport, Dataset], physionet_dir: Path
) -> None:
    report, ds = ii
    assert _outcomes(report, physionet_dir) == EXPECTED_II
    lengths = dict(zip(ds.manifest.record_id, ds.manifest.n_samples, strict=True))
    assert lengths["100"] == round(650000 * 125 / 360)  # MIT-BIH 360 Hz -> 125 Hz
    assert lengths["a103l"] == 82500 // 2  # .mat signal file, 250 Hz -> 125 Hz
    patients = dict(zip(ds.manifest.record_id, ds.manifest.patient_id, strict=True))
    assert patients == {
        "a103l": "challenge-2015", "test_generator_2": "test_generator_2",
        "mixedsignals": "icu-flac", "s25047-2704-05-04-10-44": "s25047", "100": "mitdb",
        "p000878-2137-10-26-16-57": "p000878",
    }


def test_numerics_ingest_only_the_numerics_record_with_zero_as_missing(
    physionet_dir: Path, tmp_path: Path
) -> None:
    report = ingest(IngestConfig(physionet_dir, tmp_path / "ds", ("HR", "SPO2"), 1 / 60,
                                 numerics=True))
    assert _outcomes(report, physionet_dir) == EXPECTED_NUMERICS
    ds = load_dataset(tmp_path / "ds")
    assert ds.units == ("bpm", "%") and set(ds.manifest.patient_id) == {"s25047"}
    values = np.concatenate([ds.signal(r) for r in ds.record_ids])
    assert not (values == 0).any() and np.isnan(values).any()  # SpO2 0 -> NaN
    assert np.nanmin(values[:, 0]) > 20 and np.nanmax(values[:, 1]) <= 100


def test_s25047_has_abp_only_in_its_last_part(
    ii_abp: tuple[IngestReport, Dataset], physionet_dir: Path
) -> None:
    import wfdb

    report, ds = ii_abp
    row = ds.manifest.set_index("record_id").loc["s25047-2704-05-04-10-44"]
    signal = ds.signal("s25047-2704-05-04-10-44")
    # the leading 25740-frame null segment is dropped: the row starts with segment 0001
    assert row.start_time == "2704-05-04T10:47:44.449000" and row.patient_id == "s25047"
    abp_minutes = np.flatnonzero(np.isfinite(signal[:, 1])) / 125 / 60
    assert abp_minutes.min() == pytest.approx(56.0, abs=0.05)  # segment 0017 at 11:43:44
    assert abp_minutes.max() == pytest.approx(69.0, abs=0.05)
    # 13 min of ABP, less 4.8 min where it holds one value (-16.8, -16 or -17.6 mmHg, ten
    # stretches of 11-95 s): those are gaps now (issue 23), counted as stuck
    assert 8.0 < np.isfinite(signal[:, 1]).sum() / 125 / 60 < 8.4
    coverage = dict(report.coverage)[str(physionet_dir / S25047)]
    assert coverage.stuck_s[1] == pytest.approx(289.9, abs=0.5)
    assert coverage.stuck_s[0] == pytest.approx(33.3, abs=0.5)  # II at 0 mV for 33 s
    assert np.isfinite(signal[:, 0]).mean() > 0.99  # II throughout
    # physical units from each segment's own gain and baseline (0017: 1/mmHg, 0018: 1.25(-100))
    seg18 = wfdb.rdrecord(str(physionet_dir / "mimic2wdb/s25047/3234460_0018"), channels=[2])
    got, kept = signal[-93975:, 1], np.isfinite(signal[-93975:, 1])  # less its still stretches
    np.testing.assert_allclose(got[kept], seg18.p_signal[kept, 0], atol=1e-4)


def test_p000878_reads_only_the_segments_that_exist(physionet_dir: Path, tmp_path: Path) -> None:
    config = IngestConfig(physionet_dir, tmp_path / "ds", ("PLETH", "II"), 125.0)
    tracemalloc.start()
    result = ingest_record(physionet_dir / P000878, config)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    (signal,) = result.signals
    # segments 0001 and 0002 (30 s) less 46 leading samples that are NaN in both channels;
    # the other 117 h of the header have no segment files
    assert signal.shape == (2000 + 1750 - 46, 2)
    assert result.rows[0]["start_time"] == "2137-10-26T16:57:39.368000"  # 0001 at 16:57:39 + 46
    assert np.isnan(signal[: 2000 - 46, 1]).all()  # segment 0001 has PLETH only
    assert np.isfinite(signal[2000 - 46 :, 1]).mean() > 0.9
    assert peak < 50e6  # the whole span (52.7M frames) would need gigabytes


def test_test_generator_2_keeps_each_channels_own_rate(physionet_dir: Path, tmp_path: Path) -> None:
    import wfdb

    path = physionet_dir / "formats/test_generator_2"
    config = IngestConfig(physionet_dir, tmp_path / "ds", ("sine 8 Hz", "ramp"), 200.0)
    (signal,) = ingest_record(path, config).signals
    native = wfdb.rdrecord(str(path), smooth_frames=False, channel_names=["sine 8 Hz", "ramp"])
    assert signal.shape == (600 * 200, 2)  # 1 Hz frames x 200 samples, not 600 averaged frames
    np.testing.assert_allclose(signal[:, 0], native.e_p_signal[0], rtol=1e-6)
    np.testing.assert_allclose(signal[:, 1], native.e_p_signal[1], rtol=1e-6)


def test_multirate_mimicdb_channels_land_on_one_clock(physionet_dir: Path, tmp_path: Path) -> None:
    config = IngestConfig(physionet_dir, tmp_path / "ds", ("V", "ABP", "RESP"), 125.0)
    result = ingest_record(physionet_dir / "mimicdb/03700181", config)
    (signal,) = result.signals
    assert result.units == ("mV", "mmHg", "mV")
    assert signal.shape == (75000, 3)  # MCL1 at 500 Hz (4 per frame) brought down to 125 Hz
    assert np.isnan(signal[-4:, 2]).all() and np.isfinite(signal[:-4, 2]).all()  # RESP skew


def test_flac_channels_with_gaps_are_read_and_resampled(
    physionet_dir: Path, tmp_path: Path
) -> None:
    config = IngestConfig(physionet_dir, tmp_path / "ds", ("II", "ABP", "Resp"), 125.0)
    result = ingest_record(physionet_dir / "icu-flac/mixedsignals", config)
    (signal,) = result.signals
    assert result.units == ("mV", "mmHg", "Ohm")
    assert abs(len(signal) - 14400 * 125 / 62.4725) < 125 * 2
    assert 0 < np.isnan(signal[:, 0]).mean() < 0.1  # II has NaN gaps, kept as NaN
