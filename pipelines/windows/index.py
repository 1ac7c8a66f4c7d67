"""`WindowIndex`: every usable window of a set of records, found by reading their signals.

`windows[k] = (record position, start)`, an `(n_windows, 2)` int64 array sorted by record and
start; gaps (by the spec's gap policy) and still windows (`max_still_fraction`) are left out here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipelines.windows.spec import (
    NoWindowsError,
    WindowSpec,
    clean_starts,
    moving_starts,
    window_starts,
)

if TYPE_CHECKING:
    from pipelines.dataset.contract import Dataset

_NAN_SCAN_ROWS = 1 << 20  # rows read at a time when scanning a signal for gaps (bounds RAM)


def _observed(signal: np.ndarray, cols: Sequence[int]) -> np.ndarray:
    """Bool per row: no NaN in `cols`. Reads the memmap in chunks so RAM stays bounded."""
    out = np.empty(len(signal), dtype=bool)
    for a in range(0, len(signal), _NAN_SCAN_ROWS):
        chunk = signal[a : a + _NAN_SCAN_ROWS][:, list(cols)]
        out[a : a + len(chunk)] = ~np.isnan(chunk).any(axis=1)
    return out


@dataclass(frozen=True, eq=False)
class WindowIndex:
    """Every usable window of some records: `windows[k] = (record position, start)`, sorted."""

    spec: WindowSpec
    record_ids: tuple[str, ...]
    windows: np.ndarray  # (n_windows, 2) int64
    n_still: int = 0  # windows left out as still (spec.max_still_fraction)

    def __len__(self) -> int:
        return len(self.windows)

    @classmethod
    def from_signals(
        cls,
        signals: Sequence[np.ndarray],
        spec: WindowSpec,
        input_cols: Sequence[int],
        target_cols: Sequence[int],
        record_ids: Sequence[str] | None = None,
    ) -> WindowIndex:
        """Index windows of `(time, channels)` signals; columns say where inputs and targets are."""
        ids = tuple(record_ids) if record_ids is not None else tuple(map(str, range(len(signals))))
        parts = []
        n_still = 0
        for pos, signal in enumerate(signals):
            starts = window_starts(len(signal), spec)
            if spec.gap_policy == "skip" and len(starts):
                starts = clean_starts(
                    starts, spec, _observed(signal, input_cols), _observed(signal, target_cols)
                )
            moving = moving_starts(signal, starts, spec, target_cols)
            n_still += len(starts) - len(moving)
            parts.append(np.column_stack([np.full(len(moving), pos, dtype=np.int64), moving]))
        windows = np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.int64)
        return cls(spec=spec, record_ids=ids, windows=windows, n_still=n_still)

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        spec: WindowSpec,
        split: str = "train",
        record_ids: Sequence[str] | None = None,
    ) -> WindowIndex:
        """Index the windows of one split (or of explicit `record_ids`); raise if there are none."""
        ids = tuple(record_ids) if record_ids is not None else tuple(dataset.records(split))
        signals = [_checked_signal(dataset, r) for r in ids]
        index = cls.from_signals(
            signals,
            spec,
            dataset.channel_index(spec.inputs),
            dataset.channel_index(spec.targets),
            ids,
        )
        if len(index) == 0:
            where = f"split {split!r}" if record_ids is None else "the given record ids"
            longest = max((len(s) for s in signals), default=0)
            still = (f", or holds still on more than max_still_fraction="
                     f"{spec.max_still_fraction:g} of its steps ({index.n_still} windows)"
                     if index.n_still else "")
            raise NoWindowsError(
                f"no windows in {where} ({len(ids)} records, longest {longest} samples) for "
                f"{spec}: every record is shorter than {spec.span} samples or every window "
                f"touches a gap{still}"
            )
        return index


def _checked_signal(dataset: Dataset, record_id: str) -> np.ndarray:
    signal = dataset.signal(record_id)
    if signal.ndim != 2 or signal.shape[1] != len(dataset.channels) or signal.dtype != np.float32:
        raise ValueError(
            f"signal of record {record_id!r} must be float32 (time, {len(dataset.channels)}), "
            f"got {signal.dtype} {signal.shape}"
        )
    return signal

