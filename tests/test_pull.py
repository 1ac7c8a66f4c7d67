"""`pulsecast pull` against a local HTTP server laid out like PhysioNet (no internet needed)."""

from __future__ import annotations

import functools
import http.server
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import wfdb

from pipelines.cli import main
from pipelines.sources.pull import PullConfig, PullError, pull
from pipelines.sources.synth import SynthConfig, write_cohort


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PhysioNet-layout folder; tests add databases to it."""
    return tmp_path_factory.mktemp("mirror")


@pytest.fixture(scope="module")
def mirror(mirror_root: Path) -> Iterator[str]:
    """`http://127.0.0.1:<free port>/` serving `mirror_root`."""
    handler = functools.partial(_QuietHandler, directory=str(mirror_root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def synth_db(mirror_root: Path) -> Path:
    """A synthetic database `synthdb/1.0.0` (single- and multi-segment records, numerics)."""
    root = mirror_root / "synthdb" / "1.0.0"
    write_cohort(SynthConfig(out=root, patients=2, minutes=1, seed=0))
    return root


@pytest.fixture(scope="module")
def real_dbs(mirror_root: Path, physionet_dir: Path) -> Path:
    """`mitdb/1.0.0` (record 100 + beat annotations) and `mimic2wdb/3.0` (nested RECORDS)."""
    mitdb = mirror_root / "mitdb" / "1.0.0"
    mitdb.mkdir(parents=True)
    for f in (physionet_dir / "mitdb").glob("100.*"):
        (mitdb / f.name).symlink_to(f)
    (mitdb / "RECORDS").write_text("100\n")
    (mitdb / "ANNOTATORS").write_text("atr\treference beat, rhythm and signal quality\n")
    mimic = mirror_root / "mimic2wdb" / "3.0" / "s25047"
    shutil.copytree(physionet_dir / "mimic2wdb" / "s25047", mimic)
    (mimic.parent / "RECORDS").write_text("s25047/\n")
    (mimic / "RECORDS").write_text("s25047-2704-05-04-10-44\ns25047-2704-05-04-10-44n\n")
    return mirror_root


def _assert_same_files(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Every file under `src` (but `skip`) is in `dst`, byte-identical, and `dst` has no others."""
    rels = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    rels = [r for r in rels if r not in skip]
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == rels
    for rel in rels:
        assert (dst / rel).read_bytes() == (src / rel).read_bytes(), rel


def test_unversioned_database_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(PullError, match=r"database 'mitdb' has no version.*--db mitdb/1\.0\.0"):
        PullConfig(db="mitdb", out=tmp_path)


def test_cli_refuses_an_unversioned_database_before_any_request(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        rc = main(["pull", "--db", "mitdb", "--out", str(tmp_path / "o"),
                   "--mirror", "http://127.0.0.1:9/"])
    assert rc == 1
    assert "'mitdb' has no version" in caplog.text
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs", "a/../../b"])
def test_record_names_that_leave_the_output_folder_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PullError, match="not a plain relative WFDB name"):
        PullConfig(db="mitdb/1.0.0", out=tmp_path, records=(bad,))


def test_mirror_must_be_an_http_url(tmp_path: Path) -> None:
    with pytest.raises(PullError, match="mirror must be an http"):
        PullConfig(db="mitdb/1.0.0", out=tmp_path, mirror="ftp://example.org/")


def test_whole_synthetic_database_arrives_byte_identical(
        tmp_path: Path, mirror: str, synth_db: Path) -> None:
    out = tmp_path / "synthdb"
    result = pull(PullConfig(db="synthdb/1.0.0", out=out, mirror=mirror))
    assert result.ok and result.downloaded == len(result.files)
    _assert_same_files(synth_db, out, skip=("cohort.json",))  # not WFDB: nothing names it
    master = next(p for p in (out / "p000002").glob("p000002-*.hea") if not p.stem.endswith("n"))
    record = wfdb.rdrecord(str(master.with_suffix("")))  # multi-segment, read from the copy
    assert record.sig_name == ["II", "ABP", "PLETH", "RESP"]
    assert not list(out.rglob("*.part"))


def test_second_pull_downloads_nothing(tmp_path: Path, mirror: str, synth_db: Path) -> None:
    config = PullConfig(db="synthdb/1.0.0", out=tmp_path / "s", mirror=mirror)
    first = pull(config)
    again = pull(config)
    assert again.ok and again.downloaded == 0 and set(again.files) == set(first.files)


def test_missing_record_is_named_and_the_others_still_arrive(
        tmp_path: Path, mirror: str, synth_db: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = (synth_db / "RECORDS").read_text().split()[0]
    out = tmp_path / "o"
    with caplog.at_level(logging.ERROR):
        rc = main(["pull", "--db", "synthdb/1.0.0", "--records", f"p000009/nope,{good}",
                   "--out", str(out), "--mirror", mirror])
    assert rc == 1
    assert "record p000009/nope failed: not found" in caplog.text
    assert (out / f"{good}.hea").read_bytes() == (synth_db / f"{good}.hea").read_bytes()
    assert not (out / "RECORDS").exists()  # it would name a record that did not arrive


def test_unknown_database_version_says_so(tmp_path: Path, mirror: str, synth_db: Path) -> None:
    with pytest.raises(PullError, match=r"'synthdb/9\.9' has no RECORDS file"):
        pull(PullConfig(db="synthdb/9.9", out=tmp_path, mirror=mirror))


def test_unreachable_mirror_fails_each_record_by_name(tmp_path: Path) -> None:
    result = pull(PullConfig(db="mitdb/1.0.0", out=tmp_path, records=("100",),
                             mirror="http://127.0.0.1:9/", annotations=False, timeout_s=2))
    assert list(result.failed) == ["100"]
    assert "127.0.0.1:9" in result.failed["100"]


def test_mitdb_record_and_annotations_arrive_byte_identical(
        tmp_path: Path, mirror: str, real_dbs: Path, physionet_dir: Path) -> None:
    out = tmp_path / "mitdb"
    rc = main(["pull", "--db", "mitdb/1.0.0", "--records", "100", "--out", str(out),
               "--mirror", mirror])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["100.atr", "100.dat", "100.hea"]
    for name in ("100.atr", "100.dat", "100.hea"):
        assert (out / name).read_bytes() == (physionet_dir / "mitdb" / name).read_bytes()
    assert wfdb.rdrecord(str(out / "100"), sampto=10).sig_name == ["MLII", "V5"]


def test_mimic_multi_segment_database_arrives_whole_through_nested_records(
        tmp_path: Path, mirror: str, real_dbs: Path) -> None:
    out = tmp_path / "mimic2wdb"
    result = pull(PullConfig(db="mimic2wdb/3.0", out=out, mirror=mirror))
    assert result.ok, result.failed
    _assert_same_files(real_dbs / "mimic2wdb" / "3.0", out)
    header = wfdb.rdheader(str(out / "s25047" / "s25047-2704-05-04-10-44"), rd_segments=True)
    assert "~" in header.seg_name
    numerics = wfdb.rdrecord(str(out / "s25047" / "s25047-2704-05-04-10-44n"))
    assert (numerics.p_signal == 0).any() or np.isnan(numerics.p_signal).any()
