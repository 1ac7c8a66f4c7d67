"""Incremental ingest: new WFDB records added to an existing dataset (`pipelines.dataset.contract`).

The grown dataset is written into a staging folder beside the dataset and replaces it in one
rename, only when the caller keeps it (`staged_increment`), so a retrain that is interrupted or
refused leaves the dataset exactly as it was. Policy:

- The ingest settings are the dataset's own (`dataset.json`: channels, fs, numerics, gap and
  duration limits, split fractions); only the raw folder is new.
- A record whose sha256 (over its header and signal files, as `pipelines.ingest.per_record`
  computes it) is already in the manifest is skipped before any sample is read.
- A known patient keeps the split the manifest gives it, whatever rule gave it; a new patient is
  split by the stable hash (`pipelines.dataset.splits.assign_split`), so it lands in the same
  split whatever else was ingested before. (A full ingest of a small cohort may instead move a
  boundary patient to fill an empty split, `cohort_splits`; an increment never moves anyone.)
- Old signals are hard-linked into the staging folder (copied where the file system cannot link):
  no bytes are rewritten and the old files are never opened for writing.
- `dataset.json` keeps the original ingest config and gains an `increments` list (raw folder,
  time, record ids added, records skipped and why, readings set aside per record).
- `labels.csv`: the dataset's rows, then the new raw folder's (when it has one with a `record`
  column); a record labelled in both keeps the new row.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipelines.dataset.contract import (
    LABELS_FILE,
    MANIFEST_COLUMNS,
    Dataset,
    load_dataset,
    staged_dir,
)
from pipelines.ingest.cohort import IngestedRow, _map_records, _unique_id, read_raw_labels
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.records import RecordReadError, find_records, read_header
from pipelines.ingest.samples import read_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IncrementReport:
    """What an incremental ingest found and added. `ingested` holds the new rows only."""

    dataset_dir: Path
    raw_dir: Path
    n_records: int  # records found under raw_dir
    already_present: tuple[str, ...] = ()  # record paths whose sha256 the manifest has
    ingested: tuple[IngestedRow, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (record path, reason)
    written: bool = False  # True once the grown dataset replaced the old one

    @property
    def new_record_ids(self) -> list[str]:
        return [r.record_id for r in self.ingested]

    @property
    def new_patients(self) -> list[str]:
        return sorted({r.patient_id for r in self.ingested})

    def summary(self) -> str:
        return (f"{len(self.ingested)} new rows ({len(self.new_patients)} patients) from "
                f"{self.n_records} records under {self.raw_dir}; {len(self.already_present)} "
                f"already in the dataset, {len(self.skipped)} skipped")


@dataclass
class Increment:
    """A staged grown dataset: read it through `dataset`; `keep()` makes it replace the old one
    when the `staged_increment` block ends. Without `keep()` it is thrown away."""

    report: IncrementReport
    dataset: Dataset  # the grown dataset (the staging folder), or the old one when nothing is new
    old: Dataset
    kept: bool = field(default=False)

    def keep(self) -> None:
        self.kept = True


class _Discard(Exception):
    """Internal: leave the old dataset in place."""


def ingest_config_for(dataset: Dataset, raw_dir: Path, workers: int = 1) -> IngestConfig:
    """The dataset's own ingest settings (`dataset.json`) pointed at a new raw folder."""
    known = {f.name for f in fields(IngestConfig)}
    settings = {k: v for k, v in dataset.config.items() if k in known}
    settings.update(raw_dir=Path(raw_dir), dataset_dir=dataset.root, workers=workers,
                    channels=tuple(dataset.channels), fs=dataset.fs)
    if settings.get("executor") == "ray":  # a retrain runs where it runs: no cluster implied
        settings.update(executor="local", ray_address=None)
    return IngestConfig(**settings)


def find_new_records(dataset: Dataset, raw_dir: Path) -> tuple[list[Path], list[Path]]:
    """Records under `raw_dir` split into (new, already present by sha256 in the manifest).

    Only headers are parsed and files hashed here; a record whose header cannot be read counts as
    new, so ingest reports why it was skipped.
    """
    known = set(dataset.manifest["sha256"].astype(str))
    new, present = [], []
    for record in find_records(raw_dir):
        try:
            sha = read_sha256(read_header(record).files)
        except (RecordReadError, OSError):
            new.append(record)
            continue
        (present if sha in known else new).append(record)
    return new, present


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copy2(src, dst)


