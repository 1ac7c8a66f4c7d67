"""Signal conditioning, the one home for ingest and for the server's `:forecast` route alike.

A model sees what ingest produced, so `:forecast` must condition a raw signal the way ingest did:
the same rate ratio, the same NaN-safe resampling, the same gap filling. Both sides call these
functions. Pure numpy/scipy, no I/O, no TensorFlow.

Gap filling: a NaN run with data on both sides is a straight line between its neighbours
(`col[a - 1] + t * (col[b] - col[a - 1])`). Ingest (`fill_short_gaps`) fills runs of at most
`max_samples` and leaves longer runs and edge runs as NaN: the window cutter then skips or masks
them, so a model never trains on an edge. The server (`fill_gaps`) must hand the model a finite
window, so it fills every run up to `max_gap_s`, holds the nearest value over an edge run (the
only choice short of refusing; ingest yields no training window there to disagree with), and
raises `GapTooLongError` naming the channel and the gap for anything longer. `condition_tail`
is the whole server-side recipe for one channel: resample the tail, fill, keep the window.

Resampling (the rate ratio, the NaN-safe polyphase filter, its bounded-cost form and the
filter cache) is `models.resampling`; `condition_tail` calls it.
"""

from __future__ import annotations

import math

import numpy as np

from models.resampling import resample_tail


class GapTooLongError(ValueError):
    """A gap in a channel longer than the caller allows filling (or a channel with no data)."""

    def __init__(self, channel: str, n_samples: int, start: int, fs: float,
                 max_gap_s: float) -> None:
        self.channel, self.n_samples, self.start = channel, n_samples, start
        self.gap_s, self.start_s, self.max_gap_s = n_samples / fs, start / fs, max_gap_s
        super().__init__(
            f"channel {channel!r} has a gap of {self.gap_s:.3f} s ({n_samples} samples) starting "
            f"{self.start_s:.3f} s into the part of the signal used; gaps up to max_gap_s="
            f"{max_gap_s:g} s are filled"
        )


# --- gap filling --------------------------------------------------------------------------


def nan_runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(starts, stops)`: the `[start, stop)` index pairs of the NaN runs of 1-D `x`."""
    missing = np.isnan(x).view(np.int8)
    edges = np.diff(np.concatenate(([0], missing, [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _fill_run(col: np.ndarray, a: int, b: int) -> None:
    """Fill the NaN run `[a, b)` of `col` in place: a line between its neighbours, or the one
    neighbour held over an edge run."""
    if a == 0:
        col[a:b] = col[b]
    elif b == len(col):
        col[a:b] = col[a - 1]
    else:
        t = np.arange(1, b - a + 1, dtype=np.float64) / (b - a + 1)
        col[a:b] = col[a - 1] + t * (col[b] - col[a - 1])


def fill_short_gaps(signal: np.ndarray, max_samples: int) -> int:
    """Linearly interpolate, in place, each channel's NaN runs of at most `max_samples` that
    have data on both sides (edges and longer gaps stay NaN). Returns the samples filled.

    `signal` is `(time, channels)`. This is ingest's rule, the one models are trained on.
    """
    filled = 0
    if max_samples < 1:
        return 0
    for j in range(signal.shape[1]):
        col = signal[:, j]
        if not np.isnan(col).any():
            continue
        starts, stops = nan_runs(col)
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            if a == 0 or b == len(col) or b - a > max_samples:
                continue
            _fill_run(col, a, b)
            filled += b - a
    return filled


def fill_gaps(samples: np.ndarray, fs: float, max_gap_s: float, channel: str) -> np.ndarray:
    """Every NaN run of 1-D `samples` (at `fs` Hz) filled: interior runs as ingest fills them,
    edge runs held at the nearest value. `samples` itself when it has no NaN, else a copy.

    Raises `GapTooLongError` naming `channel`, the longest gap and where it starts when that gap
    lasts more than `max_gap_s` seconds, or when the channel has no data at all.
    """
    missing = np.isnan(samples)
    if not missing.any():
        return samples
    starts, stops = nan_runs(samples)
    lengths = stops - starts
    worst = int(np.argmax(lengths))
    if lengths[worst] / fs > max_gap_s or missing.all():
        raise GapTooLongError(channel, int(lengths[worst]), int(starts[worst]), fs, max_gap_s)
    filled = samples.copy()
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        _fill_run(filled, a, b)
    return filled


def condition_tail(samples: np.ndarray, fs_in: float, fs_out: float, n_out: int,
                   max_gap_s: float, channel: str, margin_s: float = 1.0,
                   max_term: int | None = None) -> np.ndarray:
    """The last `n_out` samples at `fs_out` of one raw channel, as ingest would have made them.

    `samples` is 1-D in physical units at `fs_in` Hz, NaN for missing. Resamples the end of it
    (`resample_tail`: `n_out` samples plus `margin_s` seconds before them, so a gap just before
    the window has a neighbour to be filled from), fills the gaps there (`fill_gaps`: raises
    `GapTooLongError` for one longer than `max_gap_s`), and returns float64 `(n_out,)`. A signal
    a rounding short of `n_out` samples has its first sample repeated at the front. `max_term`
    bounds the resampling's cost (`resample_tail`: `RatioTooCoarseError` when it cannot).
    """
    margin = math.ceil(margin_s * fs_out)
    tail = resample_tail(samples, fs_in, fs_out, n_out + margin, max_term=max_term)
    window = fill_gaps(tail, fs_out, max_gap_s, channel)[-n_out:]
    if len(window) < n_out:
        window = np.concatenate([np.full(n_out - len(window), window[0]), window])
    return window
