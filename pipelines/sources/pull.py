"""Downloading WFDB records from PhysioNet or any HTTP mirror of its layout: the networked module.

A database is named with its version, as PhysioNet serves it: `mitdb/1.0.0` lives at
`<mirror>/mitdb/1.0.0/`. An unversioned name (`mitdb`) is refused: PhysioNet resolves "latest"
only on its own site, so it cannot work against a mirror, and an explicit version keeps a pull
reproducible (see ../shared/physionet/README.md).

For each record the header is fetched, parsed with wfdb, and every file it names follows: the
signal files of a single-segment record, or the segment headers (layout included) and their
signal files of a multi-segment record. Annotation files named in the database's `ANNOTATORS`
list come along when present. Bytes are written untouched:

    <out>/<record>.hea, <out>/<signal files>, <out>/<record>.<annotator>   (sub-folders kept)
    <out>/RECORDS                                                          (whole-database pulls)

Each file is streamed into a temporary file beside its target and renamed into place
(`pipelines.atomic`), so a file is complete or absent. Files already present are kept (versioned
PhysioNet files never change), which makes an interrupted pull resumable. A record that fails is
reported by name; the others still download.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.atomic import atomic_write

log = logging.getLogger(__name__)

PHYSIONET_URL = "https://physionet.org/files/"
_USER_AGENT = "pulsecast-pull (+https://github.com/MIT-LCP/wfdb-python layout)"
# <slug>/<version>[/<sub-folder>...]: the version is digits and dots, as on PhysioNet.
_DB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*/\d+(\.\d+)+(/[A-Za-z0-9_.-]+)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*/?$")
_MAX_RECORDS_DEPTH = 4


class PullError(ValueError):
    """A pull that cannot go on, or one record that failed; the message names it."""


class RemoteFileMissing(PullError, FileNotFoundError):
    """The mirror answered 404 for a file."""


@dataclass(frozen=True)
class PullConfig:
    """What to pull: `records` of database `db` (`slug/version`) from `mirror` into `out`.

    `records` None means every record listed in the database's RECORDS file.
    """

    db: str
    out: Path
    records: tuple[str, ...] | None = None
    mirror: str = PHYSIONET_URL
    annotations: bool = True
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        db = self.db.strip("/")
        if "/" not in db:
            raise PullError(
                f"database {self.db!r} has no version; streaming needs one, e.g. "
                f"--db {db}/1.0.0 (versions are listed at https://physionet.org/content/{db}/)"
            )
        if not _DB_RE.match(db):
            raise PullError(
                f"database must look like 'mitdb/1.0.0' (slug/version), got {self.db!r}"
            )
        if not self.mirror.startswith(("http://", "https://")):
            raise PullError(f"mirror must be an http(s) URL, got {self.mirror!r}")
        if self.records is not None:
            if not self.records:
                raise PullError("records is empty; leave it out to pull the RECORDS list")
            for name in self.records:
                _check_name(name, "record")
        if self.timeout_s <= 0:
            raise PullError(f"timeout_s must be > 0, got {self.timeout_s}")

    @property
    def base_url(self) -> str:
        """The database folder URL, ending in '/'."""
        return f"{self.mirror.rstrip('/')}/{self.db.strip('/')}/"


@dataclass(frozen=True)
class PullResult:
    """Files of the pulled records (downloaded now or already present) and failures by record."""

    files: tuple[Path, ...]
    downloaded: int
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_name(name: str, what: str) -> str:
    """Refuse names that are not plain relative paths, so no file lands outside `out`."""
    if not _NAME_RE.match(name) or ".." in name.split("/"):
        raise PullError(f"{what} name {name!r} is not a plain relative WFDB name")
    return name


def _open(url: str, timeout_s: float):
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise RemoteFileMissing(f"not found: {url} (HTTP 404)") from None
        raise PullError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PullError(f"{url}: {reason}") from None


def read_url(url: str, timeout_s: float = 60.0) -> bytes:
    """The whole body of a (small) remote file."""
    with _open(url, timeout_s) as response:
        return response.read()


def download_file(url: str, dest: Path, timeout_s: float = 60.0) -> bool:
    """Stream `url` into `dest` atomically; False (and no request) when `dest` already exists."""
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)

    def stream(tmp: Path) -> None:
        with open(tmp, "wb") as f, _open(url, timeout_s) as response:
            shutil.copyfileobj(response, f, 1 << 20)
            expected = response.headers.get("Content-Length")
            if expected is not None and f.tell() != int(expected):
                raise PullError(f"{url}: got {f.tell()} bytes of {expected}")
        os.chmod(tmp, 0o644)

    atomic_write(dest, stream, suffix=".part")
    return True


def _write_bytes(dest: Path, content: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        tmp.write_bytes(content)
        os.chmod(tmp, 0o644)

    atomic_write(dest, write, suffix=".part")


def list_records(config: PullConfig, prefix: str = "", depth: int = 0
                 ) -> tuple[list[str], dict[str, bytes]]:
    """Record names from the RECORDS file (entries ending in '/' are folders with their own).

    Returns the names and each RECORDS file read, by its path in the database.
    """
    url = config.base_url + prefix + "RECORDS"
    try:
        content = read_url(url, config.timeout_s)
    except RemoteFileMissing:
        raise PullError(f"database {config.db!r} has no RECORDS file at {url}; "
                        "check the name and version, or pass --records") from None
    names: list[str] = []
    listings = {prefix + "RECORDS": content}
    for line in content.decode("ascii", errors="replace").splitlines():
        entry = line.strip()
        if not entry:
            continue
        name = _check_name(prefix + entry, "RECORDS entry")
        if name.endswith("/") and depth < _MAX_RECORDS_DEPTH:
            sub_names, sub_listings = list_records(config, name, depth + 1)
            names += sub_names
            listings.update(sub_listings)
        elif not name.endswith("/"):
            names.append(name)
    return names, listings


def list_annotators(config: PullConfig) -> list[str]:
    """Annotation file extensions from the database's ANNOTATORS file; none when it has none."""
    try:
        content = read_url(config.base_url + "ANNOTATORS", config.timeout_s)
    except RemoteFileMissing:
        return []
    exts = [line.split()[0] for line in content.decode("ascii", "replace").splitlines()
            if line.strip()]
    return [e for e in exts if re.fullmatch(r"[A-Za-z0-9_]+", e)]


