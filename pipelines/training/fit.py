"""The compile/fit plumbing shared by window training (`train`) and TBPTT (`tbptt`).

Loss, optimizer, learning-rate schedule and clipping come from the recipe (`compile_model`); the
window batchers, the in-graph normalization statistics and the `(x, {output: y})` PyDataset are
made here; `fit_model` fits with early stopping and per-epoch checkpoints. Writes into the run
folder: `checkpoints/last.keras` (every epoch) and `checkpoints/best.keras` (each renamed into
place whole, so `--resume` can always read them), `state.json` (epochs done), `history.csv` and
`tensorboard/` (TensorFlow backend).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.atomic import atomic_write
from pipelines.config import TrainConfig
from pipelines.dataset.contract import Dataset
from pipelines.windows.batcher import WindowBatcher
from pipelines.windows.keras_data import epoch_dataset
from pipelines.windows.spec import WindowSpec

log = logging.getLogger(__name__)

NORM_SAMPLE_WINDOWS = 4096  # windows used to fit the in-graph normalization


class TrainingError(ValueError):
    """Training stopped before it could produce a trustworthy model; the message says why."""


def describe_device() -> str:
    """The accelerator Keras trains on, in words, for the log (e.g. 'GPU:0 (tensorflow)')."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return f"{gpus[0].name} (tensorflow)" if gpus else "CPU (tensorflow, no GPU visible)"
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        return f"{dev.platform.upper()}:{dev.id} {getattr(dev, 'device_kind', '')} (jax)".strip()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda:0 {torch.cuda.get_device_name(0)} (torch)"
        return "CPU (torch)"
    return f"unknown ({backend})"


def make_batchers(dataset: Dataset, spec: WindowSpec, cfg: TrainConfig):
    """Train (shuffled) and val batchers; an empty train split or a tiny one stops here."""
    train = WindowBatcher(dataset, spec, "train", batch_size=cfg.batch_size, seed=cfg.seed)
    if train.index.n_still:
        log.info("%d training windows left out as still (targets still on > %g of their steps)",
                 train.index.n_still, spec.max_still_fraction)
    if train.n_windows < cfg.batch_size:
        raise TrainingError(
            f"too few training windows for one batch: {train.n_windows} windows < batch_size "
            f"{cfg.batch_size} (lower [train] batch_size or [window] stride)"
        )
    try:
        val = WindowBatcher(dataset, spec, "val", batch_size=cfg.batch_size, shuffle=False)
    except ValueError as err:
        log.warning("no validation windows (%s): early stopping watches the training loss", err)
        val = None
    if val is not None and 0 < cfg.max_val_windows < val.n_windows:
        log.info("validating on %d of %d validation windows ([train] max_val_windows)",
                 cfg.max_val_windows, val.n_windows)
        val = capped(val, cfg.max_val_windows)
    return train, val


def capped(batcher: WindowBatcher, max_windows: int) -> WindowBatcher:
    """`batcher` cut to at most `max_windows` of its windows, evenly spaced over its index (sorted
    by record and start, so every record keeps its share; deterministic, the same each epoch)."""
    n = batcher.n_windows
    if n <= max_windows:
        return batcher
    pick = np.unique(np.linspace(0, n - 1, num=max_windows).round().astype(np.int64))
    batcher.index = dataclasses.replace(batcher.index, windows=batcher.index.windows[pick])
    batcher.set_epoch(batcher.epoch)  # the visiting order follows the new window count
    return batcher


