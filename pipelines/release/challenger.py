"""Champion and challenger: the served version read from the store, the challenger trained on
the grown dataset, and both scored by `evaluate_forecaster` on exactly the same windows.

The champion is the highest version (what TF Serving's default policy serves); it is scored
through its SavedModel's `serving_default`, as served. The challenger is warm-started from the
champion's Keras model (`assets.extra/model.keras`) or built anew with `from_scratch`. Writes only
`evaluation/<champion|challenger>-<held_out|old_test>/` and the checkpoints of the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from models.layout import KERAS_RELPATH
from models.metadata import VersionMetadata, read_metadata
from pipelines.config import Recipe, parse_recipe
from pipelines.dataset.contract import Dataset

log = logging.getLogger(__name__)


class RetrainError(ValueError):
    """A retrain that cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Champion:
    version: int
    path: Path
    metadata: VersionMetadata
    recipe: Recipe


def read_champion(model_store: Path, model_name: str) -> Champion:
    """The highest version (what TF Serving's default policy serves) and its recipe."""
    from models import store

    base = store.model_base_path(model_store, model_name)
    versions = store.list_versions(base)
    if not versions:
        raise FileNotFoundError(f"model {model_name!r} has no versions in {base}: "
                                "train one first (pulsecast train)")
    path = store.version_path(base, versions[-1])
    meta = read_metadata(path)
    if meta is None:
        raise RetrainError(f"version {versions[-1]} of {model_name!r} has no pulsecast.json: "
                           "retrain needs a champion made by pulsecast")
    if meta.config is None:
        raise RetrainError(f"{path} metadata has no 'config': cannot tell its recipe")
    return Champion(versions[-1], path, meta, parse_recipe(meta.config))


def load_warm_start(champion: Champion):
    """The champion's Keras model (weights and in-graph normalization), uncompiled."""
    import keras

    import models.architectures  # noqa: F401  (registers custom layers for loading)

    path = champion.path / KERAS_RELPATH
    if not path.exists():
        raise RetrainError(f"version {champion.version} has no {KERAS_RELPATH} to warm-start "
                           "from (published before retrain existed): pass --from-scratch")
    return keras.saving.load_model(path, compile=False)


def fit_challenger(recipe: Recipe, dataset: Dataset, champion: Champion, from_scratch: bool,
                   run_dir: Path, batchers=None):
    """Train the challenger on the grown train split; returns (model, parameter rows).

    `batchers`: the (train, val) batchers when the caller already built them (the split check)."""
    import keras

    from models.architectures import build_model
    from models.params import check, rows_to_dicts
    from models.spec import model_spec_from_config
    from pipelines.training.fit import (
        _keyed,
        compile_model,
        fit_model,
        fit_normalization,
        make_batchers,
    )
    from pipelines.training.train import window_spec

    keras.utils.set_random_seed(recipe.train.seed)
    keras.config.set_dtype_policy(recipe.train.precision)
    spec, mspec = window_spec(recipe), model_spec_from_config(recipe.to_dict())
    train_b, val_b = batchers or make_batchers(dataset, spec, recipe.train)
    log.info("challenger: %s on %d training windows (%d validation)",
             "from scratch" if from_scratch else f"warm-started from v{champion.version}",
             train_b.n_windows, val_b.n_windows if val_b else 0)
    if from_scratch:
        model = build_model(mspec, fit_normalization(train_b, recipe.train.seed))
    else:
        model = load_warm_start(champion)
    rows = check(model)
    steps = len(train_b)
    if recipe.train.max_windows_per_epoch:
        steps = min(steps, math.ceil(recipe.train.max_windows_per_epoch / recipe.train.batch_size))
    compile_model(model, mspec, recipe.train, steps)
    if recipe.train.tbptt_steps:
        from pipelines.training.tbptt import fit_tbptt

        fit_tbptt(model, mspec, dataset, spec, recipe.train, val_b, run_dir)
    else:
        names = list(model.output_names)
        fit_model(model, _keyed(train_b, names, steps),
                  _keyed(val_b, names) if val_b else None, recipe.train, run_dir, 0)
    return model, rows_to_dicts(rows)


def only_test_patients(dataset: Dataset, patients: list[str]) -> Dataset:
    """The dataset with its test split cut down to `patients` (other splits untouched)."""
    m = dataset.manifest
    keep = (m["split"] != "test") | m["patient_id"].isin(patients)
    return dataclasses.replace(dataset, manifest=m[keep].reset_index(drop=True))


def evaluate_pair(champion: Champion, model, recipe: Recipe, dataset: Dataset,
                  old_test: list[str], run_dir: Path):
    """Champion and challenger on the same windows.

    Returns ({who: {part: evaluation dict}}, the challenger's held-out examples, the ridge_ar
    baseline fitted on the grown train split).
    """
    from models.spec import model_spec_from_config
    from pipelines.evaluation.evaluate import evaluate_forecaster, fit_baselines, write_evaluation
    from pipelines.evaluation.evaluate_version import load_serving_forecaster
    from pipelines.training.train import _forecaster, window_spec

    spec = window_spec(recipe)
    ridge = fit_baselines(dataset, spec, recipe.evaluate)
    parts = {"held_out": dataset, "old_test": only_test_patients(dataset, old_test)}
    who = {
        "champion": (load_serving_forecaster(champion.path),
                     champion.metadata.quantiles),
        "challenger": (_forecaster(model), model_spec_from_config(recipe.to_dict()).quantiles),
    }
    out: dict[str, dict] = {}
    examples = None
    for name, (forecaster, quantiles) in who.items():
        for part, ds in parts.items():
            result, ex = evaluate_forecaster(forecaster, ds, spec, recipe.evaluate, split="test",
                                             quantiles=quantiles, seed=recipe.train.seed,
                                             ridge=ridge)
            write_evaluation(result, ex, run_dir / "evaluation" / f"{name}-{part}")
            out.setdefault(name, {})[part] = result.to_dict()
            if name == "challenger" and part == "held_out":
                examples = ex
    if champion.metadata.events:  # a warning recipe: the gate weighs the warning too
        _add_event_scores(out, who, champion, model, recipe, dataset, run_dir, ridge)
    return out, examples, ridge


def _add_event_scores(out: dict, who: dict, champion: Champion, model, recipe: Recipe,
                      dataset: Dataset, run_dir: Path, ridge) -> None:
    """Each model's warning on the held-out patients (`out[who]["held_out"]["events"]`), the
    champion at its stored threshold, the challenger at one chosen on the grown train split."""
    from pipelines.evaluation.event_dataset import recipe_event_evaluation
    from pipelines.training.train import recipe_event_thresholds

    thresholds = {"champion": champion.metadata.events,
                  "challenger": recipe_event_thresholds(model, recipe, dataset)}
    for name, (forecaster, _) in who.items():
        out[name]["held_out"]["events"] = recipe_event_evaluation(
            forecaster, recipe, dataset, thresholds[name],
            run_dir / "evaluation" / f"{name}-held_out" / "events", ridge=ridge)
