"""Pulling WFDB records from PhysioNet, an HTTP mirror of its layout, or a local mirror folder.

This is the one networked module (and it touches the network only for an http(s) mirror). A
database is named with its version, as PhysioNet serves it: `mitdb/1.0.0` lives at
`<mirror>/mitdb/1.0.0/`, and a sub-folder may follow (`challenge-2015/1.0.0/training`). An
unversioned name (`mitdb`) is refused: PhysioNet resolves "latest" only on its own site, so it
cannot work against a mirror, and an explicit version keeps a pull reproducible (see
../shared/physionet/README.md). The mirror is an http(s) URL, or a local folder (a plain path or a
`file://` URL) in the same layout: the offline twin of a pull from PhysioNet.

For each record the header is fetched, parsed with wfdb, and every file it names follows: the
signal files (`.dat`, `.mat`, ...) of a single-segment record, or the segment headers (layout
included) and their signal files of a multi-segment record. Annotation files named in the
database's `ANNOTATORS` list come along when present. Bytes are written untouched:

    <out>/<record>.hea, <out>/<signal files>, <out>/<record>.<annotator>   (sub-folders kept)
    <out>/ALARMS, README, LICENSE...  (DESCRIPTION_FILES present in the mirror: every pull)
    <out>/RECORDS, ANNOTATORS, SHA256SUMS  (LISTING_FILES: whole-database pulls where every
                                            record arrived, since they name every file)

Checksums: when the database (or a folder above it, up to `<slug>/<version>`) has a `SHA256SUMS`
or `SHA256SUMS.txt`, every file it lists is checked as it streams in, and a file already in `out`
is checked before it is kept; a mismatch fails that record with the file named, and nothing of the
bad file is left behind. Each file is streamed into a temporary file beside its target and renamed
into place (`pipelines.atomic`), so a file is complete or absent. Files already present are kept
(versioned PhysioNet files never change), which makes an interrupted pull resumable. A record that
fails is reported by name; the others still arrive.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pipelines.atomic import atomic_write

log = logging.getLogger(__name__)

PHYSIONET_URL = "https://physionet.org/files/"
_USER_AGENT = "pulsecast-pull (+https://github.com/MIT-LCP/wfdb-python layout)"
# <slug>/<version>[/<sub-folder>...]: the version is digits and dots, as on PhysioNet.
_DB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*/\d+(\.\d+)+(/[A-Za-z0-9_.-]+)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*/?$")
_SUM_RE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_MAX_RECORDS_DEPTH = 4
_CHUNK = 1 << 20

CHECKSUM_FILES: tuple[str, ...] = ("SHA256SUMS", "SHA256SUMS.txt")  # PhysioNet's is `.txt`
# Small files at the top of a database that describe its records (Challenge 2015's ALARMS:
# `record,alarm,label`). Copied on every pull: a reader looks records up in them.
DESCRIPTION_FILES: tuple[str, ...] = (
    "ALARMS", "README", "README.txt", "README.md", "LICENSE", "LICENSE.txt",
)
# Files that list every record or file of the database: kept only when all of it arrived.
LISTING_FILES: tuple[str, ...] = ("ANNOTATORS", *CHECKSUM_FILES)


class PullError(ValueError):
    """A pull that cannot go on, or one record that failed; the message names it."""


class RemoteFileMissing(PullError, FileNotFoundError):
    """The mirror has no such file (HTTP 404, or absent from the mirror folder)."""


class ChecksumMismatch(PullError):
    """A file's sha256 differs from the database's SHA256SUMS."""


def _mirror_folder(mirror: str) -> Path | None:
    """The local folder `mirror` names (a path or a file:// URL); None for http(s).

    Raises PullError for any other scheme, a file:// URL with a remote host, or a folder that
    does not exist.
    """
    if mirror.startswith(("http://", "https://")):
        return None
    if mirror.startswith("file:"):
        parts = urllib.parse.urlsplit(mirror)
        if parts.netloc not in ("", "localhost"):
            raise PullError(f"a file:// mirror must be on this machine, got host "
                            f"{parts.netloc!r} in {mirror!r}")
        folder = Path(urllib.request.url2pathname(parts.path))
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", mirror):
        raise PullError("mirror must be an http(s) URL or a local folder (a path or a file:// "
                        f"URL), got {mirror!r}")
    else:
        folder = Path(mirror).expanduser()
    if not folder.is_dir():
        raise PullError(f"mirror folder does not exist: {folder}")
    return folder


@dataclass(frozen=True)
class PullConfig:
    """What to pull: `records` of database `db` (`slug/version`) from `mirror` into `out`.

    `mirror` is an http(s) URL or a local folder (a path or a file:// URL) laid out as
    `<mirror>/<db>/`. `records` None means every record listed in the database's RECORDS file.
    `verify` checks files against the database's SHA256SUMS when it has one.
    """

    db: str
    out: Path
    records: tuple[str, ...] | None = None
    mirror: str = PHYSIONET_URL
    annotations: bool = True
    timeout_s: float = 60.0
    verify: bool = True

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
        object.__setattr__(self, "mirror", str(self.mirror))
        _mirror_folder(self.mirror)  # refuses a bad scheme or a missing folder, before any work
        if self.records is not None:
            if not self.records:
                raise PullError("records is empty; leave it out to pull the RECORDS list")
            for name in self.records:
                _check_name(name, "record")
        if self.timeout_s <= 0:
            raise PullError(f"timeout_s must be > 0, got {self.timeout_s}")

    @property
    def base_url(self) -> str:
        """The database folder (URL or path), ending in '/'."""
        return f"{self.mirror.rstrip('/')}/{self.db.strip('/')}/"


@dataclass(frozen=True)
class PullResult:
    """Files of the pulled records (downloaded now or already present) and failures by record.

    `verified` counts the files checked against the database's SHA256SUMS.
    """

    files: tuple[Path, ...]
    downloaded: int
    failed: dict[str, str] = field(default_factory=dict)
    verified: int = 0

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


class _Mirror:
    """Reads files of the mirror by their path under it (`mitdb/1.0.0/100.hea`)."""

    def __init__(self, mirror: str, timeout_s: float) -> None:
        self.folder = _mirror_folder(mirror)
        self.base = mirror.rstrip("/") + "/"
        self.timeout_s = timeout_s

    def where(self, rel: str) -> str:
        return str(self.folder / rel) if self.folder is not None else self.base + rel

    def _open_local(self, rel: str) -> BinaryIO:
        path = self.folder / rel
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise RemoteFileMissing(f"not found: {path}") from None
        except OSError as err:
            raise PullError(f"{path}: {err.strerror or err}") from None

    def read(self, rel: str) -> bytes:
        """The whole (small) file; RemoteFileMissing when the mirror has none."""
        if self.folder is None:
            return read_url(self.base + rel, self.timeout_s)
        with self._open_local(rel) as f:
            return f.read()

    def copy_into(self, rel: str, out: BinaryIO) -> str:
        """Stream the file into `out`; returns its sha256 (hex)."""
        digest = hashlib.sha256()
        if self.folder is not None:
            source = self._open_local(rel)
            expected = None
        else:
            source = _open(self.base + rel, self.timeout_s)
            expected = source.headers.get("Content-Length")
        with source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if expected is not None and out.tell() != int(expected):
            raise PullError(f"{self.where(rel)}: got {out.tell()} bytes of {expected}")
        return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(mirror: _Mirror, rel: str, dest: Path, sha256: str | None) -> bool:
    """Copy mirror file `rel` to `dest` atomically, checked against `sha256` when given.

    Returns False (nothing copied) when `dest` exists; with `sha256`, an existing file that
    differs raises ChecksumMismatch. A download that differs raises ChecksumMismatch and leaves
    nothing at `dest`.
    """
    if dest.exists():
        if sha256 is not None and _file_sha256(dest) != sha256.lower():
            raise ChecksumMismatch(
                f"{dest} differs from the database's SHA256SUMS (expected {sha256.lower()}); "
                "delete it and pull again")
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)

    def stream(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            got = mirror.copy_into(rel, f)
        if sha256 is not None and got != sha256.lower():
            raise ChecksumMismatch(
                f"checksum mismatch for {rel.rsplit('/', 1)[-1]} ({mirror.where(rel)}): "
                f"SHA256SUMS says {sha256.lower()}, the file has {got}; nothing written")
        os.chmod(tmp, 0o644)

    atomic_write(dest, stream, suffix=".part")
    return True


def _write_bytes(dest: Path, content: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        tmp.write_bytes(content)
        os.chmod(tmp, 0o644)

    atomic_write(dest, write, suffix=".part")


def parse_checksums(content: bytes, prefix: str = "") -> dict[str, str]:
    """`sha256sum` output -> {path relative to the database: lower-case hex}.

    `prefix` is the database folder's path relative to the folder of the sums file
    (`training/` when `challenge-2015/1.0.0/SHA256SUMS.txt` lists `training/a103l.hea`); entries
    outside it are left out.
    """
    sums: dict[str, str] = {}
    for line in content.decode("utf-8", errors="replace").splitlines():
        match = _SUM_RE.match(line.strip())
        if not match:
            continue
        name = match.group(2).strip()
        name = name[2:] if name.startswith("./") else name
        if name.startswith(prefix):
            sums[name[len(prefix):]] = match.group(1).lower()
    return sums


def read_checksums(config: PullConfig, mirror: _Mirror) -> tuple[dict[str, str], dict[str, bytes]]:
    """The database's checksums (see `parse_checksums`) and the sums files found in its folder.

    Looks in the database folder, then each folder above it up to `<slug>/<version>`; the first
    sums file found wins. Empty when there is none.
    """
    parts = config.db.strip("/").split("/")
    for depth in range(len(parts), 1, -1):  # the db folder first, `<slug>/<version>` last
        folder, inner = "/".join(parts[:depth]), "/".join(parts[depth:])
        for name in CHECKSUM_FILES:
            try:
                content = mirror.read(f"{folder}/{name}")
            except RemoteFileMissing:
                continue
            sums = parse_checksums(content, f"{inner}/" if inner else "")
            log.info("checking files against %s (%d entries)", mirror.where(f"{folder}/{name}"),
                     len(sums))
            return sums, ({name: content} if not inner else {})
    return {}, {}


def list_records(config: PullConfig, prefix: str = "", depth: int = 0
                 ) -> tuple[list[str], dict[str, bytes]]:
    """Record names from the RECORDS file (entries ending in '/' are folders with their own).

    Returns the names and each RECORDS file read, by its path in the database.
    """
    mirror = _Mirror(config.mirror, config.timeout_s)
    rel = f"{config.db.strip('/')}/{prefix}RECORDS"
    try:
        content = mirror.read(rel)
    except RemoteFileMissing:
        raise PullError(f"database {config.db!r} has no RECORDS file at {mirror.where(rel)}; "
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


def _read_optional(mirror: _Mirror, db: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """Those of `names` the database folder has, with their bytes (one that cannot be read is
    left out with a warning: the records say what is wrong with the mirror)."""
    found = {}
    for name in names:
        try:
            found[name] = mirror.read(f"{db}/{name}")
        except RemoteFileMissing:
            continue
        except PullError as err:
            log.warning("%s not read: %s", name, err)
    return found


def list_annotators(config: PullConfig) -> list[str]:
    """Annotation file extensions from the database's ANNOTATORS file; none when it has none."""
    mirror = _Mirror(config.mirror, config.timeout_s)
    content = _read_optional(mirror, config.db.strip("/"), ("ANNOTATORS",)).get("ANNOTATORS")
    return _annotators(content)


def _annotators(content: bytes | None) -> list[str]:
    if content is None:
        return []
    exts = [line.split()[0] for line in content.decode("ascii", "replace").splitlines()
            if line.strip()]
    return [e for e in exts if re.fullmatch(r"[A-Za-z0-9_]+", e)]


class _RecordPuller:
    """Fetches one record's files into `out`, checking them against `sums`, counting copies."""

    def __init__(self, config: PullConfig, mirror: _Mirror, sums: dict[str, str]) -> None:
        self.config = config
        self.mirror = mirror
        self.db = config.db.strip("/")
        self.out = Path(config.out)
        self.sums = sums
        self.downloaded = 0
        self.verified = 0
        self.new_files: list[Path] = []  # copied now, for the record being pulled

    def fetch(self, rel: str) -> Path:
        _check_name(rel, "file")
        dest = self.out / rel
        sha = self.sums.get(rel)
        if _fetch(self.mirror, f"{self.db}/{rel}", dest, sha):
            self.downloaded += 1
            self.new_files.append(dest)
            log.debug("copied %s", rel)
        self.verified += sha is not None
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


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def pull(config: PullConfig) -> PullResult:
    """Copy `config.records` (or all in RECORDS) into `config.out`; failures are per record."""
    from pipelines.progress import progress

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is a file, not a folder: {out}")
    mirror = _Mirror(config.mirror, config.timeout_s)
    db = config.db.strip("/")
    listings: dict[str, bytes] = {}
    if config.records is None:
        records, listings = list_records(config)
    else:
        records = list(config.records)
    whole = config.records is None
    listed = _read_optional(mirror, db, ("ANNOTATORS",)) if whole or config.annotations else {}
    annotators = _annotators(listed.get("ANNOTATORS")) if config.annotations else []
    sums, sums_files, sums_error = {}, {}, None
    if config.verify:
        try:
            sums, sums_files = read_checksums(config, mirror)
        except PullError as err:  # unreadable, not absent: no record can be checked
            sums_error = PullError(f"the database's checksums cannot be read: {err}")
    described = _read_optional(mirror, db, DESCRIPTION_FILES) if sums_error is None else {}
    log.info("pulling %d record(s) of %s from %s into %s", len(records), config.db,
             config.mirror, out)
    puller = _RecordPuller(config, mirror, sums)
    files: list[Path] = []
    failed: dict[str, str] = {}
    for name in progress(records, total=len(records), desc=f"pull {config.db}", logger=log):
        puller.new_files = []
        try:
            if sums_error is not None:
                raise sums_error
            files += puller.record(name, annotators)
        except (PullError, ValueError, OSError) as err:
            # ValueError/OSError: a header wfdb cannot parse, a full disk. Report, go on.
            failed[name] = str(err)
            log.error("record %s failed: %s", name, err)
            _remove(puller.new_files)  # a record arrives whole or not at all
            puller.downloaded -= len(puller.new_files)
    extras = dict(described)
    if whole and not failed:  # listings name every record: all must be here
        extras.update({**listings, **listed, **sums_files})
    for rel, content in extras.items():
        sha = sums.get(rel)
        if sha is not None and hashlib.sha256(content).hexdigest() != sha:
            failed[rel] = (f"checksum mismatch for {rel} ({mirror.where(f'{db}/{rel}')}): "
                           f"SHA256SUMS says {sha}; nothing written")
            log.error("%s", failed[rel])
            continue
        if not (out / rel).exists() or (out / rel).read_bytes() != content:
            _write_bytes(out / rel, content)
    if sums:
        log.info("%d file(s) matched SHA256SUMS", puller.verified)
    return PullResult(files=tuple(files), downloaded=puller.downloaded, failed=failed,
                      verified=puller.verified)

