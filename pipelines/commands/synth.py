"""`pulsecast synth`: write a synthetic cohort as WFDB records: coupled ECG/ABP/PLETH/RESP
waveforms with their numerics (`--kind waveforms`, the default), or per-minute mean arterial
pressure with acute hypotensive episodes and a `labels.csv`, in the PhysioNet/CinC Challenge
2009's layout (`--kind map`)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

HELP = "write a synthetic patient cohort as real WFDB records (the offline default data)"

log = logging.getLogger(__name__)

# per kind: (default --out, default --patients, default --minutes)
DEFAULTS = {"waveforms": (Path("data/raw/synthetic"), 8, 10.0),
            "map": (Path("data/raw/synthetic-map"), 24, 660)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=tuple(DEFAULTS), default="waveforms",
                        help="waveforms: ECG/ABP/PLETH/RESP at 125 Hz plus 1/min numerics "
                             "(default); map: 1/min mean arterial pressure (ABPMean) with acute "
                             "hypotensive episodes, T0 an hour before the end, and labels.csv")
    parser.add_argument("--out", type=Path, default=None,
                        help="cohort folder to create (default: data/raw/synthetic; "
                             "data/raw/synthetic-map for --kind map)")
    parser.add_argument("--patients", type=int, default=None,
                        help="number of patients (default 8; 24 for --kind map)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="record length per patient in minutes: >= 1 (default 10); for "
                             "--kind map a whole number >= 300 (default 660: T0 at 600)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing, non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    from pipelines.sources.synth import MapSynthConfig, SynthConfig, write_cohort, write_map_cohort

    out, patients, minutes = DEFAULTS[args.kind]
    out = args.out if args.out is not None else out
    patients = args.patients if args.patients is not None else patients
    minutes = args.minutes if args.minutes is not None else minutes
    t0 = time.perf_counter()
    if args.kind == "map":
        whole = int(minutes) if float(minutes).is_integer() else minutes
        config = MapSynthConfig(out=out, patients=patients, minutes=whole, seed=args.seed,
                                overwrite=args.overwrite)
        records = write_map_cohort(config)
        what = f"MAP trends of {config.minutes} min, T0 at minute {config.t0}"
    else:
        config = SynthConfig(out=out, patients=patients, minutes=minutes, seed=args.seed,
                             overwrite=args.overwrite)
        records = write_cohort(config)
        what = f"{config.minutes:g} min each"
    log.info("wrote %d patients (%s, seed %d) to %s in %.1f s", len(records), what,
             config.seed, config.out, time.perf_counter() - t0)
    return 0
