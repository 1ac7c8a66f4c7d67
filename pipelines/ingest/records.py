"""The wfdb edge: find WFDB records under a folder and read their headers.

Everything that touches `wfdb` or raw files lives here and in `pipelines.ingest.samples` (signal
data, raw bytes); the rest of ingest works on the plain, picklable dataclasses this module returns.

- A *record* is a `.hea` file that is not a segment of a multi-segment record in the same folder
  and not a layout header (`*_layout`). `find_records` returns record paths without suffix.
- A single-segment record is described as one segment starting at frame 0, so single- and
  multi-segment records are read by the same code.
- A multi-segment record's segments are read one at a time (never the whole span: a MIMIC record
  may span days with only minutes of segment files present). `~` null segments, missing segment
  files and unreadable segment headers are gaps.
- Every header file is read and parsed once (`pipelines.ingest.headers`, wfdb's own rules without
  its slow pandas lookups); what the data reader needs is kept in `SignalStorage`, so reading
  samples never parses a header again.
- Data are read (`pipelines.ingest.samples`) as wfdb's `rdrecord(..., smooth_frames=False)`
  reads them, so each channel keeps its native rate (`fs * samps_per_frame`); values are physical
  units (`(digital - baseline) / adc_gain`, float64), NaN where the file says "no sample".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.ingest.headers import parse_header

# The first token of a multi-segment master header's record line: `record_name/n_seg` (WFDB).
_MASTER_NAME = re.compile(r"[-\w]+/\d+")

log = logging.getLogger(__name__)


class RecordReadError(ValueError):
    """A record (or one of its segments) whose header or data cannot be read.

    The message names the record; `reason` is the same without it (for skip lists keyed by path).
    """

    def __init__(self, record_path: Path, reason: str) -> None:
        super().__init__(f"record {record_path}: {reason}")
        self.record_path = Path(record_path)
        self.reason = reason


@dataclass(frozen=True)
class SignalStorage:
    """How a segment's samples sit in its files: wfdb's per-signal read fields, one per channel."""

    file_name: tuple[str, ...]
    fmt: tuple[str, ...]
    byte_offset: tuple[int | None, ...]
    skew: tuple[int | None, ...]
    init_value: tuple[int | None, ...]
    adc_gain: tuple[float, ...]
    baseline: tuple[int, ...]
    # the ADC's resolution (bits) and zero, None where the header leaves them out: with `fmt`,
    # the ADC limits a clipped channel sits at (`pipelines.ingest.samples.adc_limits`)
    adc_res: tuple[int | None, ...] = ()
    adc_zero: tuple[int | None, ...] = ()


@dataclass(frozen=True)
class SegmentInfo:
    """One segment of a record. `start` and `n_frames` count frames at the record's `fs`."""

    name: str | None  # None for a `~` null segment
    start: int
    n_frames: int
    readable: bool = False
    gap_reason: str = ""  # why an unreadable segment is a gap
    fs: float = 0.0
    channels: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    samps_per_frame: tuple[int, ...] = ()
    files: tuple[Path, ...] = ()  # header and signal files of this segment
    storage: SignalStorage | None = None  # set when readable

    def rate(self, index: int) -> float:
        """Native rate (Hz) of channel `index` of this segment."""
        return self.fs * self.samps_per_frame[index]


@dataclass(frozen=True)
class RecordHeader:
    """What ingest needs to know about a record before reading any samples."""

    path: Path  # record path without suffix
    name: str
    fs: float  # frame rate, Hz
    n_frames: int
    channels: tuple[str, ...]  # every channel of the record (union over segments), layout order
    units: tuple[str, ...]
    base_datetime: datetime | None
    multi_segment: bool
    segments: tuple[SegmentInfo, ...]
    header_files: tuple[Path, ...]  # master and layout headers (the segments list their own)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every existing file that makes up the record, in a stable order."""
        seg_files = [f for s in self.segments for f in s.files]
        return tuple(dict.fromkeys([*self.header_files, *seg_files]))


def _header_lines(path: Path) -> tuple[str, list[str]]:
    """The record line and the following non-comment lines of a header file (cheap, no wfdb)."""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        return "", []
    return lines[0], lines[1:]


