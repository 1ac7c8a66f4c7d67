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


# --- local mirror folders (a path or a file:// URL), checksums and the database's own files ---

SHARED_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "physionet-mirror"
CHALLENGE = "challenge-2015/1.0.0/training"


@pytest.fixture(scope="module")
def shared_mirror() -> Path:
    """`../shared/physionet-mirror`: real Challenge 2015 records in PhysioNet's layout."""
    if not (SHARED_MIRROR / CHALLENGE / "RECORDS").is_file():
        pytest.skip(f"PhysioNet mirror not found at {SHARED_MIRROR / CHALLENGE} (no ../shared)")
    return SHARED_MIRROR


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_database(root: Path, db: str = "tinydb/1.0.0", sums_at_version: bool = False) -> Path:
    """Three one-channel records (`r1..r3`) with RECORDS, ALARMS and SHA256SUMS, as PhysioNet
    lays them out; with `sums_at_version` the database is `<db>/training` and the sums file is
    `SHA256SUMS.txt` one folder up, listing `training/<file>` (PhysioNet's own layout)."""
    folder = root / db / ("training" if sums_at_version else "")
    folder.mkdir(parents=True)
    t = np.arange(1250) / 125.0
    for i in (1, 2, 3):
        wfdb.wrsamp(f"r{i}", fs=125, units=["mmHg"], sig_name=["ABP"], fmt=["16"],
                    p_signal=(90 + 20 * np.sin(2 * np.pi * 1.2 * t + i))[:, None],
                    write_dir=str(folder))
    (folder / "RECORDS").write_text("r1\nr2\nr3\n")
    (folder / "ALARMS").write_text("r1,Asystole,0\nr2,Tachycardia,1\nr3,Bradycardia,1\n")
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".hea", ".dat"))
    if sums_at_version:
        lines = [f"{_sha256(folder / f)}  training/{f}" for f in files]
        (folder.parent / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")
    else:
        (folder / "SHA256SUMS").write_text(
            "".join(f"{_sha256(folder / f)}  {f}\n" for f in files))
    return folder


def test_a_local_folder_path_and_a_file_url_pull_exactly_what_the_http_mirror_does(
        tmp_path: Path, mirror: str, mirror_root: Path, synth_db: Path) -> None:
    outs = {}
    for kind, where in (("http", mirror), ("path", str(mirror_root)),
                        ("file", mirror_root.as_uri())):
        outs[kind] = tmp_path / kind
        result = pull(PullConfig(db="synthdb/1.0.0", out=outs[kind], mirror=where))
        assert result.ok and result.downloaded == len(result.files), (kind, result.failed)
        _assert_same_files(synth_db, outs[kind], skip=("cohort.json",))


def test_a_whole_local_database_arrives_with_its_records_alarms_and_checksums(
        tmp_path: Path) -> None:
    folder = _tiny_database(tmp_path / "mirror")
    out = tmp_path / "out"
    result = pull(PullConfig(db="tinydb/1.0.0", out=out, mirror=str(tmp_path / "mirror")))
    assert result.ok and result.verified == 6  # r1..r3: .hea and .dat each
    _assert_same_files(folder, out)
    assert wfdb.rdrecord(str(out / "r2")).sig_name == ["ABP"]


def test_a_pull_of_named_records_brings_the_alarms_but_no_listing_of_absent_records(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tiny_database(tmp_path / "mirror")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        rc = main(["pull", "--db", "tinydb/1.0.0", "--records", "r1,r3", "--out", str(out),
                   "--mirror", str(tmp_path / "mirror")])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["ALARMS", "r1.dat", "r1.hea", "r3.dat",
                                                      "r3.hea"]
    assert "4 checked against SHA256SUMS" in caplog.text


def test_a_file_that_differs_from_sha256sums_fails_its_record_by_name_and_leaves_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _tiny_database(tmp_path / "mirror")
    with open(folder / "r2.dat", "r+b") as f:  # one flipped byte, same size
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        rc = main(["pull", "--db", "tinydb/1.0.0", "--out", str(out),
                   "--mirror", (tmp_path / "mirror").as_uri()])
    assert rc == 1
    assert f"record r2 failed: checksum mismatch for r2.dat ({folder / 'r2.dat'})" in caplog.text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ALARMS", "r1.dat", "r1.hea", "r3.dat", "r3.hea"]  # no r2.*, no RECORDS
    assert not list(out.rglob("*.part")) and not list(out.rglob(".*"))


def test_a_file_already_in_the_output_that_differs_from_sha256sums_is_named(
        tmp_path: Path) -> None:
    _tiny_database(tmp_path / "mirror")
    out = tmp_path / "out"
    out.mkdir()
    (out / "r1.hea").write_text("r1 1 125 10\n")  # not the mirror's header
    result = pull(PullConfig(db="tinydb/1.0.0", out=out, records=("r1",),
                             mirror=str(tmp_path / "mirror")))
    assert list(result.failed) == ["r1"]
    assert "r1.hea differs from the database's SHA256SUMS" in result.failed["r1"]
    assert "delete it and pull again" in result.failed["r1"]


def test_checksums_one_folder_up_as_physionet_keeps_them_are_found_and_checked(
        tmp_path: Path, mirror: str, mirror_root: Path) -> None:
    _tiny_database(mirror_root, db="tinysub/2.0", sums_at_version=True)
    for where in (mirror, str(mirror_root)):
        out = tmp_path / where.replace("/", "_").replace(":", "")
        result = pull(PullConfig(db="tinysub/2.0/training", out=out, mirror=where))
        assert result.ok and result.verified == 6
        assert (out / "ALARMS").exists() and (out / "RECORDS").exists()
        assert not (out / "SHA256SUMS.txt").exists()  # it lists files of the parent folder


def test_a_mirror_folder_that_does_not_exist_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(PullError, match="mirror folder does not exist: .*nowhere"):
        PullConfig(db="mitdb/1.0.0", out=tmp_path / "o", mirror=str(tmp_path / "nowhere"))
    assert main(["pull", "--db", "mitdb/1.0.0", "--out", str(tmp_path / "o"),
                 "--mirror", (tmp_path / "nowhere").as_uri()]) == 1
    assert not (tmp_path / "o").exists()


def test_a_local_mirror_without_the_database_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(PullError, match=r"'nodb/1\.0' has no RECORDS file at .*nodb/1\.0/RECORDS"):
        pull(PullConfig(db="nodb/1.0", out=tmp_path / "o", mirror=str(tmp_path)))


def test_real_challenge_records_come_from_the_shared_mirror_checked_and_with_their_alarms(
        tmp_path: Path, shared_mirror: Path) -> None:
    src = shared_mirror / CHALLENGE
    names = (src / "RECORDS").read_text().split()[:3]
    out = tmp_path / "challenge"
    rc = main(["pull", "--db", CHALLENGE, "--records", ",".join(names), "--out", str(out),
               "--mirror", str(shared_mirror)])
    assert rc == 0
    expected = ["ALARMS", *sorted(f"{n}.{ext}" for n in names for ext in ("hea", "mat"))]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name in expected:
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    record = wfdb.rdrecord(str(out / names[0]))  # the .mat signal file the header names
    assert "ABP" in record.sig_name and record.fs == 250
    alarms = {line.split(",")[0] for line in (out / "ALARMS").read_text().splitlines()}
    assert set(names) <= alarms


def test_the_shared_mirror_checksums_are_verified_on_a_pull(
        tmp_path: Path, shared_mirror: Path) -> None:
    name = (shared_mirror / CHALLENGE / "RECORDS").read_text().split()[0]
    result = pull(PullConfig(db=CHALLENGE, out=tmp_path / "c", records=(name,),
                             mirror=shared_mirror.as_uri()))
    assert result.ok and result.verified == 2 and result.downloaded == 2
