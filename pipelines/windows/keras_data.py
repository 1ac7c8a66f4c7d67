"""Keras adapters: windows as a `keras.utils.PyDataset`, for `model.fit` on every backend.

`WindowDataset` is a `WindowBatcher` that is a `PyDataset`; `epoch_dataset` wraps any per-batch
function of a batcher (e.g. `(x, {output: y})` for a model with named outputs) with capped epochs.
Keras is imported only when `WindowDataset` is first looked up (module `__getattr__`) or
`epoch_dataset` is called, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pipelines.windows.batcher import WindowBatcher
from pipelines.windows.spec import WindowSpec

if TYPE_CHECKING:
    from pipelines.dataset.contract import Dataset


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
