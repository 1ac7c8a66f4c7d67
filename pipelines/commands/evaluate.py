"""`pulsecast evaluate`: a published version against baselines on held-out patients.

Prints which windows were left out and why (records too short, gaps, still windows, subsampling),
then a summary: MAE in the targets' unit, the best baseline's, and the skill with its 95 %
interval. With `--json`, one JSON document (the evaluation, `figure_units`, `out`) on stdout and the
account of left-out windows on stderr (`pipelines.report_format`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.store import DEFAULT_MODEL_STORE

HELP = "score a published model version against baselines on a dataset split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", required=True, help="the model to score")
    parser.add_argument("--version", type=int,
                        help="the version to score (default: the highest version)")
    parser.add_argument("--model-store", default=str(DEFAULT_MODEL_STORE),
                        help="folder with one sub-folder per model (default data/model_store)")
    parser.add_argument("--dataset", required=True, help="dataset folder (from pulsecast ingest)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                        help="the patients to score on (default test)")
    parser.add_argument("--out", help="report folder (default runs/<model>/evaluate-v<N>-<split>)")
    parser.add_argument("--max-still-fraction", type=float,
                        help="leave out windows whose target holds still on more than this "
                             "fraction of steps (flat line, calibration); 1 scores every window "
                             "(default: the version's [window] max_still_fraction)")
    parser.add_argument("--groups", help="file of 'record,alarm,label' (PhysioNet's ALARMS) or "
                             "'record,group' lines: scores per group (default: an ALARMS file "
                             "in the dataset's raw folder, when there is one)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document of every figure (and their units) instead "
                             "of text")


def run(args: argparse.Namespace) -> int:
    from models import store
    from pipelines.evaluation.evaluate_version import evaluate_version
    from pipelines.evaluation.left_out import describe_left_out
    from pipelines.report_format import (
        evaluation_units,
        pooled_unit,
        print_json,
        read_target_unit,
        without_lone_intervals,
    )

    result, out_dir = evaluate_version(
        Path(args.model_store), args.model_name, args.version, Path(args.dataset), args.split,
        Path(args.out) if args.out else None, max_still_fraction=args.max_still_fraction,
        groups_file=Path(args.groups) if args.groups else None,
    )
    unit = pooled_unit(result.get("units") or ()) or read_target_unit(store.version_path(
        store.model_base_path(args.model_store, args.model_name), result["version"]))
    result = without_lone_intervals(result)
    if result.get("left_out"):
        print("\n".join(describe_left_out(result["left_out"])),
              file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print_json({**result, "out": str(out_dir), "figure_units": evaluation_units(unit)})
    else:
        print(render_summary(result, unit))
        print(f"report in {out_dir}")
    return 0


def render_summary(result: dict, unit: str | None) -> str:
    """The lines a person reads: windows and patients, MAE against the best baseline, skill."""
    from pipelines.report_format import (
        FRACTION,
        format_estimate,
        format_figure,
        no_interval_note,
        plural,
    )

    best = result["best_baseline"]
    left_out = result["n_windows_excluded"]
    note = f" ({left_out} flat or stepped left out)" if left_out else ""
    lines = [
        f"{result['model_name']} v{result['version']} on split {result['split']}: "
        f"{plural(result['n_windows'], 'window')}{note} of "
        f"{plural(result['n_patients'], 'patient')}",
        f"MAE {format_figure(result['model']['mae'], unit)}; best baseline {best} "
        f"{format_figure(result['baselines'][best]['mae'], unit)}; skill (1 - MAE / {best}'s) "
        f"{format_estimate(result['skill_mae_vs_best_baseline'], result['skill_ci95'], FRACTION)}"
        + no_interval_note(result["n_patients"]),
    ]
    if result.get("skill_vs_cycle_median") is not None:
        lines.append("skill against cycle_median " + format_estimate(
            result["skill_vs_cycle_median"], result["skill_vs_cycle_median_ci95"], FRACTION))
    return "\n".join(lines)
