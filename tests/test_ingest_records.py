"""The wfdb edge of ingest reads what wfdb reads: a fast header parse gives wfdb.rdheader's fields,
segment samples equal `wfdb.rdrecord`'s, and the cached resampling filter changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.resampling import lowpass_filter, rational_ratio, resample_channel
from pipelines.ingest.headers import parse_header
from pipelines.ingest.records import read_header
from pipelines.ingest.samples import read_segment

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # wfdb on pandas 3

SIGNAL_FIELDS = ("file_name", "fmt", "samps_per_frame", "skew", "byte_offset", "adc_gain",
                 "baseline", "units", "adc_res", "adc_zero", "init_value", "checksum",
                 "block_size", "sig_name")

HEADERS = {
    "plain": "r1 2 125 1000 10:00:00 01/02/2100\n"
             "r1.dat 16 200/mV 16 0 0 0 0 II\nr1.dat 16 100(5)/mmHg 16 0 0 0 0 ABP\n",
    "defaults": "# a comment\nr2 1\nr2.dat 212\n",
    "multirate": "r3 2 62.5 100\nr3.dat 16x4:2+24 0(-3)/uV 12 7 3 -5 0 ECG lead II\n"
                 "r3.dat 16 1e2/% 16\n",
    "fractional": "r4 1 0.0166666666667 30 23:59:59.5\nr4.dat 80 10(0) 8 0 0 0 0 HR\n",
    "multisegment": "ms/3 2 125 3000 10:00:00 01/02/2100\nms_layout 0\nms_1 1500\n~ 1500\n",
}


def _wfdb_fields(path: Path) -> dict:
    import wfdb

    return dict(vars(wfdb.rdheader(str(path))))


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_a_header_parses_to_the_fields_wfdb_rdheader_gives(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.with_suffix(".hea").write_text(HEADERS[name])
    ref = _wfdb_fields(path)
    fields = parse_header(HEADERS[name])
    for key, value in fields.items():
        if key in SIGNAL_FIELDS and ref.get(key) is None:
            assert value == [], key  # wfdb leaves signal fields None when there are no signals
            continue
        if key == "n_seg" and "n_seg" not in ref:
            assert value is None  # wfdb sets no n_seg on a single-segment record
            continue
        assert value == ref[key] and type(value) is type(ref[key]), key


def test_a_malformed_record_line_raises_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid syntax in record line"):
        parse_header("broken two 125 abc\n")


def test_segment_samples_equal_what_wfdb_rdrecord_reads(
    write_record: Callable[..., Path],
) -> None:
    import wfdb

    t = np.arange(3000) / 125
    signal = np.stack([np.sin(t), 90 + 20 * np.cos(t), t % 7], axis=1)
    signal[100:140, 1] = np.nan
    rec = write_record("r", signal, ["II", "ABP", "RESP"], units=["mV", "mmHg", "NU"])
    header = read_header(rec)
    got = read_segment(rec.parent, header.segments[0], [2, 1])
    ref = wfdb.rdrecord(str(rec), channels=[2, 1], smooth_frames=False).e_p_signal
    assert header.segments[0].storage is not None
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == np.float64
        np.testing.assert_array_equal(g, r)
    assert np.isnan(got[1][100:140]).all() and np.isfinite(got[0]).all()


@pytest.mark.parametrize("fs_in,fs_out", [(250, 125), (360, 125), (125, 500), (62.5, 125)])
def test_the_cached_filter_is_the_one_resample_poly_designs(fs_in: float, fs_out: float) -> None:
    from scipy.signal import resample_poly

    up, down = rational_ratio(fs_out, fs_in)
    x = np.random.default_rng(0).standard_normal(2001)
    np.testing.assert_array_equal(
        resample_poly(x, up, down, padtype="line"),
        resample_poly(x, up, down, window=lowpass_filter(up, down), padtype="line"),
    )
    assert lowpass_filter(up, down) is lowpass_filter(up, down)


def test_a_gapless_channel_resamples_as_one_run_would() -> None:
    from scipy.signal import resample_poly

    x = np.random.default_rng(1).standard_normal(1001)
    y = resample_channel(x, 250, 125)
    np.testing.assert_array_equal(y, resample_poly(x, 1, 2, padtype="line"))
    x[500] = np.nan
    y = resample_channel(x, 250, 125)
    assert len(y) == 501 and np.isnan(y[250]) and np.isfinite(np.delete(y, 250)).all()
