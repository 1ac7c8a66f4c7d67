"""Ingest: WFDB records under a folder -> a dataset folder (contract: `pipelines.dataset`).

`ingest_record` turns one record into manifest rows and signals, or a skip reason; it is a
top-level, picklable function that only reads, so a process pool (or Ray) can run it anywhere.
`ingest` finds the records, maps `ingest_record` over them, and writes what comes back into a staged
folder that replaces `dataset_dir` only when complete.

Policy, record by record:

- Numerics records (name ends in `n`, frame rate below 1 Hz: MIMIC 1/min vitals) are ingested only
  with `numerics=True`, and then only they are; a 0 in a numerics record means "missing" -> NaN.
- Every requested channel must exist (alias-matched, `pipelines.channels`) in at least one readable
  segment; in a variable-layout record a channel absent from some segments is NaN there.
- Each channel is resampled from its native rate to `fs` (`pipelines.resample`); upsampling by more
  than `MAX_UPSAMPLE` is refused with the rates named. The per-record steps (channel plan from
  the header alone, one read per segment, resampling, piece finding) live in `pipelines.assemble`.
- Segments that are null (`~`), missing, unreadable, or carry none of the requested channels are
  gaps. Gaps up to `max_gap_s` are NaN inside a row; longer ones (and all-NaN stretches longer than
  `max_gap_s` inside the data) split the record into rows `<record>_000`, `<record>_001`, ...;
  leading and trailing gaps are dropped, and pieces shorter than `min_duration_s` are reported.
- `patient_id`: the config's, else a MIMIC id (`sNNNNN`, `pNNNNNN`) at the start of the record
  name or a folder name, else the record's folder when it holds only this record, else the name.

Each header file is parsed once per record and each signal file read once (plus once more, as
bytes, for the sha256); numerics are told from waveforms by the header before any sample is read.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from pipelines.assemble import Piece, Plan, SkipRecord, assemble_pieces, plan_channels
from pipelines.executors import map_ordered, validate_executor
from pipelines.quality import compute_quality, nan_fraction
from pipelines.records import RecordHeader, RecordReadError, find_records, read_header, read_sha256
from pipelines.splits import assign_split, validate_fractions

__all__ = [
    "IngestConfig",
    "IngestReport",
    "IngestedRow",
    "RecordResult",
    "find_records",
    "ingest",
    "ingest_record",
]

log = logging.getLogger(__name__)

NUMERICS_MAX_FS = 1.0  # a record named `...n` with a frame rate below this is a numerics record
MIMIC_PATIENT = re.compile(r"^(s\d{5}|p\d{6})(?!\d)")


@dataclass(frozen=True)
class IngestConfig:
    """What to ingest and how. Paths may be given as strings; they are stored as `Path`."""

    raw_dir: Path
    dataset_dir: Path
    channels: tuple[str, ...]
    fs: float
    numerics: bool = False
    patient_id: str | None = None
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    min_duration_s: float = 10.0
    max_gap_s: float = 60.0
    fill_gap_s: float = 0.0  # a channel's gaps up to this long are interpolated (0: none)
    workers: int = 1
    strict: bool = False
    executor: str = "local"  # "local" (process pool) or "ray" (`pipelines.executors`)
    ray_address: str | None = None  # Ray cluster ("auto", "ray://host:port"); None: a local Ray

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "raw_dir", Path(self.raw_dir))
        set_(self, "dataset_dir", Path(self.dataset_dir))
        raw_channels = self.channels.split(",") if isinstance(self.channels, str) else self.channels
        channels = tuple(str(c).strip() for c in raw_channels)
        if not channels or any(not c or "," in c for c in channels):
            raise ValueError(f"channels must be non-empty names without commas, got {channels}")
        upper = [c.upper() for c in channels]
        if len(set(upper)) != len(upper):
            raise ValueError(f"channels must not repeat, got {channels}")
        set_(self, "channels", channels)
        if isinstance(self.fs, bool) or not isinstance(self.fs, int | float):
            raise ValueError(f"fs must be a number > 0, got {self.fs!r}")
        if not (math.isfinite(self.fs) and self.fs > 0):
            raise ValueError(f"fs must be > 0, got {self.fs:g}")
        set_(self, "fs", float(self.fs))
        set_(self, "split_fractions", validate_fractions(tuple(self.split_fractions)))
        for name in ("min_duration_s", "max_gap_s", "fill_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value:g}")
        if int(self.workers) != self.workers or self.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {self.workers}")
        validate_executor(self.executor, self.ray_address, self.workers)
        if self.patient_id is not None and not str(self.patient_id).strip():
            raise ValueError(
                f"patient_id must be a non-empty string or None, got {self.patient_id!r}"
            )

    def to_json(self) -> dict:
        """The config as JSON-ready values (paths as strings, tuples as lists)."""
        return {
            "raw_dir": str(self.raw_dir), "dataset_dir": str(self.dataset_dir),
            "channels": list(self.channels), "fs": self.fs, "numerics": self.numerics,
            "patient_id": self.patient_id, "split_fractions": list(self.split_fractions),
            "min_duration_s": self.min_duration_s, "max_gap_s": self.max_gap_s,
            "fill_gap_s": self.fill_gap_s, "workers": self.workers, "strict": self.strict,
            "executor": self.executor, "ray_address": self.ray_address,
        }


@dataclass(frozen=True)
class RecordResult:
    """What one record gave: manifest rows with their signals, and what was skipped and why."""

    record_path: Path
    rows: tuple[dict, ...] = ()  # manifest rows, keys MANIFEST_COLUMNS
    signals: tuple[np.ndarray, ...] = ()  # float32 (time, channels), one per row
    skipped: tuple[tuple[str, str], ...] = ()  # (record path, reason)
    units: tuple[str, ...] = ()  # per requested channel, "" where unknown


@dataclass(frozen=True)
class IngestedRow:
    record_id: str
    patient_id: str
    n_samples: int
    duration_s: float
    split: str
    quality: str


@dataclass(frozen=True)
class IngestReport:
    """The outcome of `ingest`. `written` is False when nothing (or, strict, not all) went in."""

    dataset_dir: Path
    written: bool
    n_records: int
    ingested: tuple[IngestedRow, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (record path, reason)

    def render(self, color: bool = False, width: int = 120) -> str:
        """The summary (rich tables): every ingested row, then every skip with its reason."""
        from io import StringIO

        from rich.console import Console
        from rich.table import Table

        buf = StringIO()
        console = Console(file=buf, force_terminal=color, width=width, no_color=not color)
        rows = Table(title=f"ingested {len(self.ingested)} rows from {self.n_records} records")
        for col in ("record_id", "patient_id", "split", "n_samples", "duration_s", "quality"):
            rows.add_column(col, justify="right" if col in ("n_samples", "duration_s") else "left")
        for r in self.ingested:
            rows.add_row(r.record_id, r.patient_id, r.split, str(r.n_samples),
                         f"{r.duration_s:.1f}", r.quality)
        console.print(rows)
        if self.skipped:
            skipped = Table(title=f"skipped {len(self.skipped)}")
            skipped.add_column("record", overflow="fold")
            skipped.add_column("reason")
            for path, reason in self.skipped:
                skipped.add_row(path, reason)
            console.print(skipped)
        where = str(self.dataset_dir) if self.written else "nothing written"
        console.print(f"dataset: {where}")
        return buf.getvalue()


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
        pieces, short = assemble_pieces(
            header, plan, config.channels, config.fs, numerics=config.numerics,
            max_gap_s=config.max_gap_s, min_duration_s=config.min_duration_s,
            fill_gap_s=config.fill_gap_s,
        )
    except (SkipRecord, RecordReadError) as err:
        reason = err.reason if isinstance(err, RecordReadError) else str(err)
        log.info("skipped %s: %s", record_path, reason)
        return RecordResult(record_path, skipped=((key, reason),))
    except Exception as err:  # one odd record (a wfdb or scipy surprise) must not stop the others
        log.exception("skipped %s: unexpected error", record_path)
        reason = f"unexpected {type(err).__name__}: {err}"
        return RecordResult(record_path, skipped=((key, reason),))
    return _make_result(record_path, header, config, plan, pieces, short)


def _make_result(
    record_path: Path,
    header: RecordHeader,
    config: IngestConfig,
    plan: Plan,
    pieces: list[Piece],
    short: list[str],
) -> RecordResult:
    """Manifest rows for the kept pieces of a record."""
    units = []
    for want in config.channels:
        seg_unit = next(header.segments[i].units[m[want]] for i, m in plan.items() if want in m)
        units.append(seg_unit)
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
    return RecordResult(record_path, tuple(rows), tuple(signals), skipped, tuple(units))


class _NothingToWrite(Exception):
    """Internal: abandon the staged dataset (nothing ingested, or strict and something skipped)."""


def _map_records(records: list[Path], config: IngestConfig):
    """`ingest_record` over `records`, in order: in this process, a process pool, or Ray."""
    return map_ordered(ingest_record, records, config, executor=config.executor,
                       workers=config.workers, ray_address=config.ray_address)


def _unique_id(record_id: str, source: Path, raw_dir: Path, taken: set[str]) -> str:
    """`record_id`, prefixed with its folder path when another record already took it."""
    if record_id not in taken:
        return record_id
    try:
        folder = source.parent.relative_to(raw_dir).parts
    except ValueError:
        folder = (source.parent.name,)
    candidate = "_".join((*folder, record_id))
    n = 1
    while candidate in taken:
        candidate = f"{'_'.join((*folder, record_id))}_{n}"
        n += 1
    return candidate


def _dataset_json(config: IngestConfig, units: list[str], skipped: list[tuple[str, str]]) -> dict:
    from datetime import UTC, datetime
    from importlib.metadata import PackageNotFoundError, version

    try:
        pulsecast_version = version("pulsecast")
    except PackageNotFoundError:
        pulsecast_version = "unknown"
    return {
        **config.to_json(),
        "units": units,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "pulsecast_version": pulsecast_version,
        "skipped": [{"record": path, "reason": reason} for path, reason in skipped],
    }


def ingest(config: IngestConfig) -> IngestReport:
    """Ingest every record under `config.raw_dir` into `config.dataset_dir`; return the report.

    The dataset is staged beside `dataset_dir` and renamed into place only when complete, replacing
    an existing one. Nothing is written when no row was ingested, or (strict) anything was skipped.
    """
    import json

    import pandas as pd

    from pipelines.dataset import MANIFEST_COLUMNS, staged_dir
    from pipelines.progress import progress

    if not config.raw_dir.is_dir():
        raise FileNotFoundError(f"raw folder does not exist: {config.raw_dir}")
    records = find_records(config.raw_dir)
    log.info("ingesting %d records from %s", len(records), config.raw_dir)
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    units = [""] * len(config.channels)
    written = False
    try:
        with staged_dir(config.dataset_dir) as tmp:
            (tmp / "signals").mkdir()
            taken: set[str] = set()
            results = _map_records(records, config)
            for result in progress(results, total=len(records), desc="ingest", logger=log):
                skipped.extend(result.skipped)
                for row, signal in zip(result.rows, result.signals, strict=True):
                    row = {**row, "record_id": _unique_id(
                        row["record_id"], result.record_path, config.raw_dir, taken)}
                    taken.add(row["record_id"])
                    np.save(tmp / "signals" / f"{row['record_id']}.npy", signal)
                    rows.append(row)
                units = [u or v for u, v in zip(units, result.units or units, strict=True)]
            if not rows or (config.strict and skipped):
                raise _NothingToWrite
            manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
            manifest.to_parquet(tmp / "manifest.parquet", index=False)
            text = json.dumps(_dataset_json(config, units, skipped), indent=2)
            (tmp / "dataset.json").write_text(text + "\n")
        written = True
    except _NothingToWrite:
        why = "no record was ingested" if not rows else f"strict: {len(skipped)} skipped"
        log.error("dataset %s not written: %s", config.dataset_dir, why)
    ingested = tuple(
        IngestedRow(r["record_id"], r["patient_id"], r["n_samples"], r["n_samples"] / config.fs,
                    r["split"], r["quality"])
        for r in rows
    )
    return IngestReport(config.dataset_dir, written, len(records), ingested, tuple(skipped))
