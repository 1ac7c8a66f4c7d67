"""One record -> manifest rows and float32 signals at the dataset's `fs`, or skip reasons.

`ingest_record` is a top-level, picklable function that only reads, so a process pool (or Ray) can
run it anywhere; `pipelines.ingest.cohort.ingest` maps it over a folder and writes the dataset.

Policy, record by record:

- Numerics records (name ends in `n`, frame rate below 1 Hz: MIMIC 1/min vitals) are ingested only
  with `numerics=True`, and then only they are; a 0 in a numerics record means "missing" -> NaN.
- With `valid_range = (low, high)`, a value at or below `low` is no reading and one above `high`
  an artefact: both NaN before gap handling, counted per record and channel (`RecordResult.
  readings`, `pipelines.ingest.validity`); a record with a channel holding no valid value at all
  is skipped with the counts in the reason.
- Every requested channel must exist (alias-matched, `pipelines.ingest.channels`) in at least one
  readable segment; in a variable-layout record a channel absent from some segments is NaN there.
- Each channel is resampled from its native rate to `fs` (`models.conditioning`);
  upsampling by more than `MAX_UPSAMPLE` is refused with the rates named. The per-record steps
  (channel plan from the header alone, one read per segment, resampling, piece finding) live in
  `pipelines.ingest.assemble`.
- Segments that are null (`~`), missing, unreadable, or carry none of the requested channels are
  gaps. Gaps up to `max_gap_s` are NaN inside a row; longer ones (and all-NaN stretches longer than
  `max_gap_s` inside the data) split the record into rows `<record>_000`, `<record>_001`, ...;
  leading and trailing gaps are dropped, and pieces shorter than `min_duration_s` are reported.
- `patient_id`: the config's, else a MIMIC id (`sNNNNN`, `pNNNNNN`) at the start of the record
  name or a folder name, else the record's folder when it holds only this record, else the name.
- Bad input (waveforms, `skip_unusable_channels`; numerics are not checked: an SpO2 of 100 % all
  along is real): a record whose requested channel is absent or flat for the whole record
  (`pipelines.ingest.quality.channel_absent_or_flat`) is skipped with the reason naming it; a
  stretch of at least `min_still_s` where a channel holds one value or sits at its ADC limits is
  a gap, cut like any other (`pipelines.ingest.assemble.cut_still`), so a record that is mostly a
  lead off keeps its usable stretches; a record is skipped when a requested channel keeps none
  of at least `min_duration_s`, the reason giving its time by cause.
- Accounts: `RecordResult.coverage` says where each channel's time went (kept, stuck, clipped,
  gap, too short, skipped with the record), for every record whose samples were read.
- `split`: the patient's hash split (`assign_split`); a full ingest then applies the cohort rule
  (`pipelines.ingest.cohort`), an incremental one keeps it for a new patient.

Each header file is parsed once per record and each signal file read once (plus once more, as
bytes, for the sha256); numerics are told from waveforms by the header before any sample is read.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from pipelines.dataset.splits import assign_split
from pipelines.ingest.assemble import (
    NO_SAMPLES,
    Coverage,
    Piece,
    Plan,
    SkipRecord,
    assemble_pieces,
    plan_channels,
)
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.quality import compute_quality, nan_fraction
from pipelines.ingest.records import RecordHeader, RecordReadError, read_header
from pipelines.ingest.samples import read_sha256
from pipelines.ingest.validity import Readings, format_duration

log = logging.getLogger(__name__)

NUMERICS_MAX_FS = 1.0  # a record named `...n` with a frame rate below this is a numerics record
MIMIC_PATIENT = re.compile(r"^(s\d{5}|p\d{6})(?!\d)")


@dataclass(frozen=True)
class RecordResult:
    """What one record gave: manifest rows with their signals, and what was skipped and why."""

    record_path: Path
    rows: tuple[dict, ...] = ()  # manifest rows, keys MANIFEST_COLUMNS
    signals: tuple[np.ndarray, ...] = ()  # float32 (time, channels), one per row
    skipped: tuple[tuple[str, str], ...] = ()  # (record path, reason)
    units: tuple[str, ...] = ()  # per requested channel, "" where unknown
    readings: Readings | None = None  # what the files held (set aside: no reading, artefact)
    coverage: Coverage | None = None  # where its time went, when its samples were read


def is_numerics(header: RecordHeader) -> bool:
    """MIMIC numerics: a record named `...n` whose frame rate is below `NUMERICS_MAX_FS`."""
    return header.name.endswith("n") and header.fs < NUMERICS_MAX_FS


def derive_patient_id(record_path: Path, raw_dir: Path, header: RecordHeader) -> str:
    """Patient id from the record's name or folders (see the module docstring for the order)."""
    try:
        rel_parts = record_path.relative_to(raw_dir).parts
    except ValueError:
        rel_parts = (record_path.name,)
    for part in (*reversed(rel_parts), raw_dir.name):
        match = MIMIC_PATIENT.match(part)
        if match:
            return match.group(1)
    folder = record_path.parent
    if folder != raw_dir:
        own = {record_path.name, *(s.name for s in header.segments if s.name)}
        own |= {f.stem for f in header.header_files}
        if {h.stem for h in folder.glob("*.hea")} <= own:
            return folder.name
    return record_path.name


