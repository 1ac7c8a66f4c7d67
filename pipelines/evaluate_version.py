"""Evaluate a published SavedModel version (TensorFlow edge) on a dataset split.

The version's `assets.extra/pulsecast.json` says its window and recipe; the SavedModel's
`serving_default` is called exactly as a TensorFlow Serving client would (input `signal`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.config import parse_recipe
from pipelines.dataset import load_dataset
from pipelines.evaluate import evaluate_forecaster, write_evaluation
from pipelines.windows import WindowSpec


def load_serving_forecaster(version_dir: Path):
    """`x -> {output: array}` through the SavedModel's `serving_default` signature."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    fn = loaded.signatures["serving_default"]

    def forecast(x: np.ndarray) -> dict[str, np.ndarray]:
        out = fn(signal=tf.constant(x, dtype=tf.float32))
        return {k: v.numpy() for k, v in out.items()}

    return forecast


def evaluate_version(model_store: Path, model_name: str, version: int | None, dataset_dir: Path,
                     split: str, out_dir: Path | None) -> tuple[dict, Path]:
    from models import store

    base = store.model_base_path(model_store, model_name)
    versions = store.list_versions(base)
    if not versions:
        raise FileNotFoundError(f"model {model_name!r} has no versions in {base}")
    version = versions[-1] if version is None else version
    if version not in versions:
        raise ValueError(f"model {model_name!r} has no version {version} (has {versions})")
    vdir = store.version_path(base, version)
    meta = store.read_metadata(vdir)
    recipe = parse_recipe(meta["config"])
    dataset = load_dataset(dataset_dir)
    spec = WindowSpec(input_steps=meta["input_steps"], horizon=meta["horizon"],
                      stride=recipe.window.stride, inputs=tuple(meta["channels"]),
                      targets=tuple(meta["targets"]), gap_policy=recipe.window.gap_policy)
    if abs(dataset.fs - float(meta["fs"])) > 1e-9:
        raise ValueError(f"dataset {dataset_dir} is at {dataset.fs} Hz, model {model_name} "
                         f"v{version} needs {meta['fs']} Hz")
    result, examples = evaluate_forecaster(
        load_serving_forecaster(vdir), dataset, spec, recipe.evaluate, split=split,
        quantiles=tuple(meta.get("quantiles", ())), seed=recipe.train.seed)
    out_dir = out_dir or Path("runs") / model_name / f"evaluate-v{version}-{split}"
    write_evaluation(result, examples, out_dir)
    out = result.to_dict()
    out.update({"model_name": model_name, "version": version, "split": split})
    return out, out_dir
