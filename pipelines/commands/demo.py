"""`pulsecast demo`: the whole product end to end on a synthetic cohort (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli import add_alias

HELP = "synth → ingest → train → publish → serve → query → plot, on a synthetic cohort"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("data"),
                        help="data root: raw records, dataset and model store (default data)")
    parser.add_argument("--config", type=Path, default=Path("configs/ecg.toml"),
                        help="TOML recipe to train (default configs/ecg.toml)")
    parser.add_argument("--patients", type=int, default=12,
                        help="synthetic patients (default 12)")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="record length per patient in minutes (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's [train] epochs)")
    parser.add_argument("--out", type=Path, default=Path("runs"),
                        help="folder for the run (<out>/<model>/: checkpoints, reports, the "
                             "forecast plot) (default runs)")
    add_alias(parser, "--runs", "out", type=Path)


def run(args: argparse.Namespace) -> int:
    from pipelines.demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(root=args.root, recipe=args.config, patients=args.patients,
                                  minutes=args.minutes, seed=args.seed, epochs=args.epochs,
                                  runs=args.out))
    return 0 if summary["server_exit_code"] == 0 else 1
