"""Sliding (input, target) windows cut on the fly from a dataset's memory-mapped signals.

Nothing is stored: a window is a row of a strided view over `signals/<record_id>.npy`, so stride 1
costs the same memory as stride 100 apart from the index (16 bytes a window). A batch is the one
copy, gathered with fancy indexing.

Layers, pure core first:

- `WindowSpec`, `window_starts`, `clean_starts`: window math on numpy arrays.
- `WindowIndex`: every usable window of a set of records, an `(n_windows, 2)` int64 array of
  `(record position, start)`; `WindowIndex.from_dataset` reads the signals to find gaps.
- `WindowBatcher`: batches, per-epoch shuffling and gathering; numpy only, picklable (memmaps are
  reopened in a worker process), usable in any training loop.
- `WindowDataset`: the same batcher as a `keras.utils.PyDataset`, so `model.fit` works on every
  Keras backend (TensorFlow, JAX, PyTorch) with no tf.data. Keras is imported only when
  `WindowDataset` is first looked up (module `__getattr__`), so importing this module stays cheap.

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

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from pipelines.dataset import Dataset

GAP_POLICIES: tuple[str, ...] = ("skip", "mask")
_NAN_SCAN_ROWS = 1 << 20  # rows read at a time when scanning a signal for gaps (bounds RAM)
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
    from pipelines.quality import window_still_fraction

    if spec.max_still_fraction >= 1.0 or not len(starts):
        return starts
    keep = np.empty(len(starts), dtype=bool)
    view_cols, pick = _split_selection(list(target_cols))
    view = window_view(signal, 0, spec.span, view_cols)  # (n, span, targets), no copy
    for a in range(0, len(starts), _STILL_CHUNK):
        chunk = starts[a : a + _STILL_CHUNK]
        spans = _take_rows(view, chunk, pick)  # (chunk, span, targets): the one copy
        keep[a : a + len(chunk)] = window_still_fraction(spans) <= spec.max_still_fraction
    return starts[keep]


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
        # `*_view_cols` go to `window_view`, `*_pick` to `_take_rows`: exactly one is None.
        self._input_view_cols, self._input_pick = _split_selection(
            dataset.channel_index(spec.inputs)
        )
        self._target_view_cols, self._target_pick = _split_selection(
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
                xs.append(_take_rows(xv, starts[a:b], self._input_pick))
                ys.append(_take_rows(yv, starts[a:b], self._target_pick))
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


def _split_selection(cols: list[int]) -> tuple[list[int] | None, np.ndarray | None]:
    if isinstance(_column_selector(cols), slice):
        return cols, None
    return None, np.asarray(cols, dtype=np.intp)


def _take_rows(view: np.ndarray, starts: np.ndarray, pick: np.ndarray | None) -> np.ndarray:
    """`view[starts]` (channels `pick` only, when given): a fresh C-contiguous array.

    Fancy indexing, not `np.take`: `take` first makes the whole strided source contiguous, which
    would materialize every window of the record.
    """
    if pick is None:
        return view[starts]
    return view[starts[:, None, None], np.arange(view.shape[1])[:, None], pick]


def _joined(parts: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    if not parts:
        return np.empty(empty_shape, dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@functools.cache
def window_dataset_class() -> type:
    """Build `WindowDataset` (a `WindowBatcher` that is a `keras.utils.PyDataset`) on first use."""
    import keras

    class WindowDataset(WindowBatcher, keras.utils.PyDataset):
        """Windows of a dataset split as a `keras.utils.PyDataset`: `model.fit(WindowDataset(...))`.

        `(dataset, spec, split="train", batch_size=256, shuffle=True, seed=0, record_ids=None,
        drop_remainder=False, **kwargs)`; kwargs (`workers`, `use_multiprocessing`,
        `max_queue_size`) go to `PyDataset`. `ds[i]` is `(x, y)` float32 numpy (plus
        `sample_weight` under gap_policy "mask"); Keras calls `on_epoch_end`, which moves to the
        next epoch's order. Pass `fit(..., shuffle=False)` for a fully reproducible run: Keras
        otherwise also shuffles the batch order with Python's `random`.
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
            **kwargs: Any,
        ) -> None:
            WindowBatcher.__init__(
                self, dataset, spec, split, batch_size, shuffle, seed, record_ids, drop_remainder
            )
            keras.utils.PyDataset.__init__(self, **kwargs)

        # The batcher's methods win over PyDataset's stubs; spelled out so the MRO is no puzzle.
        __getitem__ = WindowBatcher.__getitem__
        __len__ = WindowBatcher.__len__
        on_epoch_end = WindowBatcher.on_epoch_end

    # Pickle finds the class by this name through the module `__getattr__` below.
    WindowDataset.__module__ = __name__
    WindowDataset.__qualname__ = "WindowDataset"
    return WindowDataset


def epoch_dataset(
    batcher: WindowBatcher, item: Callable[[int], tuple], steps: int | None = None,
    **kwargs: Any,
) -> Any:
    """A `keras.utils.PyDataset` of `item(j)` for batch `j` of `batcher`, `steps` batches an epoch.

    With `steps` below the batcher's length, each epoch is the next `steps` batches of the
    shuffled order, wrapping into the next shuffle, so a capped epoch sees fresh windows every
    time and Keras never runs out of data mid-epoch. kwargs go to `PyDataset`.
    """
    import keras

    n_batches = len(batcher)
    steps = n_batches if steps is None else max(1, min(steps, n_batches))

    class EpochBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            self.cursor = 0  # batches of the current shuffled order already used

        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int) -> tuple:
            return item((self.cursor + i) % n_batches)

        def on_epoch_end(self) -> None:
            self.cursor += steps
            if self.cursor + steps > n_batches:  # the order is used up: reshuffle
                self.cursor = 0
                batcher.on_epoch_end()

    return EpochBatches()


def __getattr__(name: str) -> Any:
    if name == "WindowDataset":
        return window_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
