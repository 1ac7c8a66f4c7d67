"""Device-side windows: the signals live on the accelerator, a batch is gathered inside the step.

`WindowBatcher` cuts every batch on the host (numpy fancy indexing), and Keras then copies it to
the device: one Python `__getitem__`, one host->device copy of `batch * (input_steps + horizon)`
floats and one step dispatch per batch. On a GPU that host work, not the cuDNN LSTM, bounded
pulsecast's training speed (docs/performance.md, issue 7).

`DeviceWindows` removes it. It concatenates the training records' signals (input channels and
target channels, float32) once and keeps them as non-trainable Keras variables, so they are put
on the device once. A batch is then only its window starts: `batch` int32 positions into the
concatenation, taken from the `WindowBatcher`'s own order, so the windows of every batch are
exactly the batcher's. Inside the compiled train step the wrapper model gathers
`x = inputs[start + arange(input_steps)]` and `y = targets[start + input_steps + arange(horizon)]`
with `keras.ops.take` (backend-neutral: JAX, torch, TensorFlow) and trains the unchanged
forecaster on them. With `steps_per_execution > 1`, several such steps run per dispatch.

Use:

    dw = DeviceWindows(batcher)                  # the train batcher of pipelines.training.train
    trainer = dw.training_model(model)           # wraps `model`; shares its weights
    compile_model(trainer, mspec, cfg, len(dw))  # same loss/optimizer as the host path
    trainer.fit(dw.dataset(), epochs=..., shuffle=False)
    # `model` now holds the trained weights; save/export `model`, not `trainer`.

Limits: gap_policy "skip" only (the "mask" policy's NaN->0 and observed channels are not ported);
every training sample must fit in device memory once (4 bytes per sample and channel), and the
concatenation must have fewer than 2**31 rows (int32 positions: JAX has no int64 by default).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.windows.batcher import WindowBatcher
from pipelines.windows.keras_data import epoch_dataset


class DeviceWindows:
    """A `WindowBatcher`'s signals as one array per side plus int32 window starts per batch."""

    def __init__(self, batcher: WindowBatcher) -> None:
        spec = batcher.spec
        if spec.gap_policy != "skip":
            raise ValueError(
                "DeviceWindows supports gap_policy 'skip' only, got "
                f"{spec.gap_policy!r}: train with the host WindowBatcher path instead"
            )
        self.batcher = batcher
        self.spec = spec
        dataset = batcher.dataset
        in_cols = dataset.channel_index(spec.inputs)
        tg_cols = dataset.channel_index(spec.targets)
        signals = [dataset.signal(r) for r in batcher.record_ids]
        lengths = np.array([len(s) for s in signals], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        total = int(lengths.sum())
        if total >= 2**31:
            raise ValueError(f"DeviceWindows needs < 2**31 samples in the split, got {total}")

        def side(cols: list[int]) -> np.ndarray:
            return np.ascontiguousarray(
                np.concatenate([np.asarray(s)[:, list(cols)] for s in signals]), dtype=np.float32
            )

        self.inputs = side(in_cols)  # (total samples, len(inputs))
        self.targets = self.inputs if list(tg_cols) == list(in_cols) else side(tg_cols)

    def __len__(self) -> int:
        return len(self.batcher)

    def flat_starts(self, windows: np.ndarray) -> np.ndarray:
        """`(record position, start)` rows -> int32 positions of the window starts."""
        return (self.offsets[windows[:, 0]] + windows[:, 1]).astype(np.int32)

    def batch_starts(self, i: int) -> np.ndarray:
        """Batch `i` of the batcher's current order as int32 start positions, in `x`'s order."""
        return self.flat_starts(self.batcher.batch_windows(i))

    def gather_numpy(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The host reference of the in-step gather (tests, debugging)."""
        t_in = starts[:, None] + np.arange(self.spec.input_steps)
        t_out = starts[:, None] + self.spec.input_steps + np.arange(self.spec.horizon)
        return self.inputs[t_in], self.targets[t_out]

    def dataset(self, steps: int | None = None, **kwargs: Any):
        """A PyDataset of `(starts,)` int32 batches: the batcher's order, `_keyed`'s epochs.

        With `steps` below the batcher's length, each epoch is the next `steps` batches of the
        shuffled order, wrapping into the next shuffle (as `pipelines.training.fit._keyed`).
        """
        return epoch_dataset(self.batcher, lambda j: (self.batch_starts(j),), steps, **kwargs)

    def training_model(self, model):
        """A Keras model taking int32 starts, gathering windows in-step, calling `model`.

        It shares `model`'s variables (training it trains `model`) and has two extra
        non-trainable variables, the signals. Its loss targets are the gathered `y` under each of
        `model`'s output names, as `_keyed` gives them, so `compile_model` works unchanged.
        """
        import keras

        names = list(model.output.keys()) if isinstance(model.output, dict) else None
        inputs, targets = self.inputs, self.targets
        in_steps, horizon = self.spec.input_steps, self.spec.horizon

        def const(arr: np.ndarray):
            return lambda shape, dtype=None: keras.ops.convert_to_tensor(arr, dtype="float32")

        class WindowGather(keras.layers.Layer):
            def __init__(self) -> None:
                super().__init__(name="device_windows", dtype="float32")
                self.inputs_signal = self.add_weight(
                    shape=inputs.shape, initializer=const(inputs), trainable=False,
                    dtype="float32", name="inputs_signal")
                self.targets_signal = self.inputs_signal if targets is inputs else self.add_weight(
                    shape=targets.shape, initializer=const(targets), trainable=False,
                    dtype="float32", name="targets_signal")
                self.built = True

            def call(self, starts):
                rows = keras.ops.expand_dims(starts, -1) + keras.ops.arange(in_steps, dtype="int32")
                return keras.ops.take(self.inputs_signal, rows, axis=0)

            def target(self, starts):
                rows = (keras.ops.expand_dims(starts, -1) + in_steps
                        + keras.ops.arange(horizon, dtype="int32"))
                return keras.ops.take(self.targets_signal, rows, axis=0)

        class DeviceWindowModel(keras.Model):
            def __init__(self) -> None:
                super().__init__(name="device_window_trainer")
                self.forecaster = model
                self.windows = WindowGather()

            def call(self, starts, training=False):
                starts = keras.ops.cast(starts, "int32")
                return self.forecaster(self.windows(starts), training=training)

            def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                             training=True):
                y = self.windows.target(keras.ops.cast(x, "int32"))
                y = {n: y for n in names} if names is not None else y
                return super().compute_loss(x, y, y_pred, sample_weight, training=training)

        trainer = DeviceWindowModel()
        trainer(np.zeros((1,), dtype=np.int32))  # build
        return trainer
