"""The batch training pipeline: recipe → dataset → windows → fit → evaluate → publish a version.

`train(recipe, ...)` reads as the list of steps. A dataset that cannot be trained and judged
(a split with no patient or no window) is refused first, naming the counts per split, before any
run folder, model or fit (`check_dataset_splits`). The run folder (`runs/<model_name>/` by default)
holds what a run leaves behind: `checkpoints/last.keras` (every epoch, for `--resume`),
`checkpoints/best.keras`, `state.json` (epochs done), `history.csv`, `tensorboard/` (TensorFlow
backend) and `evaluation/` (JSON, markdown, PNGs). The published version is written by
`models.store.publish` (stage, then rename) and only after the SavedModel, loaded in a fresh
process, reproduced the Keras model's numbers (every output: forecast, quantiles, events).

A recipe with `[model] events` also gets each event's alarm threshold, chosen after the fit on
the training split only (`pipelines.training.event_threshold`) and stored in the version's
`pulsecast.json` under `events`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.layout import KERAS_RELPATH
from models.metadata import VersionMetadata
from models.store import DEFAULT_MODEL_STORE
from pipelines.config import Recipe
from pipelines.dataset.contract import Dataset, load_dataset
from pipelines.dataset.splits import SPLIT_NAMES, SplitError, check_cohort_splits
from pipelines.evaluation.evaluate import (
    evaluate_forecaster,
    fit_baselines,
    ridge_to_metadata,
    write_evaluation,
)
from pipelines.evaluation.event_dataset import recipe_event_evaluation
from pipelines.training.event_threshold import calibrate_events, event_thresholds
from pipelines.training.fit import (
    TrainingError,
    _keyed,
    compile_model,
    describe_device,
    fit_model,
    fit_normalization,
    make_batchers,
    training_sample,
)
from pipelines.windows.spec import WindowSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    model_name: str
    version: int | None  # None when nothing was published
    version_dir: Path | None
    run_dir: Path
    evaluation: dict
    epochs_run: int
    device: str
    events: dict = field(default_factory=dict)  # pulsecast.json's `events` (thresholds)


def ensure_dataset(recipe: Recipe, raw: Path | None = None) -> Dataset:
    """Open the recipe's dataset, ingesting it first (from `raw` or `[data].raw`) when missing."""
    root = Path(recipe.data.dataset)
    if not (root / "manifest.parquet").exists():
        from pipelines.ingest.cohort import ingest
        from pipelines.ingest.config import ingest_config_from_recipe

        source = Path(raw or recipe.data.raw)
        log.info("dataset %s is missing: ingesting %s", root, source)
        report = ingest(ingest_config_from_recipe(recipe.data, raw=source, dataset=root))
        if not report.written:
            raise TrainingError(f"ingest of {source} wrote no dataset: nothing was ingested")
    return load_dataset(root)


def window_spec(recipe: Recipe) -> WindowSpec:
    return WindowSpec(**asdict(recipe.window))


def _count_windows(dataset: Dataset, spec: WindowSpec, split: str) -> int:
    from pipelines.windows.index import WindowIndex
    from pipelines.windows.spec import NoWindowsError

    try:
        return len(WindowIndex.from_dataset(dataset, spec, split))
    except NoWindowsError:
        return 0


def check_dataset_splits(dataset: Dataset, spec: WindowSpec, recipe: Recipe,
                         where: str | None = None):
    """The train and val batchers and the test window count, once every split is known to have a
    patient and a window; otherwise TrainingError naming the counts per split and the fix
    (`pipelines.dataset.splits.check_cohort_splits`), and the dataset as `where` (default
    `dataset <root>`). Reads signals, builds no model."""
    where = where or f"dataset {dataset.root}"
    patients = {s: len(dataset.patients(s)) for s in SPLIT_NAMES}
    try:
        check_cohort_splits(patients, where=where)
        train_b, val_b = make_batchers(dataset, spec, recipe.train)
        windows = {"train": train_b.n_windows, "val": val_b.n_windows if val_b else 0,
                   "test": _count_windows(dataset, spec, "test")}
        check_cohort_splits(patients, windows, where=where)
    except SplitError as err:
        raise TrainingError(str(err)) from None
    return train_b, val_b, windows["test"]


