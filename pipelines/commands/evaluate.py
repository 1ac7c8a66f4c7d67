"""`pulsecast evaluate`: a published version against baselines on held-out patients.

Prints which windows were left out and why (records too short, gaps, still windows, subsampling),
then one summary line, or with `--json` one JSON line of every figure (the last line).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "score a published model version against baselines on a dataset split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--version", type=int, help="default: the highest version")
    parser.add_argument("--model-store", default="data/model_store")
    parser.add_argument("--dataset", required=True, help="dataset folder (from pulsecast ingest)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    parser.add_argument("--out", help="report folder (default runs/<model>/evaluate-v<N>-<split>)")
    parser.add_argument("--max-still-fraction", type=float,
                        help="leave out windows whose target holds still on more than this "
                             "fraction of steps (flat line, calibration); 1 scores every window "
                             "(default: the version's [window] max_still_fraction)")
    parser.add_argument("--groups", help="file of 'record,alarm,label' (PhysioNet's ALARMS) or "
                             "'record,group' lines: scores per group (default: an ALARMS file "
                             "in the dataset's raw folder, when there is one)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of metrics")


def run(args: argparse.Namespace) -> int:
    from pipelines.evaluation.evaluate_version import evaluate_version
    from pipelines.evaluation.left_out import describe_left_out

    result, out_dir = evaluate_version(
        Path(args.model_store), args.model_name, args.version, Path(args.dataset), args.split,
        Path(args.out) if args.out else None, max_still_fraction=args.max_still_fraction,
        groups_file=Path(args.groups) if args.groups else None,
    )
    if result.get("left_out"):
        print("\n".join(describe_left_out(result["left_out"])))
    if args.json:
        print(json.dumps(result))
    else:
        best = result["best_baseline"]
        left_out = result["n_windows_excluded"]
        note = f" ({left_out} flat or stepped left out)" if left_out else ""
        print(f"{args.model_name} v{result['version']} on {result['n_windows']} {args.split} "
              f"windows{note} of {result['n_patients']} patients: "
              f"MAE {result['model']['mae']:.4g}, {best} {result['baselines'][best]['mae']:.4g}, "
              f"skill {_fmt(result['skill_mae_vs_best_baseline'])} {_ci(result['skill_ci95'])}"
              + (f", vs cycle_median {_fmt(result['skill_vs_cycle_median'])} "
                 f"{_ci(result['skill_vs_cycle_median_ci95'])}"
                 if result.get("skill_vs_cycle_median") is not None else "")
              + f"; report in {out_dir}")
    return 0


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3f}"


def _ci(pair: list | None) -> str:
    return f"[{_fmt(pair[0])}, {_fmt(pair[1])}]" if pair else "[nan, nan]"
