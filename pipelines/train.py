"""The batch training pipeline: recipe → dataset → windows → fit → evaluate → publish a version.

`train(recipe, ...)` reads as the list of steps. The run folder (`runs/<model_name>/` by default)
holds what a run leaves behind: `checkpoints/last.keras` (every epoch, for `--resume`),
`checkpoints/best.keras`, `state.json` (epochs done), `history.csv`, `tensorboard/` (TensorFlow
backend) and `evaluation/` (JSON, markdown, PNGs). The published version is written by
`models.store.publish` (stage, then rename) and only after the SavedModel, loaded in a fresh
process, reproduced the Keras model's numbers.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.atomic import atomic_write
from pipelines.config import Recipe, TrainConfig
from pipelines.dataset import Dataset, load_dataset
from pipelines.evaluate import (
    evaluate_forecaster,
    fit_baselines,
    ridge_to_metadata,
    write_evaluation,
)
from pipelines.windows import WindowBatcher, WindowSpec, epoch_dataset

log = logging.getLogger(__name__)

NORM_SAMPLE_WINDOWS = 4096  # windows used to fit the in-graph normalization
KERAS_RELPATH = Path("assets.extra") / "model.keras"  # in each version: the model, for retrain


class TrainingError(ValueError):
    """Training stopped before it could produce a trustworthy model; the message says why."""


@dataclass(frozen=True)
class TrainResult:
    model_name: str
    version: int | None  # None when nothing was published
    version_dir: Path | None
    run_dir: Path
    evaluation: dict
    epochs_run: int
    device: str


def ensure_dataset(recipe: Recipe, raw: Path | None = None) -> Dataset:
    """Open the recipe's dataset, ingesting it first (from `raw` or `[data].raw`) when missing."""
    root = Path(recipe.data.dataset)
    if not (root / "manifest.parquet").exists():
        from pipelines.ingest import IngestConfig, ingest

        source = Path(raw or recipe.data.raw)
        log.info("dataset %s is missing: ingesting %s", root, source)
        report = ingest(IngestConfig(raw_dir=source, dataset_dir=root,
                                     channels=recipe.data.channels, fs=recipe.data.fs,
                                     numerics=recipe.data.numerics,
                                     fill_gap_s=recipe.data.fill_gap_s))
        if not report.written:
            raise TrainingError(f"ingest of {source} wrote no dataset: nothing was ingested")
    return load_dataset(root)


def window_spec(recipe: Recipe) -> WindowSpec:
    return WindowSpec(**asdict(recipe.window))


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
    return train, val


def fit_normalization(batcher: WindowBatcher, seed: int):
    """In-graph normalization statistics from a sample of training windows (physical units)."""
    from models.normalization import fit_norm_stats

    rng = np.random.default_rng(seed)
    n = batcher.n_windows
    pick = np.sort(rng.choice(n, size=min(n, NORM_SAMPLE_WINDOWS), replace=False))
    x, y = batcher.gather(batcher.index.windows[pick])[:2]
    return fit_norm_stats(x, y)


def _keyed(batcher: WindowBatcher, output_names: list[str], steps: int | None = None, **kwargs):
    """A PyDataset giving `(x, {output: y})`, as a model with named outputs wants its targets;
    `steps` batches an epoch (`windows.epoch_dataset`: `max_windows_per_epoch` walks the order)."""

    def keyed(j: int) -> tuple:
        x, y, *rest = batcher[j]
        return (x, {name: y for name in output_names}, *rest)

    return epoch_dataset(batcher, keyed, steps, **kwargs)


def compile_model(model, spec, cfg: TrainConfig, steps_per_epoch: int) -> None:
    """Loss, optimizer, learning-rate schedule and clipping from the recipe."""
    import keras

    from models.losses import PinballLoss

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
    losses: dict[str, Any] = {"forecast": point}
    if spec.probabilistic:
        losses["quantiles"] = PinballLoss(spec.quantiles)
    # jit_compile "auto" (default): Keras jits on JAX and leaves TF CPU / TF cuDNN LSTMs unjitted;
    # a hard False made JAX run op by op (docs/performance.md).
    model.compile(optimizer=optimizer, loss=losses, jit_compile=cfg.jit_compile,
                  steps_per_execution=cfg.steps_per_execution)


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


