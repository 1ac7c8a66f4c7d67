"""Write a file so that readers see the old content or the new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object], suffix: str | None = None) -> None:
    """Write through `write(tmp_path)` into a temp file beside `path` (same suffix, so writers
    that check it, like Keras' `.keras`, accept it), then rename it over `path`. A failure or a
    kill part-way leaves `path` as it was.

    `suffix` names the temp file otherwise (`.{name}.<random>{suffix}`), e.g. `.part` so that a
    leftover of a killed download is never taken for a WFDB file."""
    path = Path(path)
    if suffix is None:
        prefix, suffix = f".{path.stem}.", path.suffix
    else:
        prefix = f".{path.name}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
