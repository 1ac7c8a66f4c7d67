"""`pulsecast retrain --model-name ecg --records-dir DIR`: new patients -> challenger -> gate.

Exit code 0 when the run completed, whatever the gate decided (nothing new, published, rejected,
or a dry run); the text says what was decided, on which MAE (in the targets' unit), and whether
the new records are now in the dataset. `--json`: one JSON document with the outcome. 1 on an
error (nothing changed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.store import DEFAULT_MODEL_STORE
from pipelines.cli import add_alias

HELP = "ingest new records, train a challenger, publish it only if it beats the champion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", required=True, help="the model to retrain")
    # not `required=True`: argparse would then refuse the old spelling `--records` alone
    parser.add_argument("--records-dir", metavar="DIR",
                        help="folder of new WFDB records, searched recursively (required)")
    add_alias(parser, "--records", "records_dir")
    parser.add_argument("--model-store", default=str(DEFAULT_MODEL_STORE),
                        help="folder with one sub-folder per model (default data/model_store)")
    parser.add_argument("--config", help="TOML recipe replacing the champion's own (default: the "
                                         "champion's recipe)")
    parser.add_argument("--dataset", help="dataset folder (default: the champion's)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="do not warm-start from the champion's weights")
    parser.add_argument("--min-improvement", type=float, default=0.02,
                        help="relative held-out MAE gain required to publish (default 0.02)")
    parser.add_argument("--old-test-tolerance", type=float, default=0.02,
                        help="relative MAE loss allowed on the old test patients (default 0.02)")
    parser.add_argument("--dry-run", action="store_true",
                        help="everything but publishing (the dataset is left as it was too)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's [train] epochs)")
    parser.add_argument("--out", help="run folder for the reports (default "
                                      "runs/<model>/retrain-<time>)")
    add_alias(parser, "--run-dir", "out")
    parser.add_argument("--workers", type=int, default=1, help="ingest processes (default 1)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document of the outcome instead of text")


def run(args: argparse.Namespace) -> int:
    from pipelines.release.gate import GateThresholds
    from pipelines.release.retrain import RetrainConfig, retrain
    from pipelines.report_format import print_json

    if args.records_dir is None:
        raise ValueError("retrain needs --records-dir DIR: the folder of the new WFDB records")
    cfg = RetrainConfig(
        model_name=args.model_name, records=Path(args.records_dir),
        model_store=Path(args.model_store), config=Path(args.config) if args.config else None,
        dataset=Path(args.dataset) if args.dataset else None, from_scratch=args.from_scratch,
        thresholds=GateThresholds(args.min_improvement, args.old_test_tolerance),
        dry_run=args.dry_run, epochs=args.epochs,
        run_dir=Path(args.out) if args.out else None, workers=args.workers,
    )
    result = retrain(cfg)
    if args.json:
        print_json(outcome(result))
    else:
        print(render_outcome(result))
    return 0


def outcome(result) -> dict:
    """The JSON form: status, versions, whether the records were added, the gate's figures."""
    from pipelines.report_format import FRACTION

    d = result.decision
    return {
        "model_name": result.model_name, "status": result.status,
        "champion_version": result.champion_version, "version": result.version,
        "version_dir": str(result.version_dir) if result.version_dir else None,
        "run_dir": str(result.run_dir) if result.run_dir else None,
        "records_added": result.records_added,
        "dataset": str(result.dataset_dir) if result.dataset_dir else None,
        "new_records": result.increment.new_record_ids,
        "gate": None if d is None else {
            "promote": d.promote, "champion_mae": d.champion_mae,
            "challenger_mae": d.challenger_mae, "improvement": d.improvement,
            "old_test_champion_mae": d.old_test_champion_mae,
            "old_test_challenger_mae": d.old_test_challenger_mae,
            "old_test_change": d.old_test_change,
            "min_improvement": d.thresholds.min_improvement,
            "old_test_tolerance": d.thresholds.old_test_tolerance,
            "n_windows": d.n_windows, "n_patients": d.n_patients, "reasons": list(d.reasons),
        },
        "figure_units": {**dict.fromkeys(("champion_mae", "challenger_mae", "old_test_champion_mae",
                                   "old_test_challenger_mae"), result.target_unit),
                  **dict.fromkeys(("improvement", "old_test_change", "min_improvement",
                                   "old_test_tolerance"), FRACTION)},
    }


def render_outcome(result) -> str:
    """What was compared (MAE with its unit), what the gate decided, and where the records are."""
    from pipelines.report_format import format_figure, format_percent

    inc, unit = result.increment, result.target_unit
    if result.status == "nothing_new":
        return (f"nothing new in {inc.raw_dir}: {inc.summary()}; version "
                f"{result.champion_version} stays")
    d = result.decision
    lines = [
        f"held-out patients ({d.n_patients}, {d.n_windows} windows): MAE champion "
        f"v{result.champion_version} {format_figure(d.champion_mae, unit)}, challenger "
        f"{format_figure(d.challenger_mae, unit)}: improvement "
        f"{format_percent(d.improvement, signed=True)} (publishing needs at least "
        f"{format_percent(d.thresholds.min_improvement, signed=True)})",
        f"old test patients: MAE champion {format_figure(d.old_test_champion_mae, unit)}, "
        f"challenger {format_figure(d.old_test_challenger_mae, unit)}: change "
        f"{format_percent(d.old_test_change, signed=True)} (a loss of at most "
        f"{format_percent(d.thresholds.old_test_tolerance, signed=True)} is tolerated)",
    ]
    n_new = len(inc.new_record_ids)
    if result.status == "published":
        lines.append(f"published version {result.version} at {result.version_dir}; the "
                     f"{n_new} new record(s) are now in dataset {result.dataset_dir}")
    else:
        why = ("dry run: the challenger would be published" if result.status == "would_publish"
               else "challenger rejected: nothing published")
        lines.append(
            f"{why}; the {n_new} new record(s) were NOT added to dataset {result.dataset_dir} "
            "(a dataset grows only with a published challenger): to add them, run retrain "
            "again " + ("without --dry-run" if result.status == "would_publish" else
                        "with more --epochs, another --config (--from-scratch), or a lower "
                        "--min-improvement"))
    lines.append(f"report in {result.run_dir}")
    return "\n".join(lines)
