"""`pulsecast train --config configs/ecg.toml`: the batch training pipeline (flags -> Recipe)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "train a recipe: ingest if needed, fit, evaluate against baselines, publish a version"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML recipe, e.g. configs/ecg.toml")
    parser.add_argument("--dataset", help="dataset folder (overrides [data].dataset)")
    parser.add_argument("--raw", help="raw WFDB folder to ingest from when the dataset is missing")
    parser.add_argument("--model-name", help="name to publish under (overrides the recipe's name)")
    parser.add_argument("--epochs", type=int, help="overrides [train].epochs")
    parser.add_argument("--model-store", default="data/model_store",
                        help="folder with one sub-folder per model (default data/model_store)")
    parser.add_argument("--run-dir", help="checkpoints, history and reports (default runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--no-publish", action="store_true", help="fit and evaluate only")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                        default="default",
                        help="tf.distribute: mirrored = this host's GPUs; multiworker = the "
                             "hosts in TF_CONFIG, each running this command (docs/scaling.md)")


def run(args: argparse.Namespace) -> int:
    from pipelines.config import load_recipe, with_overrides
    from pipelines.training.train import train

    recipe = with_overrides(load_recipe(args.config), dataset=args.dataset, raw=args.raw,
                            epochs=args.epochs, model_name=args.model_name)
    result = train(recipe, model_store=Path(args.model_store), raw=args.raw,
                   run_dir=Path(args.run_dir) if args.run_dir else None, resume=args.resume,
                   publish=not args.no_publish, strategy=args.strategy)
    ev = result.evaluation
    print(f"model {result.model_name}: {result.epochs_run} epochs on {result.device}")
    print(f"test MAE {ev['model']['mae']:.4g} vs {ev['best_baseline']} "
          f"{ev['baselines'][ev['best_baseline']]['mae']:.4g}: skill "
          f"{ev['skill_mae_vs_best_baseline']:.3f} (95% CI {ev['skill_ci95']})")
    if result.version is not None:
        print(f"published version {result.version} at {result.version_dir}")
    print(json.dumps({"model_name": result.model_name, "version": result.version,
                      "skill_mae_vs_best_baseline": ev["skill_mae_vs_best_baseline"]}))
    return 0
