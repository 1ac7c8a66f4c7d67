"""Evaluate a published SavedModel version (TensorFlow edge) on a dataset split.

The version's `assets.extra/pulsecast.json` says its window and recipe; the SavedModel's
`serving_default` is called exactly as a TensorFlow Serving client would (input `signal`).

The ridge_ar baseline is the one fitted on the version's own training data (`version_ridge`):
stored in its metadata, else refitted on its `dataset` when that is on disk, else (with a warning)
fitted on the train split of the dataset being scored, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.metadata import VersionMetadata, read_metadata
from pipelines.config import EvalConfig, parse_recipe
from pipelines.dataset.contract import load_dataset
from pipelines.evaluation.baselines import RidgeAR
from pipelines.evaluation.evaluate import (
    evaluate_forecaster,
    fit_baselines,
    ridge_from_metadata,
    write_evaluation,
)
from pipelines.evaluation.groups import read_dataset_groups
from pipelines.windows.spec import WindowSpec

log = logging.getLogger(__name__)


def load_serving_forecaster(version_dir: Path):
    """`x -> {output: array}` through the SavedModel's `serving_default` signature."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    fn = loaded.signatures["serving_default"]

    def forecast(x: np.ndarray) -> dict[str, np.ndarray]:
        out = fn(signal=tf.constant(x, dtype=tf.float32))
        return {k: v.numpy() for k, v in out.items()}

    return forecast


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def version_ridge(meta: VersionMetadata | Mapping[str, Any], spec: WindowSpec, cfg: EvalConfig,
                  dataset_dir: Path) -> RidgeAR | None:
    """The ridge_ar baseline fitted on the version's training data; None = fit on `dataset_dir`.

    In order: the coefficients stored at publish time (`meta["ridge_ar"]`); a refit on the train
    split of `meta["dataset"]` when that folder exists; None (the caller fits on the scored
    dataset's train split) when the scored dataset is the training one, or, with a warning, when
    the training dataset is gone: then ridge_ar may have seen the scored records.
    """
    if isinstance(meta, VersionMetadata):  # else a plain, possibly partial, document
        meta = meta.to_dict()
    stored = meta.get("ridge_ar")
    if stored:
        ridge = ridge_from_metadata(stored)
        if ridge.horizon == spec.horizon and ridge.n_lags <= spec.input_steps:
            return ridge
        log.warning("stored ridge_ar (horizon %d, %d lags) does not fit this window; refitting",
                    ridge.horizon, ridge.n_lags)
    trained_on = Path(meta["dataset"]) if meta.get("dataset") else None
    if trained_on is not None and _same_folder(trained_on, dataset_dir):
        return None
    if trained_on is not None and trained_on.is_dir():
        try:
            ridge = fit_baselines(load_dataset(trained_on), spec, cfg)
        except (OSError, ValueError) as err:  # a folder that is no (longer a) dataset
            log.warning("training dataset %s unreadable: %s", trained_on, err)
            ridge = None
        if ridge is not None:
            return ridge
    log.warning("ridge_ar baseline fitted on the train split of %s, not on the model's training "
                "dataset %s (not on disk): it may have seen the scored records", dataset_dir,
                trained_on)
    return None


def evaluate_version(model_store: Path, model_name: str, version: int | None, dataset_dir: Path,
                     split: str, out_dir: Path | None,
                     max_still_fraction: float | None = None,
                     groups_file: Path | None = None) -> tuple[dict, Path]:
    """Score version `version` (None: the newest) of `model_name` on `split` of a dataset.

    Writes the report into `out_dir` (default `runs/<model>/evaluate-v<N>-<split>`) and returns
    the evaluation's JSON form with `model_name`, `version` and `split`. `groups_file`
    (`record,alarm,label` or `record,group` lines) labels records for the per-group scores;
    without it an `ALARMS` file in the dataset's raw folder is used when there is one.
    """
    from models import store

    base = store.model_base_path(model_store, model_name)
    versions = store.list_versions(base)
    if not versions:
        raise FileNotFoundError(f"model {model_name!r} has no versions in {base}")
    version = versions[-1] if version is None else version
    if version not in versions:
        raise ValueError(f"model {model_name!r} has no version {version} (has {versions})")
    vdir = store.version_path(base, version)
    meta = read_metadata(vdir)
    if meta is None:
        raise FileNotFoundError(f"{vdir} has no pulsecast.json: cannot tell its window")
    recipe = parse_recipe(meta.config)
    if max_still_fraction is None:  # else an override of the version's own rule
        max_still_fraction = recipe.window.max_still_fraction
    dataset = load_dataset(dataset_dir)
    spec = WindowSpec(input_steps=meta.input_steps, horizon=meta.horizon,
                      stride=recipe.window.stride, inputs=meta.channels,
                      targets=meta.targets, gap_policy=recipe.window.gap_policy,
                      max_still_fraction=max_still_fraction)
    if abs(dataset.fs - meta.fs) > 1e-9:
        raise ValueError(f"dataset {dataset_dir} is at {dataset.fs} Hz, model {model_name} "
                         f"v{version} needs {meta.fs} Hz")
    groups, source = read_dataset_groups(dataset, groups_file)  # a bad file fails here, early
    if groups_file is not None and not groups:
        log.warning("groups file %s names none of the records of %s", groups_file, dataset_dir)
    ridge = version_ridge(meta, spec, recipe.evaluate, dataset_dir)
    result, examples = evaluate_forecaster(
        load_serving_forecaster(vdir), dataset, spec, recipe.evaluate, split=split,
        quantiles=meta.quantiles, seed=recipe.train.seed, ridge=ridge, groups=groups,
        groups_source=source)
    out_dir = out_dir or Path("runs") / model_name / f"evaluate-v{version}-{split}"
    write_evaluation(result, examples, out_dir)
    out = result.to_dict()
    if meta.events:  # a warning recipe: the event report beside the forecast's
        from pipelines.evaluation.event_dataset import recipe_event_evaluation

        out["events"] = recipe_event_evaluation(
            load_serving_forecaster(vdir), recipe, dataset, meta.events, out_dir / "events",
            split=split, ridge=ridge)
    out.update({"model_name": model_name, "version": version, "split": split})
    return out, out_dir
