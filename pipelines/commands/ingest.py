"""`pulsecast ingest`: WFDB records under a folder -> a dataset folder (flags -> IngestConfig).

With `--config`, every ingest setting comes from the recipe's `[data]` table (`raw`, `dataset`,
`channels`, `fs`, `numerics`, `fill_gap_s`, `max_gap_s`, `min_duration_s`, `valid_range`) through
`pipelines.ingest.config.ingest_config_from_recipe`, the mapping `pulsecast train` uses too; a flag
given explicitly overrides its key. Without it, `--raw`, `--dataset`, `--channels` and `--fs` are
required and the rest take `IngestConfig`'s defaults.

Exit code 0 when the dataset was written; 1 when nothing was ingested, or with `--strict` when any
record (or piece of one) was skipped, in which case nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from fractions import Fraction

HELP = "read WFDB records into a dataset (manifest, float32 signals at one fs, patient splits)"

_REQUIRED_WITHOUT_RECIPE = ("raw", "dataset", "channels", "fs")


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


def parse_range(text: str) -> tuple[float, float]:
    """`LOW,HIGH`, e.g. `10,300`."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"valid range must be LOW,HIGH (two numbers), got {text!r}"
        ) from err
    return low, high


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="TOML recipe whose [data] table gives every setting below (e.g. "
                             "configs/hypotension.toml); flags given explicitly override it")
    parser.add_argument("--raw", default=None,
                        help="folder of WFDB records (recursive); required without --config")
    parser.add_argument("--dataset", default=None,
                        help="output dataset folder (replaced); required without --config")
    parser.add_argument("--channels", type=parse_channels, default=None,
                        help="comma-separated channels in output order, e.g. II,ABP; required "
                             "without --config")
    parser.add_argument("--fs", type=parse_fs, default=None,
                        help="output rate in Hz (or 1/60); required without --config")
    parser.add_argument("--numerics", action=argparse.BooleanOptionalAction, default=None,
                        help="ingest only numerics records (MIMIC ...n, 1/min vitals; 0 = missing)"
                             " (default: the recipe's, else off)")
    parser.add_argument("--patient-id", default=None, help="patient id for every record")
    parser.add_argument("--split-fractions", type=parse_fractions, default=None,
                        help="train,val,test fractions (default 0.7,0.15,0.15)")
    parser.add_argument("--min-duration-s", type=float, default=None,
                        help="drop rows shorter than this (default: the recipe's, else 10)")
    parser.add_argument("--max-gap-s", type=float, default=None,
                        help="gaps up to this are NaN in a row; longer ones split (default: the "
                             "recipe's, else 60)")
    parser.add_argument("--fill-gap-s", type=float, default=None,
                        help="interpolate each channel's gaps up to this long (default: the "
                             "recipe's, else 0: keep them NaN), e.g. 300 for numerics missing a "
                             "few minutes")
    parser.add_argument("--valid-range", type=parse_range, default=None, metavar="LOW,HIGH",
                        help="a value at or below LOW is no reading, one above HIGH an artefact: "
                             "both become gaps and are counted (default: the recipe's, else "
                             "every value counts), e.g. 10,300 for MAP in mmHg")
    parser.add_argument("--min-still-s", type=float, default=None,
                        help="a stretch at least this long where a channel holds one value (a "
                             "lead off) or sits at its ADC limits (clipped) becomes a gap; the "
                             "usable stretches around it are kept (default 10)")
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


def build_config(args: argparse.Namespace):
    """The `IngestConfig` the flags ask for: the recipe's `[data]` (with `--config`) under the
    flags given explicitly; ValueError naming the flags a bare ingest lacks."""
    from pipelines.ingest.config import IngestConfig, ingest_config_from_recipe

    flags = {
        "channels": args.channels, "fs": args.fs, "numerics": args.numerics,
        "patient_id": args.patient_id, "split_fractions": args.split_fractions,
        "min_duration_s": args.min_duration_s, "max_gap_s": args.max_gap_s,
        "fill_gap_s": args.fill_gap_s, "valid_range": args.valid_range,
        "min_still_s": args.min_still_s, "workers": args.workers, "strict": args.strict,
        "executor": args.executor, "ray_address": args.ray_address,
    }
    if args.config is not None:
        from pipelines.config import load_recipe

        data = load_recipe(args.config).data
        return ingest_config_from_recipe(data, raw=args.raw, dataset=args.dataset, **flags)
    missing = [f"--{name}" for name in _REQUIRED_WITHOUT_RECIPE if getattr(args, name) is None]
    if missing:
        raise ValueError(f"ingest needs {', '.join(missing)} (or --config RECIPE to take them "
                         "from its [data] table)")
    given = {k: v for k, v in flags.items() if v is not None}
    return IngestConfig(raw_dir=args.raw, dataset_dir=args.dataset, **given)


def run(args: argparse.Namespace) -> int:
    from pipelines.ingest.cohort import ingest

    if args.executor == "ray":
        from pipelines.ingest.executors import import_ray

        try:
            import_ray()
        except ImportError as err:
            logging.getLogger(__name__).error("%s", err)
            return 1

    report = ingest(build_config(args))
    sys.stdout.write(report.render(color=sys.stdout.isatty()))
    return 0 if report.written else 1
