"""Zero-copy window views of a `(time, channels)` signal and the one copy that gathers rows.

`window_view` is a strided view (a memmap stays a memmap); `take_rows` copies the rows of a batch
out of it with fancy indexing. Evenly spaced channel selections stay inside the view
(`split_selection`); others are picked while gathering.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _column_selector(cols: Sequence[int]) -> slice | np.ndarray:
    """A slice when `cols` are evenly spaced (a view, no copy); else an index array."""
    cols = list(cols)
    if len(cols) == 1:
        return slice(cols[0], cols[0] + 1)
    step = cols[1] - cols[0]
    if step != 0 and all(b - a == step for a, b in zip(cols, cols[1:], strict=False)):
        stop = cols[-1] + step
        return slice(cols[0], stop if stop >= 0 else None, step)
    return np.asarray(cols, dtype=np.intp)


def window_view(
    signal: np.ndarray, first: int, steps: int, cols: Sequence[int] | None = None
) -> np.ndarray:
    """Zero-copy view `(n, steps, channels)`: row `s` is `signal[s + first : s + first + steps]`.

    `cols` (evenly spaced column indices, e.g. `[2]`, `[0, 1]`, `[2, 0]`) select channels as a
    strided slice, so the result is still a view of `signal` (a memmap stays a memmap).
    """
    base = signal[first:]
    if cols is not None:
        sel = _column_selector(cols)
        if not isinstance(sel, slice):
            raise ValueError(f"cols must be evenly spaced to stay a view, got {list(cols)}")
        base = base[:, sel]
    # sliding_window_view puts the window axis last: (n, channels, steps) -> (n, steps, channels)
    return sliding_window_view(base, steps, axis=0).transpose(0, 2, 1)


def split_selection(cols: list[int]) -> tuple[list[int] | None, np.ndarray | None]:
    if isinstance(_column_selector(cols), slice):
        return cols, None
    return None, np.asarray(cols, dtype=np.intp)


def take_rows(view: np.ndarray, starts: np.ndarray, pick: np.ndarray | None) -> np.ndarray:
    """`view[starts]` (channels `pick` only, when given): a fresh C-contiguous array.

    Fancy indexing, not `np.take`: `take` first makes the whole strided source contiguous, which
    would materialize every window of the record.
    """
    if pick is None:
        return view[starts]
    return view[starts[:, None, None], np.arange(view.shape[1])[:, None], pick]