def _forecaster(model):
    def forecast(x: np.ndarray) -> dict[str, np.ndarray]:
        out = model.predict_on_batch(x)
        return {k: np.asarray(v) for k, v in out.items()}

    return forecast


def recipe_event_thresholds(model, recipe: Recipe, dataset: Dataset) -> dict[str, dict]:
    """pulsecast.json's `events` for a recipe with `[model] events` (`{}` without): each
    probability first calibrated in the model on the training T0 cases (`calibration`, when the
    dataset has them), then its alarm threshold chosen on the training split
    (`pipelines.training.event_threshold`)."""
    from models.spec import model_spec_from_config

    events = model_spec_from_config(recipe.to_dict()).events
    if not events:
        return {}
    spec = window_spec(recipe)
    target = list(spec.inputs).index(spec.targets[0])
    calibration = calibrate_events(model, events, dataset, spec,
                                   fill_gap_s=recipe.data.fill_gap_s)
    out = event_thresholds(_forecaster(model), events, dataset, spec, target,
                           fill_gap_s=recipe.data.fill_gap_s)
    return {name: {**entry, **({"calibration": calibration[name]} if name in calibration
                               else {})} for name, entry in out.items()}


def publish_version(
    model, recipe: Recipe, dataset: Dataset, model_store: Path, evaluation: dict,
    warmup: np.ndarray, param_rows: list[dict], extra: Mapping[str, Any] | None = None,
    ridge=None, events: Mapping[str, Any] | None = None,
) -> tuple[int, Path]:
    """Export, verify in a fresh process, and publish atomically as the next version.

    `events` (pulsecast.json's alarm thresholds) default to `event_thresholds` on the training
    split for a recipe with `[model] events` (a retrain's challenger gets its own).

    `extra` is merged into the metadata last (a retrain's `parent_version` and comparison). The
    Keras model is saved beside the SavedModel as `assets.extra/model.keras` (TF Serving ignores
    it), so any version can be warm-started by `pulsecast retrain`. `ridge` (the ridge_ar baseline
    fitted on this training data) is stored as `ridge_ar`, so `pulsecast evaluate` on other
    records compares with a baseline that never saw them.
    """
    from models import store
    from models.export import export_in_subprocess, export_savedmodel, verify_savedmodel

    base = store.model_base_path(model_store, recipe.name)
    if events is None:
        events = recipe_event_thresholds(model, recipe, dataset)
    units = dict(zip(dataset.channels, dataset.units, strict=True))
    metadata = VersionMetadata(
        channels=tuple(recipe.window.inputs), fs=dataset.fs,
        input_steps=recipe.window.input_steps, horizon=recipe.window.horizon,
        targets=tuple(recipe.window.targets), model_name=recipe.name,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        units=tuple(units.get(c, "") for c in recipe.window.inputs),
        target_units=tuple(units.get(c, "") for c in recipe.window.targets),
        quantiles=tuple(recipe.model.get("quantiles", [])), dataset=str(dataset.root),
        dataset_sha256=dataset_fingerprint(dataset), metrics=evaluation, parent_version=None,
        params=param_rows, config=recipe.to_dict(), ridge_ar=ridge_to_metadata(ridge),
        events=events, valid_range=recipe.data.valid_range)  # :forecast reads values as ingest
    if extra:  # merged last, through the same checks (a retrain's lineage keys)
        metadata = VersionMetadata.from_dict({**metadata.to_dict(), **extra})
    expected = _forecaster(model)(warmup)

    def build(staging: Path) -> None:
        if describe_device().startswith("CPU"):
            export_savedmodel(model, staging, metadata, warmup)
        else:  # a graph traced where a GPU is visible carries cuDNN-only ops
            export_in_subprocess(model, staging, metadata, warmup)
        diffs = verify_savedmodel(staging, warmup, expected, complete=True)
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


