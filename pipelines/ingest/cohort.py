"""Ingest a folder: WFDB records under `raw_dir` -> a dataset folder (`pipelines.dataset.contract`).

`ingest` finds the records, maps `ingest_record` (`pipelines.ingest.per_record`) over them in
this process, a process pool or Ray (`pipelines.ingest.executors`), and writes what comes back
into a staged folder that replaces `dataset_dir` only when complete: `manifest.parquet`,
`signals/<record_id>.npy` and `dataset.json` (the config, the units, the pulsecast version and
every skipped record with its reason). A record id taken twice is prefixed with its folder path.
Splits are the cohort's (`pipelines.dataset.splits.cohort_splits`): the stable hash per patient,
with an empty split filled from a boundary patient when the cohort has 3 or more patients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.dataset.splits import cohort_splits, split_counts
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.executors import map_ordered
from pipelines.ingest.per_record import ingest_record
from pipelines.ingest.records import find_records

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
        split_of = {r.patient_id: r.split for r in self.ingested}
        counts = " ".join(f"{s}={n}" for s, n in split_counts(split_of).items())
        console.print(f"patients per split: {counts}")
        where = str(self.dataset_dir) if self.written else "nothing written"
        console.print(f"dataset: {where}")
        return buf.getvalue()


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

    from pipelines.dataset.contract import MANIFEST_COLUMNS, staged_dir
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
            assign_cohort_splits(rows, config.split_fractions)
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
