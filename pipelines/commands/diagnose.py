"""`pulsecast diagnose gradients`: the vanishing-gradient picture, measured.

    pulsecast diagnose gradients --config configs/ecg.toml [--out DIR] [--dataset DIR]
    pulsecast diagnose gradients --units 32 --input-steps 100 --horizon 10

Trains SimpleRNN, IRNN and LSTM briefly on the same windows (synthetic sine + noise made in-process,
or the train split of a dataset), then prints |dLoss/dx_t| per input step and writes one PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np

from pipelines.commands.inspect import add_spec_arguments, read_config, spec_from_args

HELP = (
    "diagnose gradients: |dLoss/dx_t| per input step for SimpleRNN, IRNN and LSTM "
    "(TensorFlow or JAX backend)"
)
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["gradients"], help="the diagnostic to run")
    add_spec_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("data/diagnostics"),
                        help="folder for gradients.png (default data/diagnostics)")
    parser.add_argument("--dataset", type=Path,
                        help="use the train split of this dataset instead of synthetic data")
    parser.add_argument("--epochs", type=int, default=2, help="brief training (default 2)")
    parser.add_argument("--windows", type=int, default=512, help="training windows (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _dataset_windows(
    root: Path, inputs: list[str], targets: list[str], input_steps: int, horizon: int,
    n_windows: int, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n_windows` NaN-free windows cut from the dataset's train split."""
    from pipelines.dataset.contract import load_dataset

    ds = load_dataset(root)
    span = input_steps + horizon
    cols_in, cols_out = ds.channel_index(inputs), ds.channel_index(targets)
    xs, ys = [], []
    for record_id in ds.records("train"):
        signal = ds.signal(record_id)
        starts = np.arange(0, len(signal) - span + 1, max(1, span // 2))
        for s in starts:
            win = signal[s:s + span]
            if np.isfinite(win[:, cols_in + cols_out]).all():
                xs.append(win[:input_steps, cols_in])
                ys.append(win[input_steps:, cols_out])
    if not xs:
        raise ValueError(f"no gap-free window of {span} samples in the train split of {root}")
    idx = np.random.default_rng(seed).permutation(len(xs))[:n_windows]
    return (np.stack([xs[i] for i in idx]).astype(np.float32),
            np.stack([ys[i] for i in idx]).astype(np.float32))


def run(args: argparse.Namespace) -> int:
    from models.diagnose import (
        compute_gradient_profiles,
        format_gradient_table,
        make_sine_windows,
        write_gradient_plot,
    )

    spec = spec_from_args(args)
    if args.dataset:
        config = read_config(args.config) if args.config else {}
        window = config.get("window", {})
        inputs = window.get("inputs") or config.get("data", {}).get("channels")
        if not inputs:
            raise ValueError("--dataset needs --config with [window].inputs to pick channels")
        targets = window.get("targets") or inputs
        x, y = _dataset_windows(args.dataset, inputs, targets, spec.input_steps, spec.horizon,
                                args.windows, args.seed)
        source = f"dataset {args.dataset}"
    else:
        x, y = make_sine_windows(args.windows, spec.input_steps, spec.horizon,
                                 spec.n_channels, min(spec.n_targets, spec.n_channels),
                                 seed=args.seed)
        spec = dataclasses.replace(spec, n_targets=y.shape[-1])
        source = "synthetic sine + noise"
    log.info("training simplernn, irnn, lstm (units %s) for %d epochs on %d windows of %s",
             list(spec.units), args.epochs, len(x), source)
    profiles = compute_gradient_profiles(spec, x, y, epochs=args.epochs, seed=args.seed)
    print(f"|dLoss/dx_t| after {args.epochs} epochs on {source} "
          f"(T={spec.input_steps}, H={spec.horizon}, units={list(spec.units)})")
    print(format_gradient_table(profiles))
    png = write_gradient_plot(
        profiles, args.out / "gradients.png",
        title=f"|dLoss/dx_t|, T={spec.input_steps}, units={list(spec.units)}, {source}",
    )
    print(f"wrote {png}")
    return 0
