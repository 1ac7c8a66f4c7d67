"""Darts' LSTM as a peer: trained on pulsecast's training windows, scored on its held-out windows.

    python bench/peers/darts_lstm.py --config configs/ecg.toml --dataset DIR [--windows N]
                                     [--epochs E] [--hidden-dim 64] [--scaling instance|global]
                                     [--split test|val] [--torch-threads 1]
                                     [--evaluation DIR/evaluation.json] [--work DIR]

The peer is `darts.models.BlockRNNModel(model="LSTM")`: an LSTM over the input window whose last
hidden state a linear layer maps to the whole horizon, the closest Darts model to pulsecast's.

Same data, by construction (this process reads windows with pulsecast's own code, numpy only):

- training windows: the first `windows` of the order pulsecast's `fit` walks, that is
  `WindowBatcher(dataset, spec, "train", batch_size, seed).epoch_order(1)` (Keras calls
  `on_epoch_end` once before the first epoch); with `[train] max_windows_per_epoch = M` and
  `windows = M * epochs`, exactly the windows pulsecast trains on over `epochs` epochs (the
  default budget: those windows, one pass, as pulsecast sees each of them once);
- held-out windows: `pipelines.evaluation.evaluate.load_eval_windows(dataset, spec, "test",
  [evaluate] max_windows)`, the windows `pulsecast train` and `pulsecast evaluate` score on
  (still windows left out, evenly subsampled; `--split val` to choose settings);
- recipe settings: batch size, learning rate (Adam, constant: Darts' default schedule), loss
  (`mae` -> L1) and gradient clipping (`clipnorm` -> Lightning's norm clipping) from `[train]`.

Scaling: by default Darts' own reversible instance normalization (`use_reversible_instance_norm`:
each window scaled by its own mean and std, the forecast scaled back), the closer match to
pulsecast's per-window scaling; `--scaling global` standardizes with one mean and std per channel
from the training windows instead (what `darts.dataprocessing.transformers.Scaler` fitted on the
training series does). Chosen on the cohort's validation records (`--split val`, lead II, 8192
windows, one epoch): MAE 0.249 mV with instance, 0.269 with global. Forecasts are scored in the
data's units.

Darts runs torch, and torch can crash in a process that has TensorFlow loaded (bench/train.py),
so the model trains in a child process (`--child DIR`) that imports neither TensorFlow nor
pulsecast's models: windows and settings go in as files (`windows.npz`, `settings.json`), the
forecasts come back as `forecast.npy` plus `child.json` (versions, parameters, seconds).

Prints one JSON line: MAE on the held-out windows in the data's units and, with the same run's
`evaluation.json`, skill against its best baseline (`1 - MAE_darts / MAE_best_baseline`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as `python bench/peers/darts_lstm.py` from anywhere
    sys.path.insert(0, str(REPO))

INSTALL_HINT = "pip install -e '.[bench]'  (darts[torch] with torch==2.13.0, the CPU wheel)"
SCALINGS = ("global", "instance")


@dataclass(frozen=True)
class DartsBudget:
    """What the Darts peer trains on and how: windows, passes and the model's size."""

    windows: int  # distinct training windows (pulsecast's order)
    epochs: int  # passes over them
    hidden_dim: int = 64
    batch_size: int = 128
    learning_rate: float = 1e-3
    loss: str = "mae"
    clipnorm: float = 1.0
    seed: int = 0
    scaling: str = "instance"
    torch_threads: int = 1  # torch's 2 OpenMP threads ran 4x slower on a shared 2-core VM

    def __post_init__(self) -> None:
        for key in ("windows", "epochs", "hidden_dim", "batch_size", "torch_threads"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")


def missing_reason() -> str | None:
    """None when darts and torch are importable here, else what is missing and how to install."""
    missing = [m for m in ("darts", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: {INSTALL_HINT}"
    return None


def budget_from_recipe(recipe, windows: int | None = None, epochs: int | None = None,
                       hidden_dim: int = 64, scaling: str = "instance",
                       torch_threads: int = 1) -> DartsBudget:
    """pulsecast's budget for the peer: by default the windows pulsecast's own fit walks over all
    its epochs (`max_windows_per_epoch * epochs`), each seen once, as pulsecast sees them."""
    cfg = recipe.train
    if windows is None:
        per_epoch = cfg.max_windows_per_epoch or 0
        windows = per_epoch * cfg.epochs if per_epoch else 0  # 0: every window, resolved later
    if epochs is None:
        epochs = 1 if recipe.train.max_windows_per_epoch else cfg.epochs
    return DartsBudget(windows=windows or 1 << 62, epochs=epochs, hidden_dim=hidden_dim,
                       batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                       loss="mae" if cfg.loss in ("mae", "quantile") else "mse",
                       clipnorm=cfg.clipnorm, seed=cfg.seed, scaling=scaling,
                       torch_threads=torch_threads)


def make_training_windows(dataset, spec, batch_size: int, seed: int,
                          n_windows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """x `(n, input_steps, inputs)`, y `(n, horizon, targets)` (physical units): the first
    `n_windows` of pulsecast's first training epoch order; and how many the split holds."""
    from pipelines.windows.batcher import WindowBatcher

    batcher = WindowBatcher(dataset, spec, "train", batch_size=batch_size, seed=seed)
    order = batcher.epoch_order(1)  # Keras calls on_epoch_end once before epoch 1 (batcher doc)
    picked = np.sort(order[: min(n_windows, batcher.n_windows)])  # gather reads sorted windows
    x, y = batcher.gather(batcher.index.windows[picked])[:2]
    return x, y, batcher.n_windows


def run_darts_peer(dataset_dir: Path, recipe, budget: DartsBudget, work: Path,
                   evaluation: dict | None = None, split: str = "test") -> dict:
    """Train and score the peer (module doc); returns the figures as a dict.

    `evaluation` (the same run's `evaluation.json`, scored on the same windows) adds pulsecast's
    MAE, the baselines' and the peer's skill against the best baseline. `split` "val" scores on
    the validation records instead (to choose the peer's settings without touching the test).
    """
    from pipelines.dataset.contract import load_dataset
    from pipelines.evaluation.evaluate import load_eval_windows
    from pipelines.evaluation.metrics import mae
    from pipelines.training.train import window_spec

    spec = window_spec(recipe)
    if spec.inputs != spec.targets:
        raise ValueError(f"the Darts peer forecasts its inputs: needs inputs == targets, got "
                         f"inputs {spec.inputs} and targets {spec.targets}")
    dataset = load_dataset(dataset_dir)
    t0 = time.perf_counter()
    x_train, y_train, n_available = make_training_windows(
        dataset, spec, budget.batch_size, budget.seed, budget.windows)
    test = load_eval_windows(dataset, spec, split, recipe.evaluate.max_windows)
    cut_s = time.perf_counter() - t0
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "windows.npz", x_train=x_train, y_train=y_train, x_test=test.x)
    (work / "settings.json").write_text(json.dumps(asdict(budget)))
    child = _run_child(work)
    y_hat = np.load(work / "forecast.npy")
    if y_hat.shape != test.y.shape:
        raise RuntimeError(f"the Darts peer forecast {y_hat.shape}, the windows need "
                           f"{test.y.shape}")
    result = {
        "peer": "darts BlockRNNModel(model='LSTM')",
        **child,
        "train_windows": len(x_train), "train_windows_available": n_available,
        "epochs": budget.epochs, "window_passes": len(x_train) * budget.epochs,
        "batch_size": budget.batch_size, "learning_rate": budget.learning_rate,
        "loss": budget.loss, "clipnorm": budget.clipnorm, "hidden_dim": budget.hidden_dim,
        "scaling": budget.scaling, "split": split, "test_windows": len(test.y),
        "test_patients": len(set(test.patient_ids.tolist())), "windows_cut_s": round(cut_s, 1),
        "mae": mae(test.y, y_hat),
    }
    if evaluation:
        result.update(compare_with_evaluation(result["mae"], evaluation, len(test.y)))
    return result


def compare_with_evaluation(darts_mae: float, evaluation: dict, n_windows: int) -> dict:
    """pulsecast's and the baselines' MAE from the same run's `evaluation.json`, and the peer's
    skill against the best baseline; refuses an evaluation scored on other windows."""
    if evaluation.get("n_windows") not in (None, n_windows):
        raise ValueError(f"evaluation.json scored {evaluation['n_windows']} windows, the peer "
                         f"{n_windows}: not the same held-out windows")
    baselines = {name: b["mae"] for name, b in evaluation["baselines"].items()}
    best = evaluation.get("best_baseline") or min(baselines, key=baselines.get)
    return {
        "pulsecast_mae": evaluation["model"]["mae"], "baselines_mae": baselines,
        "best_baseline": best, "skill_vs_best_baseline": 1.0 - darts_mae / baselines[best],
        "pulsecast_skill_vs_best_baseline": evaluation.get("skill_mae_vs_best_baseline"),
    }


def _run_child(work: Path) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, __file__, "--child", str(work)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the Darts peer failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads((work / "child.json").read_text())


# --- child process: darts and torch only --------------------------------------------------------

def child_main(work: Path) -> int:
    """Fit Darts' LSTM on `work/windows.npz` and write `forecast.npy` and `child.json`."""
    import logging

    import darts
    import torch
    from darts import TimeSeries
    from darts.models import BlockRNNModel

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "darts"):
        logging.getLogger(name).setLevel(logging.ERROR)
    b = DartsBudget(**json.loads((work / "settings.json").read_text()))
    data = np.load(work / "windows.npz")
    x_train, y_train, x_test = data["x_train"], data["y_train"], data["x_test"]
    n_steps, horizon = x_train.shape[1], y_train.shape[1]
    mean, std = _standardizer(x_train, b.scaling)

    t0 = time.perf_counter()
    train = [TimeSeries.from_values(v) for v in
             ((np.concatenate([x_train, y_train], axis=1) - mean) / std).astype(np.float32)]
    series_s = time.perf_counter() - t0
    torch.set_num_threads(b.torch_threads)
    torch.manual_seed(b.seed)
    model = BlockRNNModel(
        input_chunk_length=n_steps, output_chunk_length=horizon, model="LSTM",
        hidden_dim=b.hidden_dim, n_rnn_layers=1, batch_size=b.batch_size, n_epochs=b.epochs,
        optimizer_kwargs={"lr": b.learning_rate},
        loss_fn=torch.nn.L1Loss() if b.loss == "mae" else torch.nn.MSELoss(),
        use_reversible_instance_norm=b.scaling == "instance", random_state=b.seed,
        save_checkpoints=False, work_dir=str(work), model_name="darts_lstm",
        pl_trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False,
                           "enable_model_summary": False, "logger": False,
                           "enable_checkpointing": False,
                           "gradient_clip_val": b.clipnorm or None},
    )
    t0 = time.perf_counter()
    model.fit(train, verbose=False)
    fit_s = time.perf_counter() - t0
    del train
    t0 = time.perf_counter()
    inputs = [TimeSeries.from_values(v) for v in ((x_test - mean) / std).astype(np.float32)]
    out = model.predict(n=horizon, series=inputs, batch_size=1024, verbose=False)
    y_hat = np.stack([s.values(copy=False) for s in out]).astype(np.float32) * std + mean
    predict_s = time.perf_counter() - t0
    np.save(work / "forecast.npy", y_hat)
    params = sum(p.numel() for p in model.model.parameters())
    (work / "child.json").write_text(json.dumps({
        "darts_version": darts.__version__, "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(), "params": int(params),
        "series_s": round(series_s, 1), "fit_s": round(fit_s, 1),
        "predict_s": round(predict_s, 1),
        "train_windows_per_s": round(len(x_train) * b.epochs / fit_s, 1),
    }))
    return 0


def _standardizer(x: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the training inputs (`global`), or identity (`instance`:
    the model normalizes each window itself)."""
    channels = x.shape[-1]
    if scaling == "instance":
        return np.zeros(channels, np.float32), np.ones(channels, np.float32)
    mean = x.mean(axis=(0, 1), dtype=np.float64)
    std = x.std(axis=(0, 1), dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


# --- command line -------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="the recipe pulsecast trains (windows, [train])")
    p.add_argument("--dataset", type=Path, help="dataset folder (default: the recipe's)")
    p.add_argument("--windows", type=int,
                   help="training windows (default: max_windows_per_epoch * epochs)")
    p.add_argument("--epochs", type=int,
                   help="passes over them (default: 1 with max_windows_per_epoch, else epochs)")
    p.add_argument("--hidden-dim", type=int, default=64)
    p.add_argument("--scaling", choices=SCALINGS, default="instance",
                   help="instance: Darts' reversible instance norm (per window); global: one "
                        "mean and std from the training windows")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads (1: OpenMP's spinning threads crawl on a busy VM)")
    p.add_argument("--evaluation", type=Path,
                   help="the same run's evaluation.json: adds pulsecast's and baselines' MAE")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="held-out windows to score (val: to choose settings)")
    p.add_argument("--work", type=Path, help="folder for windows and logs (default: temporary)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is None and args.config is None:
        p.error("--config is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    reason = missing_reason()
    if reason:
        print(f"Darts peer skipped: {reason}", file=sys.stderr)
        return 3
    from pipelines.config import load_recipe

    recipe = load_recipe(args.config)
    budget = budget_from_recipe(recipe, args.windows, args.epochs, args.hidden_dim, args.scaling,
                                args.torch_threads)
    evaluation = json.loads(args.evaluation.read_text()) if args.evaluation else None
    dataset = args.dataset or Path(recipe.data.dataset)
    with tempfile.TemporaryDirectory(prefix="pulsecast-darts-") as tmp:
        result = run_darts_peer(dataset, recipe, budget, args.work or Path(tmp), evaluation,
                                args.split)
    print(json.dumps({"bench": "darts_lstm", "recipe": recipe.name, "dataset": str(dataset),
                      **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
