"""What changed in a version folder: `folder_token`, the fingerprint the manager compares to
tell whether a folder that failed to load has been rewritten since.

Which folders are versions (`007` is 7, as absl::SimpleAtoi reads it; `.staging` folders
ignored) is the version-folder contract's: `models.layout.parse_version_name` and
`scan_versions`, shared with the model store. Reads only.
"""

from __future__ import annotations

import os
from pathlib import Path

from models.layout import ASSETS_EXTRA, SAVED_MODEL_FILES, VARIABLES_DIR

# The folder itself, its graph files and the two folders a rewrite touches.
_TOP = ("", *SAVED_MODEL_FILES, VARIABLES_DIR, str(ASSETS_EXTRA))
_LISTED = (VARIABLES_DIR, str(ASSETS_EXTRA))


def folder_token(path: Path) -> tuple:
    """What changes when a version folder is rewritten: mtimes and sizes of its top files."""
    parts = []
    for rel in _TOP:
        try:
            st = (path / rel).stat()
        except OSError:
            continue
        parts.append((rel, st.st_mtime_ns, st.st_size))
    for sub in _LISTED:
        try:
            for e in sorted(os.scandir(path / sub), key=lambda e: e.name):
                st = e.stat()
                parts.append((f"{sub}/{e.name}", st.st_mtime_ns, st.st_size))
        except OSError:
            continue
    return tuple(parts)
