"""The model store: TF Serving's version folders, atomic publishing, metadata, versions table."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from models.metadata import read_pulsecast_json
from models.store import (
    ModelStoreError,
    format_versions_table,
    list_versions,
    make_version_info,
    model_base_path,
    next_version,
    publish,
    read_version_infos,
    validate_model_name,
)


def _write_version(path: Path, metadata: dict | None = None) -> None:
    (path / "assets.extra").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"pb")
    if metadata is not None:
        (path / "assets.extra" / "pulsecast.json").write_text(json.dumps(metadata))


def test_versions_are_numeric_folders_only_and_the_next_is_one_above_the_highest(
    tmp_path: Path,
) -> None:
    for name in ("1", "3", "007", ".9.staging-abc", "notes", "12b"):
        (tmp_path / name).mkdir()
    (tmp_path / "42").write_text("a file, not a version")

    assert list_versions(tmp_path) == [1, 3, 7]
    assert next_version(tmp_path) == 8


def test_a_missing_base_path_has_no_versions_and_starts_at_one(tmp_path: Path) -> None:
    assert list_versions(tmp_path / "absent") == []
    assert next_version(tmp_path / "absent") == 1


def test_publish_stages_then_renames_to_the_next_number(tmp_path: Path) -> None:
    (tmp_path / "4").mkdir()
    seen: list[Path] = []

    def build(staging: Path) -> None:
        seen.append(staging)
        _write_version(staging, {"dataset_sha256": "abc"})

    version, path = publish(tmp_path, build)

    assert (version, path) == (5, tmp_path / "5")
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".5.staging-")
    assert read_pulsecast_json(path) == {"dataset_sha256": "abc"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "5"]


@pytest.mark.parametrize("error", [RuntimeError("export failed"), KeyboardInterrupt()])
def test_a_failing_build_leaves_no_version_and_no_staging_folder(
    tmp_path: Path, error: BaseException
) -> None:
    (tmp_path / "1").mkdir()

    def build(staging: Path) -> None:
        _write_version(staging)
        raise error

    with pytest.raises(type(error)):
        publish(tmp_path, build)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_publish_removes_staging_folders_a_killed_publisher_left_an_hour_ago(
    tmp_path: Path,
) -> None:
    import os
    import time

    old, recent = tmp_path / ".2.staging-old", tmp_path / ".2.staging-recent"
    for folder in (old, recent):
        _write_version(folder)
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))

    version, _ = publish(tmp_path, _write_version)

    assert version == 1
    assert not old.exists()  # crashed long ago: cleaned up
    assert recent.exists()  # may be another publisher at work: left alone


def test_a_build_that_writes_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="build_fn wrote nothing"):
        publish(tmp_path, lambda staging: None)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_publishers_get_distinct_numbers(tmp_path: Path) -> None:
    n = 6
    barrier = threading.Barrier(n)
    results: list[int] = []
    errors: list[BaseException] = []

    def build(staging: Path) -> None:
        _write_version(staging)
        barrier.wait(timeout=10)  # everyone has staged with the same first guess before renaming

    def worker() -> None:
        try:
            results.append(publish(tmp_path, build)[0])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(results) == list(range(1, n + 1))
    assert list_versions(tmp_path) == list(range(1, n + 1))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "-x", "x" * 65, "ecg\n", "é"])
def test_bad_model_names_are_rejected_naming_the_value(name: str) -> None:
    with pytest.raises(ModelStoreError, match="got " + repr(name).replace("\\", "\\\\")):
        validate_model_name(name)


def test_good_model_names_make_a_base_path_under_the_store(tmp_path: Path) -> None:
    assert validate_model_name("ecg_lstm-v2.1") == "ecg_lstm-v2.1"
    assert model_base_path(tmp_path, "ecg") == tmp_path / "ecg"


def test_versions_table_shows_metrics_sha_and_parent(tmp_path: Path) -> None:
    _write_version(
        tmp_path / "1",
        {
            "exported_at": "2026-01-02T03:04:05+00:00",
            "dataset_sha256": "0123456789abcdef",
            "metrics": {"model": {"mae": 0.12345}, "skill_mae_vs_best_baseline": 0.25},
        },
    )
    _write_version(tmp_path / "2", {"parent_version": 1, "metrics": {"mae": 0.1, "skill": 0.3}})
    _write_version(tmp_path / "3")  # a SavedModel pulsecast did not make: no metadata

    infos = read_version_infos(tmp_path)
    table = format_versions_table(infos, state={2: "AVAILABLE"})
    lines = table.splitlines()

    assert lines[0].split() == [
        "version",
        "created",
        "dataset_sha",
        "mae",
        "skill",
        "parent",
        "state",
    ]
    assert lines[1].split() == [
        "1",
        "2026-01-02T03:04:05+00:00",
        "0123456789ab",
        "0.1235",
        "+0.250",
        "-",
        "-",
    ]
    assert lines[2].split()[3:] == ["0.1", "+0.300", "1", "AVAILABLE"]
    assert lines[3].split()[0] == "3" and lines[3].split()[2:] == ["-", "-", "-", "-", "-"]
    assert infos[2].created is not None  # folder time stands in for missing metadata


def test_version_info_ignores_metadata_it_does_not_understand() -> None:
    info = make_version_info(7, {"metrics": "oops", "parent_version": "x"})
    assert (info.version, info.mae, info.skill, info.parent_version) == (7, None, None, None)