def _forecaster(model):
    def forecast(x: np.ndarray) -> dict[str, np.ndarray]:
        out = model.predict_on_batch(x)
        return {k: np.asarray(v) for k, v in out.items()}

    return forecast


def publish_version(
    model, recipe: Recipe, dataset: Dataset, model_store: Path, evaluation: dict,
    warmup: np.ndarray, param_rows: list[dict], extra: dict | None = None, ridge=None,
) -> tuple[int, Path]:
    """Export, verify in a fresh process, and publish atomically as the next version.

    `extra` is merged into the metadata last (a retrain's `parent_version` and comparison). The
    Keras model is saved beside the SavedModel as `assets.extra/model.keras` (TF Serving ignores
    it), so any version can be warm-started by `pulsecast retrain`. `ridge` (the ridge_ar baseline
    fitted on this training data) is stored as `ridge_ar`, so `pulsecast evaluate` on other
    records compares with a baseline that never saw them.
    """
    from models import store
    from models.export import export_in_subprocess, export_savedmodel, verify_savedmodel

    base = store.model_base_path(model_store, recipe.name)
    units = dict(zip(dataset.channels, dataset.units, strict=True))
    metadata = {
        "model_name": recipe.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "channels": list(recipe.window.inputs),
        "targets": list(recipe.window.targets),
        "units": [units.get(c, "") for c in recipe.window.inputs],
        "target_units": [units.get(c, "") for c in recipe.window.targets],
        "fs": dataset.fs,
        "input_steps": recipe.window.input_steps,
        "horizon": recipe.window.horizon,
        "quantiles": list(recipe.model.get("quantiles", [])),
        "dataset": str(dataset.root),
        "dataset_sha256": dataset_fingerprint(dataset),
        "metrics": evaluation,
        "parent_version": None,
        "params": param_rows,
        "config": recipe.to_dict(),
        "ridge_ar": ridge_to_metadata(ridge),
        **(extra or {}),
    }
    expected = _forecaster(model)(warmup)

    def build(staging: Path) -> None:
        if describe_device().startswith("CPU"):
            export_savedmodel(model, staging, metadata, warmup)
        else:  # a graph traced where a GPU is visible carries cuDNN-only ops
            export_in_subprocess(model, staging, metadata, warmup)
        diffs = verify_savedmodel(staging, warmup, expected)
        log.info("SavedModel reproduces the Keras model in a fresh process (max |diff| %s)", diffs)
        model.save(staging / KERAS_RELPATH)  # warm-start source for `pulsecast retrain`

    return store.publish(base, build)


def dataset_fingerprint(dataset: Dataset) -> str:
    """sha256 over the records' own hashes and splits: names the exact data a model saw."""
    import hashlib

    rows = dataset.manifest[["record_id", "sha256", "split"]].astype(str).to_numpy()
    return hashlib.sha256("\n".join("|".join(r) for r in rows).encode()).hexdigest()


def _resume_state(run_dir: Path) -> tuple[Any, int]:
    import keras

    import models.architectures  # noqa: F401  (registers custom layers for loading)

    last = run_dir / "checkpoints" / "last.keras"
    state = run_dir / "state.json"
    if not last.exists() or not state.exists():
        raise TrainingError(f"--resume: no checkpoint to resume from in {run_dir}")
    done = int(json.loads(state.read_text())["epochs_done"])
    log.info("resuming from %s after epoch %d", last, done)
    return keras.saving.load_model(last), done