def find_records(raw_dir: Path, recursive: bool = True) -> list[Path]:
    """Record paths (no suffix), sorted, under `raw_dir`.

    Segment headers named by a multi-segment master header in the same folder, and layout headers,
    are parts of a record, not records. A header is a master only when its record line starts
    with `name/n_seg` (n_seg digits); a mangled record line such as `/` makes no parts, so the
    record is still found and its reader reports what is wrong with it, and no header hides itself.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw folder does not exist: {raw_dir}")
    headers = sorted(raw_dir.rglob("*.hea") if recursive else raw_dir.glob("*.hea"))
    parts: set[Path] = set()
    for hea in headers:
        try:
            first, rest = _header_lines(hea)
        except OSError:
            continue
        tokens = first.split()
        if tokens and _MASTER_NAME.fullmatch(tokens[0]):
            named = {hea.parent / ln.split()[0] for ln in rest if ln.split()[0] != "~"}
            parts.update(named - {hea.with_suffix("")})
    records = [h.with_suffix("") for h in headers]
    return [r for r in records if r not in parts and not r.name.endswith("_layout")]


def _read_fields(path: Path) -> dict[str, Any]:
    """Parsed fields of the header of record or segment `path` (no suffix), read as wfdb does."""
    text = path.with_suffix(".hea").read_text(encoding="ascii", errors="ignore")
    return parse_header(text)


def _segment_info(
    path: Path, start: int, n_frames: int, fields: dict[str, Any] | None = None
) -> SegmentInfo:
    """Segment at `path` from its parsed header `fields` (read here when None).

    A missing or unreadable header, or a missing signal file, makes the segment a gap with its
    reason.
    """
    name = path.name
    hea = path.with_suffix(".hea")
    if fields is None:
        if not hea.exists():
            return SegmentInfo(name, start, n_frames, gap_reason=f"missing segment file {hea.name}")
        try:
            fields = _read_fields(path)
        except Exception as err:  # a header parse raises assorted built-ins, as wfdb's does
            return SegmentInfo(name, start, n_frames, gap_reason=f"unreadable {hea.name}: {err}")
    n_sig = int(fields["n_sig"])
    data_files = [path.parent / f for f in dict.fromkeys(fields["file_name"])]
    absent = [f.name for f in data_files if not f.exists()]
    if absent:
        return SegmentInfo(name, start, n_frames, gap_reason=f"missing signal file {absent[0]}")
    storage = SignalStorage(
        **{k: tuple(fields[k]) for k in ("file_name", "fmt", "byte_offset", "skew", "init_value",
                                         "adc_gain", "baseline", "adc_res", "adc_zero")}
    )
    return SegmentInfo(
        name=name,
        start=start,
        n_frames=int(fields["sig_len"] or 0),
        readable=True,
        fs=float(fields["fs"]),
        channels=tuple(fields["sig_name"]),
        units=tuple(u or "" for u in (fields["units"] or [""] * n_sig)),
        samps_per_frame=tuple(int(s) for s in (fields["samps_per_frame"] or [1] * n_sig)),
        files=(hea, *data_files),
        storage=storage,
    )


def _base_datetime(fields: dict[str, Any]) -> datetime | None:
    if fields["base_date"] is None or fields["base_time"] is None:
        return None
    return datetime.combine(fields["base_date"], fields["base_time"])


def read_header(record_path: Path) -> RecordHeader:
    """Header of a single- or multi-segment record, with every segment's header read once.

    Raises RecordReadError naming the record when its own header cannot be read.
    """
    record_path = Path(record_path)
    hea = record_path.with_suffix(".hea")
    try:
        fields = _read_fields(record_path)
    except Exception as err:  # a malformed header raises assorted built-ins
        raise RecordReadError(record_path, f"unreadable header {hea.name}: {err}") from err
    if fields["n_seg"] is None:
        seg = _segment_info(record_path, 0, int(fields["sig_len"] or 0), fields)
        if not seg.readable:
            raise RecordReadError(record_path, seg.gap_reason)
        return RecordHeader(
            path=record_path, name=record_path.name, fs=float(fields["fs"]),
            n_frames=seg.n_frames, channels=seg.channels, units=seg.units,
            base_datetime=_base_datetime(fields), multi_segment=False, segments=(seg,),
            header_files=(),
        )
    segments: list[SegmentInfo] = []
    header_files = [hea]
    layout_channels: tuple[str, ...] = ()
    layout_units: tuple[str, ...] = ()
    start = 0
    for i, (name, n) in enumerate(zip(fields["seg_name"], fields["seg_len"], strict=True)):
        if i == 0 and int(n) == 0:  # variable layout: the layout header lists every channel
            layout = _segment_info(record_path.parent / name, 0, 0)
            if layout.readable:
                layout_channels, layout_units = layout.channels, layout.units
                header_files.append(layout.files[0])
            continue
        if name == "~":
            segments.append(SegmentInfo(None, start, int(n), gap_reason="null segment"))
        else:
            seg = _segment_info(record_path.parent / name, start, int(n))
            # trust the master's length for the timeline, the segment's for reading
            segments.append(seg)
        start += int(n)
    channels, units = _union_channels(layout_channels, layout_units, segments)
    return RecordHeader(
        path=record_path, name=record_path.name, fs=float(fields["fs"]), n_frames=start,
        channels=channels, units=units, base_datetime=_base_datetime(fields), multi_segment=True,
        segments=tuple(segments), header_files=tuple(header_files),
    )


def _union_channels(
    layout_channels: tuple[str, ...], layout_units: tuple[str, ...], segments: list[SegmentInfo]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Channel names in layout order then first appearance; units from the first segment with it."""
    names = list(layout_channels)
    for seg in segments:
        names.extend(c for c in seg.channels if c not in names)
    units = {}
    for seg in segments:
        for c, u in zip(seg.channels, seg.units, strict=False):
            units.setdefault(c, u)
    for c, u in zip(layout_channels, layout_units, strict=False):
        units.setdefault(c, u)
    return tuple(names), tuple(units.get(c, "") for c in names)