def ingest_record(record_path: Path, config: IngestConfig) -> RecordResult:
    """One record -> manifest rows and float32 signals `(time, channels)` at `config.fs`, or skips.

    Never raises for a bad record: every problem becomes a `(record path, reason)` skip entry.
    """
    record_path = Path(record_path)
    key = str(record_path)
    try:
        header = read_header(record_path)
        if is_numerics(header) != config.numerics:
            raise SkipRecord("numerics record (use --numerics)" if not config.numerics else
                        "not a numerics record (--numerics ingests only numerics records)")
        plan = plan_channels(header, config.channels, config.fs)
        checked = config.skip_unusable_channels and not config.numerics
        assembled = assemble_pieces(
            header, plan, config.channels, config.fs, numerics=config.numerics,
            max_gap_s=config.max_gap_s, min_duration_s=config.min_duration_s,
            fill_gap_s=config.fill_gap_s, valid_range=config.valid_range,
            rules=config.record_rules if checked else None,
            units=record_units(header, plan, config.channels),
        )
    except (SkipRecord, RecordReadError) as err:
        reason = err.reason if isinstance(err, RecordReadError) else str(err)
        if reason == NO_SAMPLES and config.skip_unusable_channels:
            reason = "; ".join(f"{c} is absent for the whole record (no valid sample)"
                               for c in config.channels)
        log.info("skipped %s: %s", record_path, reason)
        coverage = err.coverage if isinstance(err, SkipRecord) else None
        return RecordResult(record_path, skipped=((key, reason),), coverage=coverage)
    except Exception as err:  # one odd record (a wfdb or scipy surprise) must not stop the others
        log.exception("skipped %s: unexpected error", record_path)
        reason = f"unexpected {type(err).__name__}: {err}"
        return RecordResult(record_path, skipped=((key, reason),))
    readings = assembled.readings
    if readings.any_set_aside:
        log.debug("%s: set aside %s", record_path, "; ".join(
            f"{c} {format_duration(n)} no reading, {format_duration(a)} artefact" for c, n, a in
            zip(readings.channels, readings.no_reading_s, readings.artefact_s, strict=True)))
    return _make_result(record_path, header, config, plan, assembled.pieces, assembled.short,
                        readings, assembled.coverage)


def record_units(header: RecordHeader, plan: Plan, channels: tuple[str, ...]) -> tuple[str, ...]:
    """Per requested channel, its unit in the first segment that has it."""
    return tuple(next(header.segments[i].units[m[want]] for i, m in plan.items() if want in m)
                 for want in channels)


def _make_result(
    record_path: Path,
    header: RecordHeader,
    config: IngestConfig,
    plan: Plan,
    pieces: list[Piece],
    short: list[str],
    readings: Readings | None = None,
    coverage: Coverage | None = None,
) -> RecordResult:
    """Manifest rows for the kept pieces of a record."""
    units = record_units(header, plan, config.channels)
    patient_id = config.patient_id or derive_patient_id(record_path, config.raw_dir, header)
    split = assign_split(patient_id, config.split_fractions)
    sha = read_sha256(header.files)
    rows, signals = [], []
    for k, (start_s, signal) in enumerate(pieces):
        record_id = header.name if len(pieces) == 1 else f"{header.name}_{k:03d}"
        start = header.base_datetime + timedelta(seconds=start_s) if header.base_datetime else None
        rows.append({
            "record_id": record_id, "patient_id": patient_id, "source_path": str(record_path),
            "channels": ",".join(config.channels), "units": ",".join(units), "fs": config.fs,
            "n_samples": int(signal.shape[0]), "start_time": start.isoformat() if start else None,
            "sha256": sha, "split": split,
            "quality": ",".join(compute_quality(signal, config.channels, config.fs)),
            "nan_fraction": nan_fraction(signal),
        })
        signals.append(np.ascontiguousarray(signal, dtype=np.float32))
    skipped = tuple((str(record_path), reason) for reason in short)
    return RecordResult(record_path, tuple(rows), tuple(signals), skipped, tuple(units), readings,
                        coverage)
