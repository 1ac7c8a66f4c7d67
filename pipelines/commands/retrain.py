"""`pulsecast retrain --model-name ecg --records DIR`: new patients -> challenger -> gate.

Exit code 0 when the run completed, whatever the gate decided (nothing new, published, rejected,
or a dry run); the last line is one JSON object with the outcome. 1 on an error (nothing changed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "ingest new records, train a challenger, publish it only if it beats the champion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", required=True, help="the model to retrain")
    parser.add_argument("--records", required=True, help="folder of new WFDB records")
    parser.add_argument("--model-store", default="data/model_store",
                        help="folder with one sub-folder per model (default data/model_store)")
    parser.add_argument("--config", help="TOML recipe replacing the champion's own")
    parser.add_argument("--dataset", help="dataset folder (default: the champion's)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="do not warm-start from the champion's weights")
    parser.add_argument("--min-improvement", type=float, default=0.02,
                        help="relative held-out MAE gain required to publish (default 0.02)")
    parser.add_argument("--old-test-tolerance", type=float, default=0.02,
                        help="relative MAE loss allowed on the old test patients (default 0.02)")
    parser.add_argument("--dry-run", action="store_true",
                        help="everything but publishing (the dataset is left as it was too)")
    parser.add_argument("--epochs", type=int, help="overrides [train].epochs")
    parser.add_argument("--run-dir", help="report folder (default runs/<model>/retrain-<time>)")
    parser.add_argument("--workers", type=int, default=1, help="ingest processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from pipelines.release.gate import GateThresholds
    from pipelines.release.retrain import RetrainConfig, retrain

    cfg = RetrainConfig(
        model_name=args.model_name, records=Path(args.records),
        model_store=Path(args.model_store), config=Path(args.config) if args.config else None,
        dataset=Path(args.dataset) if args.dataset else None, from_scratch=args.from_scratch,
        thresholds=GateThresholds(args.min_improvement, args.old_test_tolerance),
        dry_run=args.dry_run, epochs=args.epochs,
        run_dir=Path(args.run_dir) if args.run_dir else None, workers=args.workers,
    )
    result = retrain(cfg)
    if result.status == "nothing_new":
        print(f"nothing new in {args.records}: {result.increment.summary()}; "
              f"version {result.champion_version} stays")
    else:
        for reason in result.decision.reasons:
            print(f"gate: {reason}")
        print({"published": f"published version {result.version} at {result.version_dir}",
               "rejected": "challenger rejected: nothing published",
               "would_publish": "dry run: the challenger would be published"}[result.status]
              + f"; report in {result.run_dir}")
    print(json.dumps({"model_name": result.model_name, "status": result.status,
                      "champion_version": result.champion_version, "version": result.version,
                      "run_dir": str(result.run_dir) if result.run_dir else None}))
    return 0
