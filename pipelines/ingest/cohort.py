"""Ingest a folder: WFDB records under `raw_dir` -> a dataset folder (`pipelines.dataset.contract`).

`ingest` finds the records, maps `ingest_record` (`pipelines.ingest.per_record`) over them in
this process, a process pool or Ray (`pipelines.ingest.executors`), and writes what comes back
into a staged folder that replaces `dataset_dir` only when complete: `manifest.parquet`,
`signals/<record_id>.npy`, `dataset.json` (the config, the units, the pulsecast version, every
skipped record with its reason, the readings set aside per record: `invalid_readings`, and where
the time of every record read went: `kept_and_dropped`, per channel in total and per record that
lost some, see `pipelines.ingest.assemble.Coverage`) and,
when the raw folder holds a `labels.csv` with a `record` column, that file as it was. A record id
taken twice is prefixed with its folder path.
Splits are the cohort's (`pipelines.dataset.splits.cohort_splits`): the stable hash per patient,
with an empty split filled from a boundary patient when the cohort has 3 or more patients.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.dataset.splits import cohort_splits, split_counts
from pipelines.ingest.assemble import Coverage, format_span
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.executors import map_ordered
from pipelines.ingest.per_record import ingest_record
from pipelines.ingest.records import find_records
from pipelines.ingest.validity import Readings, format_duration

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


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
    # (record path, what its files held) for every record that was read whole
    readings: tuple[tuple[str, Readings], ...] = ()
    labels_rows: int | None = None  # rows of the raw folder's labels.csv carried along
    # (record path, where its time went) for every record whose samples were read
    coverage: tuple[tuple[str, Coverage], ...] = ()

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
        self._render_set_aside(console)
        self._render_kept_dropped(console)
        if self.labels_rows is not None:
            console.print(f"labels: {self.labels_rows} rows (labels.csv)")
        split_of = {r.patient_id: r.split for r in self.ingested}
        counts = " ".join(f"{s}={n}" for s, n in split_counts(split_of).items())
        console.print(f"patients per split: {counts}")
        where = str(self.dataset_dir) if self.written else "nothing written"
        console.print(f"dataset: {where}")
        return buf.getvalue()

    def _render_set_aside(self, console) -> None:
        """Totals of readings set aside (no reading, artefact), then each record that had some."""
        from rich.table import Table

        def total(attr: str) -> str:
            per_record = [sum(getattr(r, attr)) for _, r in self.readings]
            n = sum(1 for v in per_record if v)
            return (f"{format_duration(sum(per_record))} in {n} record{'' if n == 1 else 's'}"
                    if n else "none")

        console.print(f"readings set aside ({len(self.readings)} records read): no reading "
                      f"{total('no_reading_s')}; artefact {total('artefact_s')}")
        entries = [e for path, r in self.readings for e in r.to_json(path)]
        if not entries:
            return
        table = Table(title="readings set aside per record")
        for col in ("record", "channel", "no reading", "artefact"):
            table.add_column(col, overflow="fold", justify="left" if col in ("record", "channel")
                             else "right")
        for e in entries:
            table.add_row(_short(e["record"]), e["channel"],
                          format_duration(e["no_reading_s"]), format_duration(e["artefact_s"]))
        console.print(table)


    def _render_kept_dropped(self, console) -> None:
        """Per channel, the time kept and dropped by reason (those with any) over every record
        read; then each record and channel that lost some."""
        from rich.table import Table

        if not self.coverage:
            return
        console.print(f"time kept and dropped ({len(self.coverage)} records read):")
        for total in coverage_totals(self.coverage):
            share = total["kept_s"] / total["duration_s"] if total["duration_s"] else 0.0
            dropped = ", ".join(f"{DROPPED_LABELS[r]} {format_span(total[r])}"
                                for r in Coverage.DROPPED if total[r]) or "none"
            console.print(f"  {total['channel']}: kept {format_span(total['kept_s'])} of "
                          f"{format_span(total['duration_s'])} ({share:.1%}); dropped: {dropped}")
        entries = [e for path, c in self.coverage for e in c.to_json(path)]
        if not entries:
            return
        table = Table(title="time dropped per record")
        for col in ("record", "channel", "length", "kept", *DROPPED_LABELS.values()):
            table.add_column(col, overflow="fold", justify="left" if col in ("record", "channel")
                             else "right")
        for e in entries:
            table.add_row(_short(e["record"]), e["channel"], format_span(e["duration_s"]),
                          format_span(e["kept_s"]), *(format_span(e[r]) for r in Coverage.DROPPED))
        console.print(table)


# how the report names `Coverage.DROPPED`
DROPPED_LABELS = {"stuck_s": "stuck/flat", "clipped_s": "clipped", "gap_s": "gap/no reading",
                  "short_s": "too short", "skipped_s": "record skipped"}


def coverage_totals(coverage: tuple[tuple[str, Coverage], ...] | list[tuple[str, Coverage]]
                    ) -> list[dict]:
    """Per channel, the sums over `coverage` (record path, `Coverage`): `records`, `duration_s`,
    `kept_s` and each dropped reason; each channel's kept and dropped add up to `duration_s`."""
    if not coverage:
        return []
    channels = coverage[0][1].channels
    totals = []
    for j, channel in enumerate(channels):
        total = {"channel": channel, "records": len(coverage),
                 "duration_s": sum(c.duration_s for _, c in coverage),
                 "kept_s": sum(c.kept_s[j] for _, c in coverage)}
        for reason in Coverage.DROPPED:
            total[reason] = sum(c.dropped(j)[reason] for _, c in coverage)
        totals.append(total)
    return totals