def write_increment(old: Dataset, config: IngestConfig, records: list[Path], out: Path,
                    present: list[Path]) -> IncrementReport:
    """Write old rows plus the rows of `records` into the empty folder `out` (a whole dataset).

    Raises nothing for bad records: they are reported in `skipped`.
    """
    import pandas as pd

    (out / "signals").mkdir()
    for rid in old.record_ids:
        _link_or_copy(old.signal_path(rid), out / "signals" / f"{rid}.npy")
    split_of = dict(zip(old.manifest["patient_id"], old.manifest["split"], strict=True))
    taken = set(old.record_ids)
    rows, skipped, invalid = [], [], []
    for result in _map_records(records, config):
        skipped.extend(result.skipped)
        if result.readings is not None:
            invalid += result.readings.to_json(str(result.record_path))
        for row, signal in zip(result.rows, result.signals, strict=True):
            rid = _unique_id(row["record_id"], result.record_path, config.raw_dir, taken)
            taken.add(rid)
            # a known patient keeps its split even if the fractions changed since
            row = {**row, "record_id": rid, "split": split_of.get(row["patient_id"], row["split"])}
            np.save(out / "signals" / f"{rid}.npy", signal)
            rows.append(row)
    manifest = pd.concat([old.manifest[list(MANIFEST_COLUMNS)],
                          pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))], ignore_index=True)
    manifest.to_parquet(out / "manifest.parquet", index=False)
    info = dict(old.config)
    info["increments"] = [*info.get("increments", []), {
        "raw_dir": str(config.raw_dir),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": [r["record_id"] for r in rows],
        "already_present": len(present),
        "skipped": [{"record": p, "reason": why} for p, why in skipped],
        "invalid_readings": invalid,
    }]
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    _write_labels(old, config.raw_dir, out)
    ingested = tuple(
        IngestedRow(r["record_id"], r["patient_id"], r["n_samples"], r["n_samples"] / config.fs,
                    r["split"], r["quality"]) for r in rows)
    return IncrementReport(old.root, config.raw_dir, len(records) + len(present),
                           tuple(str(p) for p in present), ingested, tuple(skipped))


def _write_labels(old: Dataset, raw_dir: Path, out: Path) -> None:
    """The old dataset's labels, then the new raw folder's; a record in both keeps the new row."""
    import pandas as pd

    new = read_raw_labels(raw_dir)
    if new is None:
        if old.labels is not None:
            _link_or_copy(old.root / LABELS_FILE, out / LABELS_FILE)
        return
    labels = new if old.labels is None else pd.concat([old.labels, new], ignore_index=True)
    labels = labels.drop_duplicates(subset="record", keep="last")
    labels.to_csv(out / LABELS_FILE, index=False)


@contextmanager
def staged_increment(dataset_dir: str | Path, raw_dir: str | Path,
                     workers: int = 1) -> Iterator[Increment]:
    """Stage `dataset_dir` grown by the records under `raw_dir`; yield an `Increment`.

    When the block ends normally after `increment.keep()`, the staged dataset replaces the old one
    (one rename) and `increment.report.written` is True. Otherwise (no `keep()`, an exception, a
    KeyboardInterrupt) the staging folder is removed and the dataset is untouched. When nothing
    is new, nothing is staged and `increment.dataset` is the old dataset.
    """
    old = load_dataset(dataset_dir)
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"records folder does not exist: {raw_dir}")
    config = ingest_config_for(old, raw_dir, workers)
    new, present = find_new_records(old, raw_dir)
    log.info("%d records under %s: %d new, %d already in %s", len(new) + len(present), raw_dir,
             len(new), len(present), old.root)
    if not new:
        yield Increment(IncrementReport(old.root, raw_dir, len(present),
                                        tuple(str(p) for p in present)), old, old)
        return
    increment = None
    try:
        with staged_dir(old.root) as tmp:
            report = write_increment(old, config, new, tmp, present)
            increment = Increment(report, load_dataset(tmp), old)
            yield increment
            if not increment.kept or not report.ingested:
                raise _Discard
    except _Discard:
        log.info("dataset %s left as it was", old.root)
        return
    increment.report = _written(increment.report)
    log.info("dataset %s grown: %s", old.root, increment.report.summary())


def _written(report: IncrementReport) -> IncrementReport:
    from dataclasses import replace

    return replace(report, written=True)


def ingest_incremental(dataset_dir: str | Path, raw_dir: str | Path,
                       workers: int = 1) -> IncrementReport:
    """Add the new records under `raw_dir` to `dataset_dir` now (stage, then rename)."""
    with staged_increment(dataset_dir, raw_dir, workers) as increment:
        increment.keep()
    return increment.report
