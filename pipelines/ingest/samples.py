"""The wfdb data edge: a readable segment's samples in physical units (and the ADC limits they can
reach), and a record's raw bytes.

Reads with the fields `pipelines.ingest.records` already parsed into `SegmentInfo.storage`, so
reading samples never parses a header again. Values are what wfdb's `rdrecord(...,
smooth_frames=False)` gives: each channel at its native rate (`fs * samps_per_frame`), physical
units (`(digital - baseline) / adc_gain`, float64), NaN where the file says "no sample".
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipelines.ingest.records import RecordReadError, SegmentInfo, SignalStorage


def read_segment(
    record_dir: Path, segment: SegmentInfo, channel_indices: list[int]
) -> list[np.ndarray]:
    """Physical samples of the given channels of one readable segment, each at its native rate.

    Returns one float64 1-D array per index, in the order asked (NaN where the file has none):
    the values `wfdb.rdrecord(..., smooth_frames=False).e_p_signal` gives, read with the fields
    already parsed into `segment.storage` instead of parsing the header again.
    """
    from wfdb.io import _signal

    storage = segment.storage
    if not segment.readable or segment.name is None or storage is None:
        raise RecordReadError(record_dir, f"segment {segment.name} is a gap, not data")
    if not channel_indices or segment.n_frames == 0:
        return [np.empty(0) for _ in channel_indices]
    path = record_dir / segment.name
    channels = [int(i) for i in channel_indices]
    try:
        digital = _signal._rd_segment(
            file_name=list(storage.file_name), dir_name=str(Path(record_dir).absolute()),
            pn_dir=None, fmt=list(storage.fmt), n_sig=len(storage.fmt),
            sig_len=segment.n_frames, byte_offset=list(storage.byte_offset),
            samps_per_frame=list(segment.samps_per_frame), skew=list(storage.skew),
            init_value=list(storage.init_value), sampfrom=0, sampto=segment.n_frames,
            channels=channels, ignore_skew=False,
        )
        return [_physical(d, storage, c) for d, c in zip(digital, channels, strict=True)]
    except Exception as err:  # wfdb raises assorted built-ins on corrupt data
        raise RecordReadError(path, f"unreadable signal data: {err}") from err


def _physical(digital: np.ndarray, storage: SignalStorage, channel: int) -> np.ndarray:
    """wfdb's `dac`: `(digital - baseline) / adc_gain` in float64, NaN at the format's no-value."""
    from wfdb.io._signal import _digi_nan

    invalid = _digi_nan(storage.fmt[channel])
    x = digital.astype(np.float64)
    # Any no-value sample makes the minimum <= `invalid`: one cheap reduction spares the mask
    # (a full compare and a masked write) for the usual gapless channel.
    masked = invalid is not None and x.size > 0 and x.min() <= invalid
    np.subtract(x, storage.baseline[channel], out=x)
    np.divide(x, storage.adc_gain[channel], out=x)
    if masked:
        x[digital == invalid] = np.nan
    return x


def adc_limits(storage: SignalStorage, channel: int) -> tuple[float, float] | None:
    """The physical values `(low, high)` of the lowest and highest digital value channel `channel`
    can hold: its ADC's range (`adc_zero` +- 2**(`adc_res` - 1)) within its format's, less the
    format's "no sample" value; the format's alone when the header gives no resolution. None for
    a format without fixed limits or a gain that maps them to no range. Computed as `_physical`
    computes samples, so a sample at a limit equals it exactly before resampling.
    """
    from wfdb.io._signal import SAMPLE_VALUE_RANGE, _digi_nan

    fmt = storage.fmt[channel]
    if fmt not in SAMPLE_VALUE_RANGE or not storage.adc_gain[channel]:
        return None
    low, high = SAMPLE_VALUE_RANGE[fmt]
    res = storage.adc_res[channel] if channel < len(storage.adc_res) else None
    if res and 0 < res < 64:
        zero = (storage.adc_zero[channel] if channel < len(storage.adc_zero) else None) or 0
        low, high = max(low, zero - 2 ** (res - 1)), min(high, zero + 2 ** (res - 1) - 1)
    if low == _digi_nan(fmt):
        low += 1
    if low >= high:
        return None
    baseline, gain = storage.baseline[channel], storage.adc_gain[channel]
    with np.errstate(all="ignore"):  # a mangled gain (inf, nan) gives no limits, not a warning
        lo, hi = sorted(float((np.float64(d) - baseline) / gain) for d in (low, high))
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) and lo < hi else None


def read_sha256(files: tuple[Path, ...]) -> str:
    """sha256 over the raw bytes of `files`, in order (header(s) and signal files of a record)."""
    digest = hashlib.sha256()
    buf = bytearray(1 << 22)  # 4 MiB, reused: no per-block allocation
    view = memoryview(buf)
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                digest.update(view[:n])
    return digest.hexdigest()
