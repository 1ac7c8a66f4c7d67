"""Window math: `WindowSpec`, and the start indices of the windows that fit in a signal.

Index semantics: the window at `start` has input rows `[start, start + input_steps)` and target
rows `[start + input_steps, start + input_steps + horizon)`; windows never cross records.

Still windows: with `max_still_fraction < 1`, a window whose target channels hold still (over
the whole span, input and horizon) on more than that fraction of their sample-to-sample steps is
not cut (`quality.window_still_fraction`: a flat line, a transducer's calibration square wave):
it is neither trained on nor scored. `WindowIndex.n_still` counts them.

Gap policy: "skip" (default) drops a window when its input rows have NaN in an input channel or its
target rows have NaN in a target channel (other channels are ignored). "mask" keeps every window
that fits: NaN becomes 0, `x` gains one 0/1 "observed" channel per input channel (appended after
the values, so `x` has `2 * len(inputs)` channels), and batches are `(x, y, sample_weight)` where
`sample_weight` `(batch, horizon)` is 1 where every target is observed at that step, else 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipelines.windows.views import split_selection, take_rows, window_view

GAP_POLICIES: tuple[str, ...] = ("skip", "mask")
_STILL_CHUNK = 1024  # windows checked at a time by moving_starts (bounds RAM)


class NoWindowsError(ValueError):
    """No window fits: records shorter than one window, or every window touches a gap."""


@dataclass(frozen=True)
class WindowSpec:
    """How signals are cut: lengths in samples, channels by name, what to do with gaps."""

    input_steps: int
    horizon: int
    stride: int = 1
    inputs: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    gap_policy: Literal["skip", "mask"] = "skip"
    max_still_fraction: float = 1.0  # 1.0 keeps every window

    def __post_init__(self) -> None:
        for key in ("input_steps", "horizon", "stride"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{key} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
            object.__setattr__(self, key, int(value))  # frozen: normalise np.int64 once, here
        for key in ("inputs", "targets"):
            names = getattr(self, key)
            if isinstance(names, str) or not names:
                raise ValueError(f"{key} must be a non-empty tuple of channel names, got {names!r}")
            if len(set(names)) != len(names):
                raise ValueError(f"{key} must not repeat a channel, got {tuple(names)}")
            object.__setattr__(self, key, tuple(names))
        if self.gap_policy not in GAP_POLICIES:
            raise ValueError(f"gap_policy must be one of {GAP_POLICIES}, got {self.gap_policy!r}")
        still = self.max_still_fraction
        if isinstance(still, bool) or not isinstance(still, int | float) or not 0 < still <= 1:
            raise ValueError(f"max_still_fraction must be a number in (0, 1], got {still!r}")
        object.__setattr__(self, "max_still_fraction", float(still))

    @property
    def span(self) -> int:
        """Samples one window covers: `input_steps + horizon`."""
        return self.input_steps + self.horizon

    @property
    def n_features(self) -> int:
        """Channels of `x`: the inputs, plus one observed-mask channel each under "mask"."""
        return len(self.inputs) * (2 if self.gap_policy == "mask" else 1)


def window_starts(n_samples: int, spec: WindowSpec, valid: np.ndarray | None = None) -> np.ndarray:
    """Start indices of every (input, target) window that fits in a signal.

    A window covers `spec.input_steps + spec.horizon` samples; the target begins right after the
    input. Starts are `stride` apart. With `valid` (bool per sample), windows touching an invalid
    sample are dropped, so gaps never reach the loss.
    """
    span = spec.input_steps + spec.horizon
    if n_samples < span:
        return np.empty(0, dtype=np.int64)
    starts = np.arange(0, n_samples - span + 1, spec.stride, dtype=np.int64)
    if valid is None:
        return starts
    # A window is clean when the count of invalid samples inside it is zero: one cumulative sum,
    # no Python loop over windows.
    bad = np.concatenate([[0], np.cumsum(~valid)])
    return starts[bad[starts + span] - bad[starts] == 0]


def clean_starts(
    starts: np.ndarray, spec: WindowSpec, input_valid: np.ndarray, target_valid: np.ndarray
) -> np.ndarray:
    """The `starts` whose input rows are all `input_valid` and target rows all `target_valid`.

    Two bool masks per sample (from the input channels and from the target channels) because a
    gap in a target-only channel during the input part of a window does not touch the window.
    """
    keep = _run_is_clean(input_valid, starts, spec.input_steps)
    keep &= _run_is_clean(target_valid, starts + spec.input_steps, spec.horizon)
    return starts[keep]


def _run_is_clean(valid: np.ndarray, firsts: np.ndarray, length: int) -> np.ndarray:
    bad = np.concatenate([[0], np.cumsum(~valid, dtype=np.int64)])
    return bad[firsts + length] - bad[firsts] == 0


def moving_starts(signal: np.ndarray, starts: np.ndarray, spec: WindowSpec,
                  target_cols: Sequence[int]) -> np.ndarray:
    """The `starts` whose target channels are not still on more than `spec.max_still_fraction`
    of their steps over the window's span (`quality.window_still_fraction`)."""
    from pipelines.ingest.quality import window_still_fraction

    if spec.max_still_fraction >= 1.0 or not len(starts):
        return starts
    keep = np.empty(len(starts), dtype=bool)
    view_cols, pick = split_selection(list(target_cols))
    view = window_view(signal, 0, spec.span, view_cols)  # (n, span, targets), no copy
    for a in range(0, len(starts), _STILL_CHUNK):
        chunk = starts[a : a + _STILL_CHUNK]
        spans = take_rows(view, chunk, pick)  # (chunk, span, targets): the one copy
        keep[a : a + len(chunk)] = window_still_fraction(spans) <= spec.max_still_fraction
    return starts[keep]

