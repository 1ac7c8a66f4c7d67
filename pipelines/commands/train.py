"""`pulsecast train --config configs/ecg.toml`: the batch training pipeline (flags -> Recipe).

Prints the epochs run, the test MAE in the targets' unit against the best baseline, the skill with
its 95 % interval, and where the version was published; with `--json`, one JSON document
(`model_name`, `version`, `version_dir`, `out`, `epochs_run`, `device`, `evaluation`,
`figure_units`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.store import DEFAULT_MODEL_STORE
from pipelines.cli import add_alias

HELP = "train a recipe: ingest if needed, fit, evaluate against baselines, publish a version"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML recipe, e.g. configs/ecg.toml")
    parser.add_argument("--dataset", help="dataset folder (default: the recipe's [data] dataset)")
    parser.add_argument("--raw", help="raw WFDB folder to ingest from when the dataset is missing "
                                      "(default: the recipe's [data] raw)")
    parser.add_argument("--model-name", help="name to publish under (default: the recipe's name)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's [train] epochs)")
    parser.add_argument("--model-store", default=str(DEFAULT_MODEL_STORE),
                        help="folder with one sub-folder per model (default data/model_store)")
    parser.add_argument("--out", help="run folder: checkpoints, history and reports "
                                      "(default runs/<name>)")
    add_alias(parser, "--run-dir", "out")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--no-publish", action="store_true", help="fit and evaluate only")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                        default="default",
                        help="tf.distribute: mirrored = this host's GPUs; multiworker = the "
                             "hosts in TF_CONFIG, each running this command (docs/scaling.md) "
                             "(default: default, one device)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (version, evaluation, figure units) "
                             "instead of text")


def run(args: argparse.Namespace) -> int:
    from pipelines.config import load_recipe, with_overrides
    from pipelines.report_format import evaluation_units, print_json, without_lone_intervals
    from pipelines.training.train import train

    recipe = with_overrides(load_recipe(args.config), dataset=args.dataset, raw=args.raw,
                            epochs=args.epochs, model_name=args.model_name)
    result = train(recipe, model_store=Path(args.model_store), raw=args.raw,
                   run_dir=Path(args.out) if args.out else None, resume=args.resume,
                   publish=not args.no_publish, strategy=args.strategy)
    unit = _target_unit(result, recipe)
    ev = without_lone_intervals(result.evaluation)
    if args.json:
        print_json({
            "model_name": result.model_name, "version": result.version,
            "version_dir": str(result.version_dir) if result.version_dir else None,
            "out": str(result.run_dir), "epochs_run": result.epochs_run,
            "device": result.device,
            "skill_mae_vs_best_baseline": ev["skill_mae_vs_best_baseline"],
            "evaluation": ev, "figure_units": evaluation_units(unit),
        })
        return 0
    print(render_summary(result.model_name, result.epochs_run, result.device, ev, unit))
    if result.version is not None:
        print(f"published version {result.version} at {result.version_dir}")
    else:
        print(f"not published (--no-publish); run folder {result.run_dir}")
    return 0


def render_summary(model_name: str, epochs_run: int, device: str, ev: dict,
                   unit: str | None) -> str:
    """Epochs, then the test MAE against the best baseline and the skill with its interval."""
    from pipelines.report_format import (
        FRACTION,
        format_estimate,
        format_figure,
        no_interval_note,
        plural,
    )

    best = ev["best_baseline"]
    return (f"model {model_name}: {plural(epochs_run, 'epoch')} on {device}\n"
            f"test MAE {format_figure(ev['model']['mae'], unit)} vs {best} "
            f"{format_figure(ev['baselines'][best]['mae'], unit)} on "
            f"{plural(ev['n_windows'], 'window')} of {plural(ev['n_patients'], 'patient')}: skill "
            f"{format_estimate(ev['skill_mae_vs_best_baseline'], ev['skill_ci95'], FRACTION)}"
            + no_interval_note(ev["n_patients"]))


def _target_unit(result, recipe) -> str | None:
    """The unit of the test errors: the published version's, else the dataset's target units."""
    from pipelines.report_format import pooled_unit, read_target_unit

    if result.version_dir is not None:
        return read_target_unit(result.version_dir)
    try:
        from pipelines.dataset.contract import load_dataset

        ds = load_dataset(recipe.data.dataset)
    except (OSError, ValueError):
        return None
    units = dict(zip(ds.channels, ds.units, strict=True))
    return pooled_unit(units.get(t) for t in recipe.window.targets)