def _short(path: str) -> str:
    """A record path as a table row needs it: its folder's name and its own."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


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


def _dataset_json(config: IngestConfig, units: list[str], skipped: list[tuple[str, str]],
                  readings: list[tuple[str, Readings]],
                  coverage: list[tuple[str, Coverage]]) -> dict:
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
        "invalid_readings": [e for path, r in readings for e in r.to_json(path)],
        "kept_and_dropped": {"total": coverage_totals(coverage),
                             "records": [e for path, c in coverage for e in c.to_json(path)]},
    }


def read_raw_labels(raw_dir: Path) -> pd.DataFrame | None:
    """`<raw_dir>/labels.csv` as a DataFrame when it is there and has a `record` column; else
    None (a file that cannot be used is named in a warning and left out, never an error)."""
    from pipelines.dataset.contract import LABELS_FILE, DatasetError, read_labels

    path = raw_dir / LABELS_FILE
    if not path.is_file():
        return None
    try:
        return read_labels(path)
    except DatasetError as err:
        log.warning("%s; not carried into the dataset", err)
        return None


def _log_labels(labels: pd.DataFrame, rows: list[dict]) -> None:
    """Say how many labelled records gave no row (skipped, or absent): their rows stay."""
    ingested = {Path(r["source_path"]).name for r in rows}
    missing = sorted(set(labels["record"].dropna()) - ingested)
    log.info("labels: %d rows%s", len(labels),
             f" ({len(missing)} name a record not ingested, kept: {', '.join(missing[:5])}"
             f"{', ...' if len(missing) > 5 else ''})" if missing else "")


def assign_cohort_splits(rows: list[dict], fractions: tuple[float, float, float]) -> None:
    """Set each manifest row's `split` to its patient's split in the cohort (in place)."""
    split_of = cohort_splits((r["patient_id"] for r in rows), fractions)
    moved = sorted({r["patient_id"] for r in rows if r["split"] != split_of[r["patient_id"]]})
    for row in rows:
        row["split"] = split_of[row["patient_id"]]
    counts = split_counts(split_of)
    log.info("patients per split: %s%s", " ".join(f"{s}={n}" for s, n in counts.items()),
             f" ({len(moved)} moved from their hash split so that no split is empty: "
             f"{', '.join(moved)})" if moved else "")
    if not all(counts.values()):
        log.warning("a split has no patient (%d patients): `pulsecast train` needs one in each "
                    "of train/val/test", len(split_of))


def ingest(config: IngestConfig) -> IngestReport:
    """Ingest every record under `config.raw_dir` into `config.dataset_dir`; return the report.

    The dataset is staged beside `dataset_dir` and renamed into place only when complete, replacing
    an existing one. Nothing is written when no row was ingested, or (strict) anything was skipped.
    """
    import json

    import pandas as pd

    from pipelines.dataset.contract import LABELS_FILE, MANIFEST_COLUMNS, staged_dir
    from pipelines.progress import progress

    if not config.raw_dir.is_dir():
        raise FileNotFoundError(f"raw folder does not exist: {config.raw_dir}")
    records = find_records(config.raw_dir)
    log.info("ingesting %d records from %s", len(records), config.raw_dir)
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    readings: list[tuple[str, Readings]] = []
    coverage: list[tuple[str, Coverage]] = []
    labels = read_raw_labels(config.raw_dir)
    units = [""] * len(config.channels)
    written = False
    try:
        with staged_dir(config.dataset_dir) as tmp:
            (tmp / "signals").mkdir()
            taken: set[str] = set()
            results = _map_records(records, config)
            for result in progress(results, total=len(records), desc="ingest", logger=log):
                skipped.extend(result.skipped)
                if result.readings is not None:
                    readings.append((str(result.record_path), result.readings))
                if result.coverage is not None:
                    coverage.append((str(result.record_path), result.coverage))
                for row, signal in zip(result.rows, result.signals, strict=True):
                    row = {**row, "record_id": _unique_id(
                        row["record_id"], result.record_path, config.raw_dir, taken)}
                    taken.add(row["record_id"])
                    np.save(tmp / "signals" / f"{row['record_id']}.npy", signal)
                    rows.append(row)
                units = [u or v for u, v in zip(units, result.units or units, strict=True)]
            if not rows or (config.strict and skipped):
                raise _NothingToWrite
            assign_cohort_splits(rows, config.split_fractions)
            manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
            manifest.to_parquet(tmp / "manifest.parquet", index=False)
            text = json.dumps(_dataset_json(config, units, skipped, readings, coverage),
                              indent=2)
            (tmp / "dataset.json").write_text(text + "\n")
            if labels is not None:
                # as it was: every row and column, byte for byte
                shutil.copyfile(config.raw_dir / LABELS_FILE, tmp / LABELS_FILE)
                _log_labels(labels, rows)
        written = True
    except _NothingToWrite:
        why = "no record was ingested" if not rows else f"strict: {len(skipped)} skipped"
        log.error("dataset %s not written: %s", config.dataset_dir, why)
    ingested = tuple(
        IngestedRow(r["record_id"], r["patient_id"], r["n_samples"], r["n_samples"] / config.fs,
                    r["split"], r["quality"])
        for r in rows
    )
    return IngestReport(config.dataset_dir, written, len(records), ingested, tuple(skipped),
                        tuple(readings), len(labels) if written and labels is not None else None,
                        tuple(coverage))
