"""Incremental ingest: new records join a dataset atomically; known records and patients stay."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.dataset.contract import load_dataset
from pipelines.dataset.splits import assign_split
from pipelines.ingest.cohort import ingest
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.incremental import ingest_incremental, staged_increment

FS = 125.0


def sine(seconds: float = 30.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * FS)) / FS
    return np.stack([np.sin(2 * np.pi * 1.2 * t + phase), 80 + 10 * np.sin(t + phase)], axis=1)


@pytest.fixture
def dataset(tmp_path, write_record) -> Path:
    """Patients p000001..p000004 (one record each, in their own folders), ingested."""
    for i in range(1, 5):
        write_record(f"r{i}", sine(phase=i), ["II", "ABP"], folder=f"old/p{i:06d}")
    root = tmp_path / "ds"
    report = ingest(IngestConfig(raw_dir=tmp_path / "old", dataset_dir=root,
                                 channels=("II", "ABP"), fs=FS, min_duration_s=1.0))
    assert report.written
    return root


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `root` with its inode and bytes: equal snapshots = untouched folder."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_new_records_are_added_and_old_signals_are_linked_not_rewritten(
        tmp_path, dataset, write_record):
    old = load_dataset(dataset)
    old_inode = old.signal_path("r1").stat().st_ino
    write_record("r5", sine(phase=5), ["II", "ABP"], folder="new/p000005")
    write_record("r6", sine(phase=6), ["II", "ABP"], folder="new/p000006")

    report = ingest_incremental(dataset, tmp_path / "new")

    assert report.written and report.new_record_ids == ["r5", "r6"]
    assert report.new_patients == ["p000005", "p000006"]
    grown = load_dataset(dataset)
    assert grown.record_ids == ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert grown.signal_path("r1").stat().st_ino == old_inode  # a hard link, same bytes
    np.testing.assert_allclose(grown.signal("r5")[:, 0], sine(phase=5)[:, 0], atol=1e-3)
    for pid in ("p000005", "p000006"):
        split = grown.manifest.loc[grown.manifest["patient_id"] == pid, "split"].item()
        assert split == assign_split(pid)
    increments = json.loads((dataset / "dataset.json").read_text())["increments"]
    assert increments[0]["records"] == ["r5", "r6"]
    assert increments[0]["raw_dir"] == str(tmp_path / "new")


def test_records_already_in_the_dataset_are_skipped_by_sha256(tmp_path, dataset):
    before = snapshot(dataset)
    report = ingest_incremental(dataset, tmp_path / "old")  # the very same files
    assert not report.written and report.ingested == ()
    assert len(report.already_present) == 4
    assert snapshot(dataset) == before


def test_a_known_patient_keeps_its_split_and_record_ids_stay_unique(
        tmp_path, dataset, write_record):
    import pandas as pd

    # pretend p000002 was put in test by an earlier split policy
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    manifest.loc[manifest["patient_id"] == "p000002", "split"] = "test"
    manifest.to_parquet(dataset / "manifest.parquet", index=False)
    # a second record of p000002, named like an existing record of another patient
    write_record("r1", sine(phase=9), ["II", "ABP"], folder="new/p000002")

    report = ingest_incremental(dataset, tmp_path / "new")

    assert [(r.patient_id, r.split) for r in report.ingested] == [("p000002", "test")]
    grown = load_dataset(dataset)
    assert len(set(grown.record_ids)) == 5
    assert report.ingested[0].record_id == "p000002_r1"


def test_a_staged_increment_not_kept_leaves_the_dataset_as_it_was(
        tmp_path, dataset, write_record):
    write_record("r5", sine(phase=5), ["II", "ABP"], folder="new/p000005")
    before = snapshot(dataset)
    with staged_increment(dataset, tmp_path / "new") as inc:
        assert inc.dataset.root != dataset  # read from the staging folder
        assert "r5" in inc.dataset.record_ids and "r5" not in inc.old.record_ids
    assert snapshot(dataset) == before
    assert not inc.report.written
    assert [p.name for p in dataset.parent.iterdir() if p.name.startswith(".")] == []


def test_an_interrupt_inside_the_block_leaves_the_dataset_and_no_staging(
        tmp_path, dataset, write_record):
    write_record("r5", sine(phase=5), ["II", "ABP"], folder="new/p000005")
    before = snapshot(dataset)
    with pytest.raises(KeyboardInterrupt), staged_increment(dataset, tmp_path / "new") as inc:
        inc.keep()
        raise KeyboardInterrupt
    assert snapshot(dataset) == before
    assert sorted(os.listdir(dataset.parent)) == sorted(
        p for p in os.listdir(dataset.parent) if not p.startswith("."))


def test_bad_and_numerics_records_are_reported_not_fatal(tmp_path, dataset, write_record):
    write_record("r5", sine(phase=5), ["II", "ABP"], folder="new/p000005")
    write_record("r7", sine(phase=7)[:, :1], ["II"], folder="new/p000007")  # no ABP
    report = ingest_incremental(dataset, tmp_path / "new")
    assert report.new_record_ids == ["r5"]
    assert len(report.skipped) == 1 and "ABP" in report.skipped[0][1]


def test_a_missing_records_folder_is_named(tmp_path, dataset):
    with pytest.raises(FileNotFoundError, match="records folder does not exist: .*nowhere"):
        ingest_incremental(dataset, tmp_path / "nowhere")
