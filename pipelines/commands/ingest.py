"""`pulsecast ingest`: WFDB records under a folder -> a dataset folder (flags -> IngestConfig).

Exit code 0 when the dataset was written; 1 when nothing was ingested, or with `--strict` when any
record (or piece of one) was skipped, in which case nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from fractions import Fraction

HELP = "read WFDB records into a dataset (manifest, float32 signals at one fs, patient splits)"


def parse_fs(text: str) -> float:
    """A rate in Hz: `125`, `62.5`, or a fraction such as `1/60` (MIMIC numerics)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as err:
        raise argparse.ArgumentTypeError(
            f"fs must be a number or a fraction, got {text!r}"
        ) from err


def parse_channels(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(","))


def parse_fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(f) for f in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"split fractions must be 3 comma-separated numbers, got {text!r}"
        ) from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", required=True, help="folder of WFDB records (recursive)")
    parser.add_argument("--dataset", required=True, help="output dataset folder (replaced)")
    parser.add_argument("--channels", required=True, type=parse_channels,
                        help="comma-separated channels in output order, e.g. II,ABP")
    parser.add_argument("--fs", required=True, type=parse_fs, help="output rate in Hz (or 1/60)")
    parser.add_argument("--numerics", action="store_true",
                        help="ingest only numerics records (MIMIC ...n, 1/min vitals; 0 = missing)")
    parser.add_argument("--patient-id", default=None, help="patient id for every record")
    parser.add_argument("--split-fractions", type=parse_fractions, default=(0.7, 0.15, 0.15),
                        help="train,val,test fractions (default 0.7,0.15,0.15)")
    parser.add_argument("--min-duration-s", type=float, default=10.0,
                        help="drop rows shorter than this (default 10)")
    parser.add_argument("--max-gap-s", type=float, default=60.0,
                        help="gaps up to this are NaN in a row; longer ones split (default 60)")
    parser.add_argument("--fill-gap-s", type=float, default=0.0,
                        help="interpolate each channel's gaps up to this long (default 0: keep "
                             "them NaN), e.g. 300 for numerics missing a few minutes")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes (default 1); with --executor ray and no --ray-address, "
                             "the CPUs of the local Ray (at least 2)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local process pool (default) or Ray tasks (pip install "
                             "'pulsecast[scale]')")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to run on: auto, host:port or ray://host:port "
                             "(default: start a local Ray)")
    parser.add_argument("--strict", action="store_true",
                        help="fail, writing nothing, if any record is skipped")


def run(args: argparse.Namespace) -> int:
    from pipelines.ingest.cohort import ingest
    from pipelines.ingest.config import IngestConfig

    if args.executor == "ray":
        from pipelines.ingest.executors import import_ray

        try:
            import_ray()
        except ImportError as err:
            logging.getLogger(__name__).error("%s", err)
            return 1

    config = IngestConfig(
        raw_dir=args.raw, dataset_dir=args.dataset, channels=args.channels, fs=args.fs,
        numerics=args.numerics, patient_id=args.patient_id, split_fractions=args.split_fractions,
        min_duration_s=args.min_duration_s, max_gap_s=args.max_gap_s,
        fill_gap_s=args.fill_gap_s, workers=args.workers,
        strict=args.strict, executor=args.executor, ray_address=args.ray_address,
    )
    report = ingest(config)
    sys.stdout.write(report.render(color=sys.stdout.isatty()))
    return 0 if report.written else 1
