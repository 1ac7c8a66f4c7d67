"""bench/accuracy.py's Darts hook: the peer on each recipe's dataset, then one table of pulsecast,
Darts' LSTM and the baselines, all scored on the same held-out windows in the same run.

`add_arguments(parser)` adds `--darts auto|off`, `--darts-windows`, `--darts-epochs` and
`--darts-hidden-dim`; `run_peers(results, work, config_dir, args)` reads what bench/accuracy.py
left in `work` (each recipe's `run_<name>/evaluation/evaluation.json` and `history.csv`), runs
`darts_lstm.run_darts_peer` on the recipe's dataset and prints the table. Without darts
installed it prints one line saying so and how to install it, and returns that reason.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from peers import darts_lstm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Darts peer (bench/peers/darts_lstm.py)")
    group.add_argument("--darts", choices=("auto", "off"), default="auto",
                       help="auto: train Darts' LSTM on each recipe's training windows when "
                            "darts is installed, and score it beside pulsecast")
    group.add_argument("--darts-windows", type=int,
                       help="its training windows (default: pulsecast's max_windows_per_epoch "
                            "x epochs, the windows pulsecast's fit walks)")
    group.add_argument("--darts-epochs", type=int, help="passes over them (default: 1)")
    group.add_argument("--darts-hidden-dim", type=int, default=64)


def run_peers(results: list[dict], work: Path, config_dir: Path,
              args: argparse.Namespace) -> dict:
    """Train and score the peer for every recipe in `results`; prints the side-by-side table."""
    if args.darts == "off":
        return {"skipped": "--darts off"}
    reason = darts_lstm.missing_reason()
    if reason:
        print(f"Darts peer skipped: {reason}")
        return {"skipped": reason}
    from pipelines.config import load_recipe

    rows = []
    for res in results:
        name = res["recipe"]
        recipe = load_recipe(config_dir / f"{name}.toml")
        if tuple(recipe.window.inputs) != tuple(recipe.window.targets):
            rows.append({"recipe": name, "skipped": "inputs differ from targets"})
            continue
        run_dir = work / f"run_{name}"
        evaluation = json.loads((run_dir / "evaluation" / "evaluation.json").read_text())
        budget = darts_lstm.budget_from_recipe(recipe, args.darts_windows, args.darts_epochs,
                                               args.darts_hidden_dim)
        dataset = Path(res.get("dataset") or work / f"ds_{name}")
        peer = darts_lstm.run_darts_peer(dataset, recipe, budget, work / f"darts_{name}",
                                         evaluation)
        peer.update(recipe=name, pulsecast_train_s=res.get("train_s"),
                    **pulsecast_budget(recipe, run_dir, peer["train_windows_available"]))
        rows.append(peer)
    print_table(rows)
    return {"results": rows}


def pulsecast_budget(recipe, run_dir: Path, n_train: int) -> dict:
    """Windows per epoch and epochs pulsecast's fit ran (`history.csv`), for the table."""
    cfg = recipe.train
    per_epoch = n_train
    if cfg.max_windows_per_epoch:
        per_epoch = min(n_train, math.ceil(cfg.max_windows_per_epoch / cfg.batch_size)
                        * cfg.batch_size)
    history = run_dir / "history.csv"
    epochs = sum(1 for _ in csv.DictReader(history.open())) if history.exists() else None
    return {"pulsecast_windows_per_epoch": per_epoch, "pulsecast_epochs": epochs}


def print_table(rows: list[dict]) -> None:
    for row in rows:
        if row.get("skipped"):
            print(f"Darts peer, recipe {row['recipe']}: skipped ({row['skipped']})")
            continue
        base = row["baselines_mae"]
        best = base[row["best_baseline"]]
        print(f"\nrecipe {row['recipe']}: pulsecast, Darts' LSTM and the baselines on the same "
              f"{row['test_windows']} held-out windows (test patients: {row['test_patients']})")
        header = f"{'forecaster':<34} {'MAE':>9} {'skill':>7}  {'trained on':<26} {'train s':>8}"
        print(header)
        print("-" * len(header))
        epochs = row["pulsecast_epochs"]
        trained = (f"{row['pulsecast_windows_per_epoch']} windows x {epochs} epochs"
                   if epochs else "-")
        _line("pulsecast", row["pulsecast_mae"], best, trained, row.get("pulsecast_train_s"))
        _line(f"darts BlockRNNModel LSTM({row['hidden_dim']})", row["mae"], best,
              f"{row['train_windows']} windows x {row['epochs']} epochs", row["fit_s"])
        for name, mae in base.items():
            _line(name + (" (best)" if name == row["best_baseline"] else ""), mae, best, "-",
                  None)
    print("(skill = 1 - MAE / MAE of the best baseline; Darts trained on pulsecast's own "
          "training windows: bench/peers/darts_lstm.py; train s: all of `pulsecast train` "
          "(fit, evaluation, export), Darts' fit alone)")


def _line(name: str, mae: float, best: float, trained: str, seconds: float | None) -> None:
    secs = f"{seconds:>8.0f}" if seconds else f"{'-':>8}"
    print(f"{name:<34} {mae:>9.4g} {1 - mae / best:>7.3f}  {trained:<26} {secs}")
