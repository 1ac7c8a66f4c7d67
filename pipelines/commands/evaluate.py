"""`pulsecast evaluate`: a published version against baselines on held-out patients."""

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
    parser.add_argument("--json", action="store_true", help="end with one JSON line of metrics")


def run(args: argparse.Namespace) -> int:
    from pipelines.evaluation.evaluate_version import evaluate_version

    result, out_dir = evaluate_version(
        Path(args.model_store), args.model_name, args.version, Path(args.dataset), args.split,
        Path(args.out) if args.out else None, max_still_fraction=args.max_still_fraction,
    )
    if args.json:
        print(json.dumps(result))
    else:
        best = result["best_baseline"]
        left_out = result["n_windows_excluded"]
        note = f" ({left_out} flat or stepped left out)" if left_out else ""
        print(f"{args.model_name} v{result['version']} on {result['n_windows']} {args.split} "
              f"windows{note} of {result['n_patients']} patients: "
              f"MAE {result['model']['mae']:.4g}, {best} {result['baselines'][best]['mae']:.4g}, "
              f"skill {result['skill_mae_vs_best_baseline']:.3f}; report in {out_dir}")
    return 0
