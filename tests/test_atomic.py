"""pipelines.atomic: a file is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.atomic import atomic_write


def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failing_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "last.keras"
    target.write_text("previous checkpoint")

    def half_then_fail(p: Path) -> None:
        p.write_text("half of a")
        raise KeyboardInterrupt  # a kill part-way through the save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.keras"]


def test_the_temp_file_keeps_the_suffix_for_writers_that_check_it(tmp_path: Path) -> None:
    seen: list[Path] = []
    atomic_write(tmp_path / "best.keras", lambda p: (seen.append(p), p.write_text("x")))
    assert seen[0].suffix == ".keras" and seen[0].parent == tmp_path