def train(recipe: Recipe, *, model_store: Path = DEFAULT_MODEL_STORE, raw: Path | None = None,
          run_dir: Path | None = None, resume: bool = False, publish: bool = True,
          strategy: str = "default") -> TrainResult:
    """Run the whole pipeline for one recipe; returns what was published (if anything).

    `strategy` (`pipelines.training.distribute`): `default`, `mirrored` (this host's GPUs) or
    `multiworker` (hosts in `TF_CONFIG`; only the chief publishes, other workers keep their run
    folder under `<run_dir>/worker-<i>`).
    """
    import keras

    from models.architectures import build_model
    from models.events_keras import set_event_base_rates
    from models.params import check, rows_to_dicts
    from models.spec import model_spec_from_config
    from pipelines.training import distribute

    if recipe.window.gap_policy == "mask":
        # the windows would carry observed-flag channels the served model (raw `signal` in
        # physical units) cannot be given: refuse before any work, saying what works instead
        raise TrainingError(
            "[window] gap_policy = 'mask' is not supported by model training (the model takes "
            "the signal channels only); use 'skip' with [data] fill_gap_s to interpolate short "
            "gaps at ingest")
    if recipe.train.tbptt_steps:
        from pipelines.training.tbptt import check_recipe

        check_recipe(recipe, resume)  # refuses archs with no stateful twin, before any work
    if strategy != "default" and recipe.train.tbptt_steps:
        raise TrainingError(f"[train] tbptt_steps = {recipe.train.tbptt_steps} trains a stateful "
                            f"twin without tf.distribute: use strategy 'default', got {strategy!r}")
    dist = distribute.make_strategy(strategy)  # first: collectives are set up before any TF op
    # The data decides whether training can be judged at all: refuse before any run folder,
    # model or fit (numpy only here, no TF op).
    dataset = ensure_dataset(recipe, raw)
    spec = window_spec(recipe)
    mspec = model_spec_from_config(recipe.to_dict())
    train_b, val_b, n_test = check_dataset_splits(dataset, spec, recipe)
    log.info("%d training windows, %d validation windows, %d test windows (%d test patients)",
             train_b.n_windows, val_b.n_windows, n_test, len(dataset.patients("test")))

    run_dir = Path(run_dir or Path("runs") / recipe.name)
    if not distribute.is_chief(dist):
        run_dir, publish = run_dir / distribute.worker_name(), False
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(recipe.train.seed)
    keras.config.set_dtype_policy(recipe.train.precision)
    device = describe_device()
    log.info("training %s on %s", recipe.name, device)

    norm = None if resume else fit_normalization(train_b, recipe.train.seed)
    with distribute.strategy_scope(dist):  # model and optimizer variables live on its devices
        if resume:
            model, initial_epoch = _resume_state(run_dir)
        else:
            model, initial_epoch = build_model(mspec, norm), 0
            if mspec.events:  # each event head starts at its training base rate
                rates = set_event_base_rates(model, mspec.events,
                                             training_sample(train_b, recipe.train.seed)[1])
                log.info("event base rates on the training sample: %s", rates)
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
        from pipelines.training.tbptt import fit_tbptt

        history = fit_tbptt(model, mspec, dataset, spec, recipe.train, val_b, run_dir)
    else:
        history = fit_model(model, train_ds, val_ds, recipe.train, run_dir, initial_epoch)
    model = distribute.local_model(model, dist)  # evaluate and export a strategy-free copy
    events = recipe_event_thresholds(model, recipe, dataset)  # the training split only

    ridge = fit_baselines(dataset, spec, recipe.evaluate)
    result, examples = evaluate_forecaster(
        _forecaster(model), dataset, spec, recipe.evaluate, split="test",
        quantiles=mspec.quantiles, seed=recipe.train.seed, ridge=ridge)
    evaluation = result.to_dict()
    write_evaluation(result, examples, run_dir / "evaluation")
    if events:
        evaluation["events"] = recipe_event_evaluation(_forecaster(model), recipe, dataset,
                                                       events, run_dir / "evaluation" / "events")
    log.info("test MAE %.4g; best baseline %s MAE %.4g; skill %.3f",
             evaluation["model"]["mae"], evaluation["best_baseline"],
             evaluation["baselines"][evaluation["best_baseline"]]["mae"],
             evaluation["skill_mae_vs_best_baseline"])
    version, version_dir = None, None
    if publish:
        warmup = examples.x[: min(4, len(examples.x))].astype(np.float32)
        version, version_dir = publish_version(model, recipe, dataset, model_store, evaluation,
                                               warmup, rows_to_dicts(rows), ridge=ridge,
                                               events=events)
    return TrainResult(recipe.name, version, version_dir, run_dir, evaluation,
                       initial_epoch + len(history), device, events)