class _RecordPuller:
    """Fetches one record's files into `out`, counting downloads."""

    def __init__(self, config: PullConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.downloaded = 0

    def fetch(self, rel: str) -> Path:
        _check_name(rel, "file")
        dest = self.out / rel
        if download_file(self.config.base_url + rel, dest, self.config.timeout_s):
            self.downloaded += 1
            log.debug("downloaded %s", rel)
        return dest

    def header(self, folder: str, name: str):
        """Fetch `<folder><name>.hea` and parse it with wfdb (no network: the local copy)."""
        import wfdb

        path = self.fetch(f"{folder}{name}.hea")
        return path, wfdb.rdheader(str(path)[: -len(".hea")])

    def signal_files(self, folder: str, header) -> list[Path]:
        names = dict.fromkeys(f for f in (header.file_name or []) if f and f != "~")
        return [self.fetch(folder + f) for f in names]

    def record(self, name: str, annotators: list[str]) -> list[Path]:
        folder, base = posixpath.split(name)
        folder = f"{folder}/" if folder else ""
        path, header = self.header(folder, base)
        files = [path]
        if getattr(header, "seg_name", None):  # multi-segment: layout + segments, '~' is a gap
            for seg in header.seg_name:
                if seg == "~":
                    continue
                seg_path, seg_header = self.header(folder, seg)
                files += [seg_path, *self.signal_files(folder, seg_header)]
        else:
            files += self.signal_files(folder, header)
        for ext in annotators:
            try:
                files.append(self.fetch(f"{name}.{ext}"))
            except RemoteFileMissing:
                log.debug("record %s has no %s annotations", name, ext)
        return files


def pull(config: PullConfig) -> PullResult:
    """Download `config.records` (or all in RECORDS) into `config.out`; failures are per record."""
    from pipelines.progress import progress

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is a file, not a folder: {out}")
    listings: dict[str, bytes] = {}
    if config.records is None:
        records, listings = list_records(config)
    else:
        records = list(config.records)
    annotators = list_annotators(config) if config.annotations else []
    log.info("pulling %d record(s) of %s from %s into %s", len(records), config.db,
             config.mirror, out)
    puller = _RecordPuller(config)
    files: list[Path] = []
    failed: dict[str, str] = {}
    for name in progress(records, total=len(records), desc=f"pull {config.db}", logger=log):
        try:
            files += puller.record(name, annotators)
        except (PullError, ValueError, OSError) as err:
            # ValueError/OSError: a header wfdb cannot parse, a full disk. Report, go on.
            failed[name] = str(err)
            log.error("record %s failed: %s", name, err)
    if not failed:  # a RECORDS list is kept only when every record it names arrived
        for rel, content in listings.items():
            _write_bytes(out / rel, content)
    return PullResult(files=tuple(files), downloaded=puller.downloaded, failed=failed)