def train(recipe: Recipe, *, model_store: Path = Path("data/model_store"), raw: Path | None = None,
          run_dir: Path | None = None, resume: bool = False, publish: bool = True,
          strategy: str = "default") -> TrainResult:
    """Run the whole pipeline for one recipe; returns what was published (if anything).

    `strategy` (`pipelines.distribute`): `default`, `mirrored` (this host's GPUs) or
    `multiworker` (hosts in `TF_CONFIG`; only the chief publishes, other workers keep their run
    folder under `<run_dir>/worker-<i>`).
    """
    import keras

    from models.architectures import build_model
    from models.params import check, rows_to_dicts
    from models.spec import model_spec_from_config
    from pipelines import distribute

    if recipe.window.gap_policy == "mask":
        # the windows would carry observed-flag channels the served model (raw `signal` in
        # physical units) cannot be given: refuse before any work, saying what works instead
        raise TrainingError(
            "[window] gap_policy = 'mask' is not supported by model training (the model takes "
            "the signal channels only); use 'skip' with [data] fill_gap_s to interpolate short "
            "gaps at ingest")
    if recipe.train.tbptt_steps:
        from pipelines.tbptt import check_recipe

        check_recipe(recipe, resume)  # refuses archs with no stateful twin, before any work
    if strategy != "default" and recipe.train.tbptt_steps:
        raise TrainingError(f"[train] tbptt_steps = {recipe.train.tbptt_steps} trains a stateful "
                            f"twin without tf.distribute: use strategy 'default', got {strategy!r}")
    dist = distribute.make_strategy(strategy)  # first: collectives are set up before any TF op
    run_dir = Path(run_dir or Path("runs") / recipe.name)
    if not distribute.is_chief(dist):
        run_dir, publish = run_dir / distribute.worker_name(), False
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(recipe.train.seed)
    keras.config.set_dtype_policy(recipe.train.precision)
    device = describe_device()
    log.info("training %s on %s", recipe.name, device)

    dataset = ensure_dataset(recipe, raw)
    spec = window_spec(recipe)
    mspec = model_spec_from_config(recipe.to_dict())
    train_b, val_b = make_batchers(dataset, spec, recipe.train)
    test_patients = dataset.patients("test")
    if not test_patients:
        raise TrainingError(f"dataset {dataset.root} has no test patients: nothing to evaluate on")
    log.info("%d training windows, %d validation windows, %d test patients",
             train_b.n_windows, val_b.n_windows if val_b else 0, len(test_patients))

    norm = None if resume else fit_normalization(train_b, recipe.train.seed)
    with distribute.strategy_scope(dist):  # model and optimizer variables live on its devices
        if resume:
            model, initial_epoch = _resume_state(run_dir)
        else:
            model, initial_epoch = build_model(mspec, norm), 0
        rows = check(model)  # refuses a model whose parameter counts disagree with the formulas
        steps = len(train_b)
        if recipe.train.max_windows_per_epoch:
            steps = min(steps,
                        math.ceil(recipe.train.max_windows_per_epoch / recipe.train.batch_size))
        if not resume:
            compile_model(model, mspec, recipe.train, steps)
    names = list(model.output_names) if hasattr(model, "output_names") else ["forecast"]
    train_ds = _keyed(train_b, names, steps)
    val_ds = _keyed(val_b, names) if val_b else None
    if recipe.train.tbptt_steps:  # a stateful twin over chunks; its weights come back to `model`
        from pipelines.tbptt import fit_tbptt

        history = fit_tbptt(model, mspec, dataset, spec, recipe.train, val_b, run_dir)
    else:
        history = fit_model(model, train_ds, val_ds, recipe.train, run_dir, initial_epoch)
    model = distribute.local_model(model, dist)  # evaluate and export a strategy-free copy

    ridge = fit_baselines(dataset, spec, recipe.evaluate)
    result, examples = evaluate_forecaster(
        _forecaster(model), dataset, spec, recipe.evaluate, split="test",
        quantiles=mspec.quantiles, seed=recipe.train.seed, ridge=ridge)
    evaluation = result.to_dict()
    write_evaluation(result, examples, run_dir / "evaluation")
    log.info("test MAE %.4g; best baseline %s MAE %.4g; skill %.3f",
             evaluation["model"]["mae"], evaluation["best_baseline"],
             evaluation["baselines"][evaluation["best_baseline"]]["mae"],
             evaluation["skill_mae_vs_best_baseline"])
    version, version_dir = None, None
    if publish:
        warmup = examples.x[: min(4, len(examples.x))].astype(np.float32)
        version, version_dir = publish_version(model, recipe, dataset, model_store, evaluation,
                                               warmup, rows_to_dicts(rows), ridge=ridge)
    return TrainResult(recipe.name, version, version_dir, run_dir, evaluation,
                       initial_epoch + len(history), device)
