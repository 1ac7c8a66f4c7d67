"""What a version's status tells clients: its error text without the server's file system.

Load errors (TensorFlow's, the loader's) name folders and files: `Failed to load SavedModel at
/srv/models/ecg/3: ...`. Status answers reach any client that may read status (and before the
token covered gRPC, anyone), so the text clients see names the model and version instead, and
the log keeps the real path. `public_text` does the rewriting; pure string work.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# An absolute path of two or more parts not inside a word or URL (`/a/b`, not `http://a/b`).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~>-])(?:/[\w.@+%~-]+){2,}/?")
MAX_TEXT = 2000  # a status text is a summary: the log has the rest


def public_text(text: str, name: str, version: int, folders: Iterable[Path]) -> str:
    """`text` with each of `folders` (the version's folder as configured and as resolved)
    replaced by `<model NAME version N>`, any other absolute path by `<path>`, cut to
    `MAX_TEXT` characters."""
    here = f"<model {name} version {version}>"
    for folder in sorted({str(f) for f in folders}, key=len, reverse=True):
        if folder:
            text = text.replace(folder, here)
    text = _ABSOLUTE_PATH.sub("<path>", text)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"... ({len(text) - MAX_TEXT} more characters in the log)"
    return text
