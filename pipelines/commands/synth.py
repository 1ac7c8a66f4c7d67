"""`pulsecast synth`: write a synthetic cohort of coupled ECG/ABP/PLETH/RESP as WFDB records."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

HELP = "write a synthetic patient cohort as real WFDB records (the offline default data)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("data/raw/synthetic"),
                        help="cohort folder to create (default: data/raw/synthetic)")
    parser.add_argument("--patients", type=int, default=8, help="number of patients (default 8)")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="record length per patient in minutes, >= 1 (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing, non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    from pipelines.sources.synth import SynthConfig, write_cohort

    config = SynthConfig(out=args.out, patients=args.patients, minutes=args.minutes,
                         seed=args.seed, overwrite=args.overwrite)
    t0 = time.perf_counter()
    records = write_cohort(config)
    log.info("wrote %d patients (%g min each, seed %d) to %s in %.1f s", len(records),
             config.minutes, config.seed, config.out, time.perf_counter() - t0)
    return 0
