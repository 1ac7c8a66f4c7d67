"""Windows: sliding (input, target) windows cut on the fly from a dataset's memory-mapped signals.

Owns the window vocabulary (`input_steps`, `horizon`, `stride`, `inputs`, `targets`, gap policy)
and every way a window reaches a model. Writes nothing: a window is a row of a strided view over
the dataset contract's `signals/<record_id>.npy` (`pipelines.dataset.contract`), so stride 1 costs
the same memory as stride 100 apart from the index (16 bytes a window); a batch is the one copy,
gathered with fancy indexing.

Layers, pure core first:

- `spec`: `WindowSpec`, `window_starts`, `clean_starts`, `moving_starts`: window math on numpy.
- `views`: zero-copy `(n, steps, channels)` views of a signal and the one-copy row gather.
- `index`: `WindowIndex`, every usable window of a set of records, an `(n_windows, 2)` int64 array
  of `(record position, start)`; `WindowIndex.from_dataset` reads the signals to find gaps.
- `batcher`: `WindowBatcher`: batches, per-epoch shuffling and gathering; numpy only, picklable
  (memmaps are reopened in a worker process), usable in any training loop.
- `keras_data`: `WindowDataset` (the batcher as a `keras.utils.PyDataset`, so `model.fit` works on
  every Keras backend with no tf.data) and `epoch_dataset`. Keras is imported only on first use.
- `device`: `DeviceWindows`: the signals on the accelerator, windows gathered inside the step.

Nothing here imports Keras at import time.
"""
