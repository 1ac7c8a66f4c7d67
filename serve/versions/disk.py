"""What the model base path holds: numbered version folders, read as TF Serving reads them.

A version folder is a child of the base path whose name parses as an integer (`007` is 7, as
absl::SimpleAtoi reads it); names starting with `.` are pulsecast's staging folders
(`models.store` writes a version there, then renames it) and are ignored. `folder_token` is what
the manager compares to tell whether a folder that failed to load has changed since. Reads only.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

_INT64_MAX = 2**63 - 1
_SIMPLE_ATOI = re.compile(r"\s*\+?([0-9]+)\s*")


def parse_version_name(name: str) -> int | None:
    """A version folder name as absl::SimpleAtoi reads it (`007` -> 7, ` 3` -> 3); None for
    anything else, hidden names (staging folders), negatives and int64 overflow."""
    if name.startswith("."):
        return None
    match = _SIMPLE_ATOI.fullmatch(name)
    if not match:
        return None
    value = int(match.group(1))
    return value if value <= _INT64_MAX else None


def scan_versions(base_path: Path) -> dict[int, Path]:
    """{version: folder} under a base path. Raises FileNotFoundError when the path is missing.
    Duplicates (`1` and `001`) keep the name that sorts last, with a warning, as TF Serving."""
    found: dict[int, Path] = {}
    for entry in sorted(os.scandir(base_path), key=lambda e: e.name):
        version = parse_version_name(entry.name)
        if version is None or not entry.is_dir():
            continue
        if version in found:
            log.warning("duplicate version %d under %s: %s and %s; using %s", version, base_path,
                        found[version].name, entry.name, entry.name)
        found[version] = Path(entry.path)
    return found


def folder_token(path: Path) -> tuple:
    """What changes when a version folder is rewritten: mtimes and sizes of its top files."""
    parts = []
    for rel in ("", "saved_model.pb", "saved_model.pbtxt", "variables", "assets.extra"):
        try:
            st = (path / rel).stat()
        except OSError:
            continue
        parts.append((rel, st.st_mtime_ns, st.st_size))
    for sub in ("variables", "assets.extra"):
        try:
            for e in sorted(os.scandir(path / sub), key=lambda e: e.name):
                st = e.stat()
                parts.append((f"{sub}/{e.name}", st.st_mtime_ns, st.st_size))
        except OSError:
            continue
    return tuple(parts)