def training_sample(batcher: WindowBatcher, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)` of at most `NORM_SAMPLE_WINDOWS` training windows drawn with `seed` (physical
    units): what the in-graph statistics and the event heads' starting base rates are fitted
    on."""
    rng = np.random.default_rng(seed)
    n = batcher.n_windows
    pick = np.sort(rng.choice(n, size=min(n, NORM_SAMPLE_WINDOWS), replace=False))
    x, y = batcher.gather(batcher.index.windows[pick])[:2]
    return x, y


def fit_normalization(batcher: WindowBatcher, seed: int):
    """In-graph normalization statistics from a sample of training windows (physical units)."""
    from models.normalization import fit_norm_stats

    return fit_norm_stats(*training_sample(batcher, seed))


def _keyed(batcher: WindowBatcher, output_names: list[str], steps: int | None = None, **kwargs):
    """A PyDataset giving `(x, {output: y})`, as a model with named outputs wants its targets;
    `steps` batches an epoch (`keras_data.epoch_dataset`: `max_windows_per_epoch` walks the
    order)."""

    def keyed(j: int) -> tuple:
        x, y, *rest = batcher[j]
        return (x, {name: y for name in output_names}, *rest)

    return epoch_dataset(batcher, keyed, steps, **kwargs)


def compile_model(model, spec, cfg: TrainConfig, steps_per_epoch: int) -> None:
    """Loss, optimizer, learning-rate schedule and clipping from the recipe; the losses per
    output are `models.architectures.compile_losses` (each output's y is the target window:
    `_keyed`), weighted 1, events by `[train] event_loss_weight`."""
    import keras

    from models.architectures import compile_losses

    total_steps = max(1, steps_per_epoch * cfg.epochs)
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total_steps, alpha=0.05)
    elif cfg.schedule == "exponential":
        lr = keras.optimizers.schedules.ExponentialDecay(cfg.learning_rate, steps_per_epoch, 0.9)
    else:
        lr = cfg.learning_rate
    opt_cls = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
               "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[cfg.optimizer]
    optimizer = opt_cls(learning_rate=lr, clipnorm=cfg.clipnorm or None)
    point = {"mse": "mse", "mae": "mae", "quantile": "mae",
             "huber": keras.losses.Huber(delta=cfg.huber_delta)}[cfg.loss]
    losses: dict[str, Any] = compile_losses(spec, point)
    # The forecast losses are in physical units; an event's cross-entropy is in nats: its weight
    # says how much a nat of warning is worth in the units of the forecast ([train]
    # event_loss_weight). Every other output weighs 1.
    weights = {name: (cfg.event_loss_weight if name in spec.event_outputs else 1.0)
               for name in losses}
    # jit_compile "auto" (default): Keras jits on JAX and leaves TF CPU / TF cuDNN LSTMs unjitted;
    # a hard False made JAX run op by op (docs/performance.md).
    model.compile(optimizer=optimizer, loss=losses, loss_weights=weights,
                  jit_compile=cfg.jit_compile, steps_per_execution=cfg.steps_per_execution)


class EpochLine:
    """One plain log line per epoch (CI logs), next to Keras' progress bar on a terminal."""

    @staticmethod
    def make(run_dir: Path):
        import keras

        class _EpochLine(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                parts = " ".join(f"{k}={v:.5g}" for k, v in sorted(logs.items())
                                 if isinstance(v, int | float))
                log.info("epoch %d: %s", epoch + 1, parts)
                loss = logs.get("loss")
                if loss is not None and not math.isfinite(loss):
                    self.model.stop_training = True
                state = json.dumps({"epochs_done": epoch + 1})
                atomic_write(run_dir / "state.json", lambda p: p.write_text(state))

        return _EpochLine()


def checkpoints_callback(ckpt: Path, monitor: str):
    """`last.keras` every epoch and `best.keras` when `monitor` improves, each written beside
    and renamed over the old one: a kill during a save leaves the previous checkpoint whole, so
    `--resume` can always read it (Keras' ModelCheckpoint writes in place)."""
    import keras

    class _Checkpoints(keras.callbacks.Callback):
        best = math.inf

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            atomic_write(ckpt / "last.keras", self.model.save)
            value = (logs or {}).get(monitor)
            if value is not None and value < self.best:
                self.best = float(value)
                atomic_write(ckpt / "best.keras", self.model.save)

    return _Checkpoints()


def fit_model(model, train_ds, val_ds, cfg: TrainConfig, run_dir: Path,
              initial_epoch: int) -> list[dict]:
    """Fit with early stopping (best weights restored), per-epoch checkpoints and logs."""
    import keras

    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    monitor = "val_loss" if val_ds is not None else "loss"
    callbacks = [
        checkpoints_callback(ckpt, monitor),  # before EpochLine: state.json follows last.keras
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0),
        EpochLine.make(run_dir),
    ]
    if cfg.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience,
                                                       restore_best_weights=True))
    if keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard")))
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
        callbacks=callbacks, shuffle=False,
        verbose=1 if sys.stderr.isatty() else 0,
    )
    losses = history.history.get("loss", [])
    if any(not math.isfinite(v) for v in losses):
        raise TrainingError(
            f"the training loss became NaN/inf at epoch {initial_epoch + len(losses)} "
            f"(losses {losses}); lower [train] learning_rate or check the data for gaps"
        )
    keys = list(history.history)
    return [{k: float(history.history[k][i]) for k in keys} for i in range(len(losses))]
