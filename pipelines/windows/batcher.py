"""`WindowBatcher`: batches of windows, per-epoch shuffling and the one-copy gather; numpy only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.windows.index import WindowIndex
from pipelines.windows.spec import WindowSpec
from pipelines.windows.views import split_selection, take_rows, window_view

if TYPE_CHECKING:
    from pipelines.dataset.contract import Dataset


class WindowBatcher:
    """Batches of windows over a `WindowIndex`: numpy only, for any training loop.

    Epoch `k`'s order is `default_rng([seed, k]).permutation(n_windows)` (or index order when not
    shuffling), so it depends only on `seed` and `k`. Inside a batch, windows are sorted by
    (record, start): the mean loss does not care, and each record's rows are gathered in one
    sequential read. `batch_windows(i)` says which windows batch `i` holds, in `x`'s row order.

    `on_epoch_end` moves to the next epoch. Keras calls it once before the first epoch too
    (`EpochIterator.reset`), so under `fit` the first trained epoch is k = 1: still a function of
    seed and k only. The order changes there, not in `on_epoch_begin`, because Keras starts its
    worker pool before calling `on_epoch_begin` (forked workers would keep the old order).
    """

    def __init__(
        self,
        dataset: Dataset,
        spec: WindowSpec,
        split: str = "train",
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
        record_ids: Sequence[str] | None = None,
        drop_remainder: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.dataset = dataset
        self.spec = spec
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder
        self.index = WindowIndex.from_dataset(dataset, spec, split, record_ids)
        # Evenly spaced channels are selected inside the view; others while gathering a batch.
        # `*_view_cols` go to `window_view`, `*_pick` to `take_rows`: exactly one is None.
        self._input_view_cols, self._input_pick = split_selection(
            dataset.channel_index(spec.inputs)
        )
        self._target_view_cols, self._target_pick = split_selection(
            dataset.channel_index(spec.targets)
        )
        self.epoch = 0
        self._order = self.epoch_order(0)
        self._views: list[tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def n_windows(self) -> int:
        return len(self.index)

    @property
    def record_ids(self) -> tuple[str, ...]:
        return self.index.record_ids

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Window positions in the order epoch `epoch` visits them: a function of seed and epoch."""
        if not self.shuffle:
            return np.arange(self.n_windows, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order = self.epoch_order(epoch)

    def __len__(self) -> int:
        if self.drop_remainder:
            return self.n_windows // self.batch_size
        return -(-self.n_windows // self.batch_size)

    def batch_windows(self, i: int) -> np.ndarray:
        """`(batch, 2)` rows `(record position, start)` of batch `i`, in the order of `x`."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"batch index must be in [{-n}, {n}), got {i}")
        i %= n
        picked = np.sort(self._order[i * self.batch_size : (i + 1) * self.batch_size])
        return self.index.windows[picked]

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        return self.gather(self.batch_windows(i))

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def materialize(self) -> tuple[np.ndarray, ...]:
        """Every window at once, in index order: `(x, y)` (plus `sample_weight` under "mask")."""
        return self.gather(self.index.windows)

    def gather(self, windows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Copy `(record position, start)` rows (sorted by record) out of the views.

        Returns x `(batch, input_steps, n_features)` and y `(batch, horizon, len(targets))`,
        float32 in physical units, plus `sample_weight` `(batch, horizon)` under "mask". Each
        record's rows are one fancy-indexing copy out of its memmap; a batch that spans records
        is then joined (a second copy, of the batch only).
        """
        spec, views = self.spec, self._open_views()
        records, starts = windows[:, 0], np.ascontiguousarray(windows[:, 1])
        bounds = [0, *(np.flatnonzero(records[1:] != records[:-1]) + 1).tolist(), len(windows)]
        xs, ys = [], []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if a < b:
                xv, yv = views[records[a]]
                xs.append(take_rows(xv, starts[a:b], self._input_pick))
                ys.append(take_rows(yv, starts[a:b], self._target_pick))
        x = _joined(xs, (0, spec.input_steps, len(spec.inputs)))
        y = _joined(ys, (0, spec.horizon, len(spec.targets)))
        if spec.gap_policy == "skip":
            return x, y
        x_missing, y_missing = np.isnan(x), np.isnan(y)
        x[x_missing] = 0.0
        y[y_missing] = 0.0
        x = np.concatenate([x, (~x_missing).astype(np.float32)], axis=-1)
        return x, y, (~y_missing.any(axis=-1)).astype(np.float32)

    def _open_views(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._views is None:
            spec = self.spec
            views = []
            for record_id in self.record_ids:
                signal = self.dataset.signal(record_id)
                if len(signal) < spec.span:  # no windows here: nothing to view
                    views.append((signal[:0], signal[:0]))
                    continue
                xv = window_view(signal, 0, spec.input_steps, self._input_view_cols)
                yv = window_view(signal, spec.input_steps, spec.horizon, self._target_view_cols)
                views.append((xv, yv))
            self._views = views
        return self._views

    def __getstate__(self) -> dict[str, Any]:
        # Memmaps would pickle as full copies: a worker process reopens the files instead.
        state = self.__dict__.copy()
        state["_views"] = None
        return state


def _joined(parts: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    if not parts:
        return np.empty(empty_shape, dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)

