"""`pulsecast inspect`: every layer's parameter count against its formula, and cuDNN eligibility.

    pulsecast inspect --config configs/ecg.toml
    pulsecast inspect --arch lstm --input-dim 1 --units 32 --input-steps 5 --horizon 1 [--json]

Flags given with --config override the config's values. Exit 1 when a count disagrees.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from models.spec import ARCHS, ModelSpec, model_spec_from_config

HELP = "print each layer's parameter count next to its formula (and cuDNN eligibility)"


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """The model-recipe flags shared by `inspect` and `diagnose`."""
    parser.add_argument("--config", type=Path, help="TOML config with [window] and [model]")
    parser.add_argument("--arch", choices=ARCHS, help="architecture (default lstm)")
    parser.add_argument("--input-dim", type=int, help="input channels d (default 1)")
    parser.add_argument("--targets", type=int, help="target channels k (default 1)")
    parser.add_argument("--units", type=int, nargs="+", help="units per stacked layer")
    parser.add_argument("--input-steps", type=int, help="window length T (samples)")
    parser.add_argument("--horizon", type=int, help="forecast length H (samples)")
    parser.add_argument("--quantiles", type=float, nargs="*", help="quantile levels, e.g. 0.1 0.9")
    parser.add_argument("--bidirectional", action="store_true", default=None,
                        help="bidirectional recurrent layers (default: the config's, else off)")


def read_config(path: Path) -> dict:
    """Parse a TOML config file."""
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    with path.open("rb") as f:
        return tomllib.load(f)


def spec_from_args(args: argparse.Namespace) -> ModelSpec:
    """A ModelSpec from --config (if any) with the explicit flags laid over it."""
    base = model_spec_from_config(read_config(args.config)) if args.config else ModelSpec()
    overrides = {
        "arch": args.arch,
        "n_channels": args.input_dim,
        "n_targets": args.targets,
        "units": tuple(args.units) if args.units else None,
        "input_steps": args.input_steps,
        "horizon": args.horizon,
        "quantiles": tuple(args.quantiles) if args.quantiles is not None else None,
        "bidirectional": args.bidirectional,
    }
    fields = {**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    return ModelSpec(**fields)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (spec, layers, totals) instead of the table")


def run(args: argparse.Namespace) -> int:
    from models.architectures import build_model
    from models.params import format_table, layer_rows, rows_to_dicts
    from pipelines.report_format import print_json

    spec = spec_from_args(args)
    model = build_model(spec)  # identity normalization: counts do not depend on statistics
    rows = layer_rows(model)
    ok = all(row.ok for row in rows)
    if args.json:
        doc = {
            "spec": {**spec.__dict__, "units": list(spec.units), "quantiles": list(spec.quantiles)},
            "layers": rows_to_dicts(rows),
            "total": {"expected": sum(r.expected for r in rows), "keras": model.count_params()},
            "ok": ok,
        }
        print_json(doc)
    else:
        print(f"{model.name}: {spec.arch} units={list(spec.units)} d={spec.n_channels} "
              f"T={spec.input_steps} H={spec.horizon} k={spec.n_targets}")
        print(format_table(rows))
        print("cuDNN: on TensorFlow the fused kernel also needs a visible GPU at trace time.")
    if not ok:
        bad = ", ".join(r.name for r in rows if not r.ok)
        print(f"MISMATCH: formula and Keras disagree for {bad}")
        return 1
    return 0
