"""The dataset contract: what `pulsecast ingest` writes and every later stage reads.

On disk, `data/datasets/<name>/`:

- `manifest.parquet`: one row per record or contiguous segment, columns `MANIFEST_COLUMNS`
  (`channels` and `units` are comma-joined strings in the dataset's channel order; `quality` is a
  comma-joined list of flags, empty when clean).
- `signals/<record_id>.npy`: float32 `(time, channels)` in physical units, NaN for gaps, every
  record with the dataset's channels in the dataset's order, sampled at the dataset's `fs`.
- `dataset.json`: the ingest config that made it (`channels`, `units`, `fs`, split fractions,
  `valid_range`, ...), every skipped record with its reason, and `invalid_readings`: per record
  and channel, the seconds of readings set aside as no reading or artefact (only those with some).
- `labels.csv` (optional): the raw folder's `labels.csv`, copied as it was when it has a `record`
  column (one row per raw record, e.g. the Challenge 2009's `record, group,
  ahe_in_forecast_window, t0_sample`). `record` is a raw record's name: a manifest row's
  `record_id` is that name, or `<name>_NNN` when the record was split, and `source_path` ends
  in it; rows of records that were skipped stay. Read as `Dataset.labels` (`record` as text,
  None without the file).

Signals are opened memory-mapped, so a dataset larger than RAM can be windowed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST_COLUMNS: tuple[str, ...] = (
    "record_id",
    "patient_id",
    "source_path",
    "channels",
    "units",
    "fs",
    "n_samples",
    "start_time",
    "sha256",
    "split",
    "quality",
    "nan_fraction",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
LABELS_FILE = "labels.csv"


class DatasetError(ValueError):
    """A dataset folder that does not follow the contract."""


@dataclass(frozen=True)
class Dataset:
    """A dataset folder opened for reading. Signals load lazily, memory-mapped."""

    root: Path
    manifest: pd.DataFrame
    channels: tuple[str, ...]
    units: tuple[str, ...]
    fs: float
    config: dict = field(default_factory=dict)
    labels: pd.DataFrame | None = None  # `labels.csv`, one row per raw record; None without it

    @property
    def record_ids(self) -> list[str]:
        return list(self.manifest["record_id"])

    def records(self, split: str | None = None) -> list[str]:
        """Record ids in manifest order, optionally only those of one split ("all" = every one)."""
        if split is None or split == "all":
            return self.record_ids
        if split not in SPLITS:
            raise DatasetError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
        return list(self.manifest.loc[self.manifest["split"] == split, "record_id"])

    def patients(self, split: str | None = None) -> list[str]:
        rows = self.manifest
        if split not in (None, "all"):
            rows = rows[rows["split"] == split]
        return sorted(set(rows["patient_id"]))

    def signal_path(self, record_id: str) -> Path:
        return self.root / "signals" / f"{record_id}.npy"

    def signal(self, record_id: str) -> np.ndarray:
        """The record's signal, memory-mapped read-only: float32 `(time, channels)`."""
        path = self.signal_path(record_id)
        if not path.exists():
            raise DatasetError(f"signal file for record {record_id!r} is missing: {path}")
        return np.load(path, mmap_mode="r")

    def channel_index(self, names: list[str] | tuple[str, ...]) -> list[int]:
        """Column indices of `names` in this dataset's signals; unknown names raise."""
        missing = [n for n in names if n not in self.channels]
        if missing:
            raise DatasetError(
                f"channels {missing} are not in dataset {self.root.name!r} "
                f"(it has {list(self.channels)})"
            )
        return [self.channels.index(n) for n in names]


def load_dataset(root: str | Path) -> Dataset:
    """Open a dataset folder written by ingest; raise `DatasetError` naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder does not exist: {root}")
    manifest_path = root / "manifest.parquet"
    config_path = root / "dataset.json"
    for p in (manifest_path, config_path):
        if not p.exists():
            raise DatasetError(f"dataset {root} has no {p.name}")
    config = json.loads(config_path.read_text())
    manifest = pd.read_parquet(manifest_path)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DatasetError(f"manifest {manifest_path} lacks columns {missing}")
    return Dataset(
        root=root,
        manifest=manifest.reset_index(drop=True),
        channels=tuple(config["channels"]),
        units=tuple(config.get("units", [""] * len(config["channels"]))),
        fs=float(config["fs"]),
        config=config,
        labels=read_labels(root / LABELS_FILE) if (root / LABELS_FILE).is_file() else None,
    )


def read_labels(path: str | Path) -> pd.DataFrame:
    """A `labels.csv` (a dataset's, or a raw folder's): one row per record, `record` as text;
    `DatasetError` when it cannot be parsed or has no `record` column."""
    path = Path(path)
    try:
        labels = pd.read_csv(path, dtype={"record": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DatasetError(f"labels file {path} is not a readable CSV: {err}") from None
    if "record" not in labels.columns:
        raise DatasetError(f"labels file {path} has no 'record' column "
                           f"(has {list(labels.columns)})")
    return labels


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; rename it into place only if the block succeeds.

    An exception (or a kill) leaves `final` as it was: untouched if it existed, absent if not. An
    existing `final` is replaced only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
