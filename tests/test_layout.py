"""The version-folder contract: paths inside a version, TF Serving's version names, SavedModels."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from models import layout, store
from models.layout import (
    find_saved_model_file,
    is_saved_model_dir,
    parse_version_name,
    scan_versions,
    version_dir_name,
)


def test_the_paths_inside_a_version_folder() -> None:
    assert layout.METADATA_RELPATH == Path("assets.extra/pulsecast.json")
    assert layout.WARMUP_RELPATH == Path("assets.extra/tf_serving_warmup_requests")
    assert layout.KERAS_RELPATH == Path("assets.extra/model.keras")
    assert (layout.SIGNATURE_KEY, layout.INPUT_KEY) == ("serving_default", "signal")


@pytest.mark.parametrize(("name", "version"), [("1", 1), ("007", 7), ("123", 123), ("+5", 5),
                                               (" 3", 3), ("4 ", 4), (str(2**63 - 1), 2**63 - 1)])
def test_version_names_read_as_tf_serving_reads_them(name: str, version: int) -> None:
    assert parse_version_name(name) == version


@pytest.mark.parametrize("name", [".5.staging-abc", ".7", "12b", "-1", "", "v1", "1.0", "++1",
                                  str(2**63), "notes"])
def test_anything_else_is_not_a_version(name: str) -> None:
    assert parse_version_name(name) is None


def test_the_store_writes_canonical_names_only() -> None:
    assert version_dir_name(7) == "7"
    for bad in (-1, True, "7", 2**63):
        with pytest.raises(ValueError, match="version must be an integer"):
            version_dir_name(bad)


def test_a_scan_keeps_folders_and_the_duplicate_that_sorts_last(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("1", "001", "3", ".4.staging-x", "x"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    with caplog.at_level(logging.WARNING, logger="models.layout"):
        found = scan_versions(tmp_path)
    assert found == {1: tmp_path / "1", 3: tmp_path / "3"}  # "1" sorts after "001"
    assert "duplicate version 1" in caplog.text
    with pytest.raises(FileNotFoundError):
        scan_versions(tmp_path / "absent")


def test_the_store_sees_the_versions_the_server_sees(tmp_path: Path) -> None:
    for name in ("1", "+2", "005"):
        (tmp_path / name).mkdir()
    assert store.list_versions(tmp_path) == sorted(scan_versions(tmp_path)) == [1, 2, 5]
    assert store.next_version(tmp_path) == 6  # never a second 5 beside the server's "005"
    assert store.version_path(tmp_path, 5) == tmp_path / "005"


def test_a_savedmodel_folder_has_a_pb_or_a_pbtxt(tmp_path: Path) -> None:
    assert find_saved_model_file(tmp_path) is None and not is_saved_model_dir(tmp_path)
    (tmp_path / "saved_model.pbtxt").write_text("")
    assert find_saved_model_file(tmp_path) == tmp_path / "saved_model.pbtxt"
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert find_saved_model_file(tmp_path) == tmp_path / "saved_model.pb"
    assert is_saved_model_dir(tmp_path)
