"""Progress reporting: a tqdm bar on a terminal, a plain log line every few items elsewhere (CI)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "",
             logger: logging.Logger | None = None, every: int = 10) -> Iterator[T]:
    """Iterate `items` with a bar when stderr is a terminal, else log every `every` items."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, unit="rec", file=sys.stderr)
        return
    log = logger or logging.getLogger(__name__)
    n = 0
    for n, item in enumerate(items, start=1):
        if n == 1 or n % every == 0 or (total is not None and n == total):
            log.info("%s %d/%s", desc, n, total if total is not None else "?")
        yield item
