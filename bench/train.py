"""Training throughput benchmark (issue 4): pulsecast's fit path against two plain peers.

One run, one reference shape (window 256, 1 channel, LSTM 64 units, horizon 32, Adam, MSE), the
same number of windows for every path, measured in training windows per second:

- `pulsecast`: a synthetic dataset written to a temp dir in the dataset contract
  (`pipelines.dataset.contract`), windowed on the fly by `WindowBatcher` behind the same PyDataset
  wrapper `pipelines.training.train` uses, the model from `models.architectures.build_model` (arch
  lstm, units [64]), compiled by `pipelines.training.fit.compile_model` and fitted with `fit`'s
  arguments from `pipelines.training.fit.fit_model` (no checkpoint/TensorBoard callbacks: they cost
  per epoch, not per window).
- `pulsecast_device`: the same model, recipe and windows (the batcher's order), but through
  `pipelines.windows.device.DeviceWindows`: the signals sit on the device once and each compiled
  step gathers its batch from int32 window starts (no per-batch host gather or big host->device
  copy; with `--steps-per-execution k`, k steps per dispatch).
- `keras_numpy`: Keras `fit` on fully materialized numpy arrays, `Input -> LSTM(64) -> Dense(32)`
  with Keras' compile defaults.
- `torch`: a plain PyTorch `nn.LSTM(1, 64) -> Linear(64, 32)` loop (cuDNN on a CUDA device);
  skipped with a note when torch is not installed (`pip install .[bench]`).

Each path trains one warm-up epoch (tracing/compilation) plus `--epochs` timed epochs; the figure
is the median timed epoch. `ratio_vs_best_peer` is pulsecast's faster path over the faster peer;
the JSON names both (`ratio_pulsecast_path`, `ratio_peer_path`). The report prints the device, a
table, optional cuDNN evidence (`--evidence`), and ends with one JSON line. Run it as a script,
per backend:

    KERAS_BACKEND=jax python bench/train.py --batch-size 256 --epochs 3 --windows 16384

`--repeats N` runs the whole comparison N times in one call (one dataset, fresh models) and
prints each run's table and ratio, then each path's median and the median of the runs' ratios
(`ratio_runs` in the JSON holds every run's): the CPU goal is read from

    python bench/train.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/train.py` from anywhere
    sys.path.insert(0, str(REPO))

INPUT_STEPS, HORIZON, UNITS, CHANNEL = 256, 32, 64, "sig"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
N_RECORDS = 4
PULSECAST_PATHS = ("pulsecast", "pulsecast_device")


def write_synthetic_dataset(root: Path, n_windows: int, seed: int = 0) -> None:
    """A dataset folder in the ingest contract whose train split holds exactly `n_windows`."""
    import pandas as pd

    from pipelines.dataset.contract import MANIFEST_COLUMNS

    (root / "signals").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    span = INPUT_STEPS + HORIZON
    per = [n_windows // N_RECORDS + (i < n_windows % N_RECORDS) for i in range(N_RECORDS)]
    rows = []
    for i, n in enumerate(per):
        n_samples = n + span - 1  # stride 1: exactly n windows
        t = np.arange(n_samples) / 125.0
        sig = np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.sin(2 * np.pi * 0.25 * t)
        sig = (sig + 0.05 * rng.standard_normal(n_samples)).astype(np.float32)[:, None]
        record_id = f"r{i}"
        np.save(root / "signals" / f"{record_id}.npy", sig)
        rows.append({"record_id": record_id, "patient_id": f"p{i}", "source_path": "",
                     "channels": CHANNEL, "units": "mV", "fs": 125.0, "n_samples": n_samples,
                     "start_time": "", "sha256": "", "split": "train", "quality": "",
                     "nan_fraction": 0.0})
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_parquet(root / "manifest.parquet")
    (root / "dataset.json").write_text(
        json.dumps({"channels": [CHANNEL], "units": ["mV"], "fs": 125.0})
    )


def _progress(path: str, wps: float) -> None:
    print(f"  {path}: {wps:.0f} windows/s", flush=True)


def describe_device() -> tuple[str, str]:
    """(device in words, Keras backend)."""
    import keras

    backend = keras.backend.backend()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = f"{cpu} x{os.cpu_count()}"
    gpu = ""
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            gpu = f"{dev.platform}:{getattr(dev, 'device_kind', '')}"
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            gpu = f"cuda:{torch.cuda.get_device_name(0)}"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        gpu = gpus[0].name if gpus else ""
    return (f"{gpu} (host {cpu})" if gpu else f"CPU {cpu}"), backend


def _timer_callback(times: list[float]):
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float((logs or {}).get("loss", 0.0))  # forces async backends (JAX) to finish
            times.append(time.perf_counter() - self._t0)

    return EpochTimer()


def _pulsecast_setup(data_root: Path, args):
    """pulsecast's batcher, model and recipe for the reference shape, as `pipelines.training`."""
    from models.architectures import build_model
    from models.spec import ModelSpec
    from pipelines.config import TrainConfig
    from pipelines.dataset.contract import load_dataset
    from pipelines.training.fit import fit_normalization
    from pipelines.windows.batcher import WindowBatcher
    from pipelines.windows.spec import WindowSpec

    dataset = load_dataset(data_root)
    wspec = WindowSpec(INPUT_STEPS, HORIZON, 1, (CHANNEL,), (CHANNEL,))
    cfg = TrainConfig(batch_size=args.batch_size, epochs=args.epochs + 1, schedule="constant",
                      clipnorm=0.0, precision=args.precision,
                      steps_per_execution=args.steps_per_execution,
                      jit_compile=args.jit_compile)
    batcher = WindowBatcher(dataset, wspec, "train", batch_size=cfg.batch_size, seed=cfg.seed,
                            drop_remainder=True)
    mspec = ModelSpec(arch="lstm", units=(UNITS,), input_steps=INPUT_STEPS, horizon=HORIZON)
    model = build_model(mspec, fit_normalization(batcher, cfg.seed))
    return batcher, model, mspec, cfg


def bench_pulsecast(data_root: Path, args) -> tuple[list[float], object]:
    """Epoch times of pulsecast's own path; returns (times, model) for the cuDNN evidence."""
    from pipelines.training.fit import _keyed, compile_model

    batcher, model, mspec, cfg = _pulsecast_setup(data_root, args)
    steps = len(batcher)
    compile_model(model, mspec, cfg, steps)
    ds_kwargs = {}
    if args.workers:
        ds_kwargs = {"workers": args.workers, "use_multiprocessing": False,
                     "max_queue_size": 2 * args.workers}
    train_ds = _keyed(batcher, list(model.output.keys()), **ds_kwargs)
    times: list[float] = []
    # The same fit arguments as pipelines.training.fit.fit_model.
    model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, shuffle=False, verbose=0,
              callbacks=[_timer_callback(times)])
    return times, model


def bench_pulsecast_device(data_root: Path, args) -> list[float]:
    """pulsecast with `pipelines.windows.device`: signals on the device, windows cut in-step."""
    from pipelines.training.fit import compile_model
    from pipelines.windows.device import DeviceWindows

    batcher, model, mspec, cfg = _pulsecast_setup(data_root, args)
    dw = DeviceWindows(batcher)
    trainer = dw.training_model(model)
    steps = len(dw)
    compile_model(trainer, mspec, cfg, steps)
    times: list[float] = []
    trainer.fit(dw.dataset(), epochs=cfg.epochs, steps_per_epoch=steps, shuffle=False,
                verbose=0, callbacks=[_timer_callback(times)])
    return times


def plain_keras_model():
    import keras

    inp = keras.Input((INPUT_STEPS, 1))
    out = keras.layers.Dense(HORIZON)(keras.layers.LSTM(UNITS)(inp))
    return keras.Model(inp, out)


def bench_keras_numpy(x: np.ndarray, y: np.ndarray, args) -> tuple[list[float], object]:
    import keras

    model = plain_keras_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    times: list[float] = []
    model.fit(x, y[..., 0], batch_size=args.batch_size, epochs=args.epochs + 1, verbose=0,
              callbacks=[_timer_callback(times)])
    return times, model


def _torch_parts(precision: str):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(1, UNITS, batch_first=True)
            self.head = torch.nn.Linear(UNITS, HORIZON)

        def forward(self, x):  # (B, T, 1) -> (B, H)
            _, (h, _) = self.lstm(x)
            return self.head(h[-1])

    net = Net().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    dtype = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=dtype is torch.float16)

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.mse_loss(net(xb).float(), yb)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    return torch, device, step


def bench_torch(x: np.ndarray, y: np.ndarray, args) -> list[float]:
    torch, device, step = _torch_parts(args.precision)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y[..., 0])).to(device)
    n, b = len(xt), args.batch_size
    gen = torch.Generator(device="cpu").manual_seed(0)
    times = []
    for _ in range(args.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(n // b):
            idx = perm[i * b:(i + 1) * b]
            loss = step(xt[idx], yt[idx])
        loss.item()  # waits for the device
        times.append(time.perf_counter() - t0)
    return times


def cudnn_evidence(model, x: np.ndarray, y: np.ndarray, backend: str) -> list[str]:
    """Lines showing whether the recurrent layer took the fused cuDNN path on this device."""
    lines = []
    xb, yb = x[:8], y[:8]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        if jax.default_backend() != "gpu":
            return ["jax: no GPU, the LSTM runs as lax.scan (cuDNN not applicable)"]
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]

        def loss_fn(tv, ntv, xb, yb):
            out, _ = model.stateless_call(tv, ntv, xb, training=True)
            out = out["forecast"] if isinstance(out, dict) else out
            return jnp.mean((out.astype("float32") - yb) ** 2)

        text = jax.jit(jax.value_and_grad(loss_fn)).lower(tv, ntv, xb, yb).as_text()
        hits = sorted({ln.strip()[:160] for ln in text.splitlines() if "cudnn" in ln.lower()})
        lines.append(f"jax: lowered train step (value_and_grad) has {len(hits)} distinct "
                     "cuDNN custom-call lines")
        lines += [f"  {h}" for h in hits[:4]]
    elif backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return ["torch: no CUDA device, the LSTM runs on CPU (cuDNN not applicable)"]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            model.train_on_batch(xb, {"forecast": yb} if isinstance(model.output, dict) else yb)
            torch.cuda.synchronize()
        names = sorted({e.key for e in prof.key_averages() if "rnn" in e.key.lower()})
        lines.append(f"torch backend: profiler RNN ops in one train step: {names}")
    else:
        lines.append(f"{backend}: cuDNN evidence is collected on the jax and torch backends")
    return lines


def torch_evidence(x: np.ndarray, y: np.ndarray, precision: str) -> list[str]:
    torch, device, step = _torch_parts(precision)
    if device != "cuda":
        return []
    xb = torch.from_numpy(x[:8]).to(device)
    yb = torch.from_numpy(np.ascontiguousarray(y[:8, :, 0])).to(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        step(xb, yb)
        torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if "rnn" in e.key.lower()})
    return [f"raw torch: profiler RNN ops in one train step: {names}"]


def run_torch_child(tmp: Path, x: np.ndarray, y: np.ndarray, args) -> dict | None:
    """The PyTorch peer in its own process (no TensorFlow loaded beside it: torch 2.14's CUDA
    wheel crashes in a process that has TensorFlow's oneDNN loaded). None when torch is absent."""
    import subprocess

    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", y)
    done = subprocess.run(
        [sys.executable, __file__, "--torch-child", str(tmp), "--batch-size",
         str(args.batch_size), "--epochs", str(args.epochs), "--windows", str(args.windows),
         "--precision", args.precision, "--torch-threads", str(args.torch_threads)]
        + (["--evidence"] if args.evidence else []),
        capture_output=True, text=True)
    if done.returncode == 3:
        return None
    if done.returncode != 0:
        raise RuntimeError(
            f"the torch peer failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_child(args) -> int:
    """`--torch-child DIR`: time the PyTorch peer on DIR/x.npy, DIR/y.npy; print one JSON line."""
    x = np.load(Path(args.torch_child) / "x.npy")
    y = np.load(Path(args.torch_child) / "y.npy")
    try:
        times = bench_torch(x, y, args)
        evidence = torch_evidence(x, y, args.precision) if args.evidence else []
    except ImportError:
        return 3
    print(json.dumps({"times": times, "evidence": evidence}), flush=True)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs, after one warm-up epoch")
    p.add_argument("--windows", type=int, default=16384, help="training windows per epoch")
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="pulsecast paths: TrainConfig.steps_per_execution")
    p.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                   help="pulsecast paths: TrainConfig.jit_compile (XLA)")
    p.add_argument("--workers", type=int, default=0,
                   help="pulsecast path: PyDataset worker threads (0 = in the training thread)")
    p.add_argument("--paths", default="pulsecast,pulsecast_device,keras_numpy,torch",
                   help="comma-separated subset of pulsecast,pulsecast_device,keras_numpy,torch")
    p.add_argument("--repeats", type=int, default=1,
                   help="side-by-side runs in one call; prints each run's ratio and the median")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch peer: torch.set_num_threads (0 = torch's own default)")
    p.add_argument("--evidence", action="store_true", help="print cuDNN dispatch evidence")
    p.add_argument("--torch-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.epochs < 1 or args.windows < args.batch_size:
        p.error("need batch-size >= 1, epochs >= 1 and windows >= batch-size")
    if args.repeats < 1 or args.torch_threads < 0:
        p.error(f"need repeats >= 1 and torch-threads >= 0, got {args.repeats} and "
                f"{args.torch_threads}")
    args.jit_compile = {"true": True, "false": False}.get(args.jit_compile, "auto")
    args.windows -= args.windows % args.batch_size  # whole batches only, for every path
    return args


def run_paths(args, paths: list[str], tmp: Path, root: Path, x: np.ndarray, y: np.ndarray,
              backend: str) -> tuple[dict[str, float | None], list[str], list[str]]:
    """One side-by-side run: windows/s of each path in `paths`, plus notes and evidence lines."""
    results: dict[str, float | None] = {}
    notes, evidence = [], []
    if "pulsecast" in paths:
        times, model = bench_pulsecast(root, args)
        results["pulsecast"] = args.windows / statistics.median(times[1:])
        if args.evidence:
            evidence += cudnn_evidence(model, x, y, backend)
        _progress("pulsecast", results["pulsecast"])
    if "pulsecast_device" in paths:
        times = bench_pulsecast_device(root, args)
        results["pulsecast_device"] = args.windows / statistics.median(times[1:])
        _progress("pulsecast_device", results["pulsecast_device"])
    if "keras_numpy" in paths:
        times, model = bench_keras_numpy(x, y, args)
        results["keras_numpy"] = args.windows / statistics.median(times[1:])
        _progress("keras_numpy", results["keras_numpy"])
    if "torch" in paths:
        child = run_torch_child(tmp, x, y, args)
        if child is None:
            notes.append("torch is not installed: the PyTorch peer was skipped "
                         "(pip install '.[bench]')")
        else:
            results["torch"] = args.windows / statistics.median(child["times"][1:])
            _progress("torch", results["torch"])
            evidence += child["evidence"]
    return results, notes, evidence


def best_ratio(results: dict[str, float | None]) -> tuple[float | None, str | None, str | None]:
    """(pulsecast's faster path / the faster peer, that path, that peer)."""
    peers = {k: v for k, v in results.items() if k not in PULSECAST_PATHS and v}
    best_peer_path = max(peers, key=peers.get) if peers else None
    ours = {k: v for k, v in results.items() if k in PULSECAST_PATHS and v}
    best_path = max(ours, key=ours.get) if ours else None
    pulse, peer = ours.get(best_path), peers.get(best_peer_path)
    return (pulse / peer if pulse and peer else None), best_path, best_peer_path


def print_table(results: dict[str, float | None]) -> None:
    ratio, best_path, best_peer_path = best_ratio(results)
    best_peer = results.get(best_peer_path) if best_peer_path else None
    print(f"\n{'path':<18}{'windows/s':>12}{'vs best peer':>14}")
    for name, wps in results.items():
        rel = f"{wps / best_peer:.2f}x" if best_peer and wps else "-"
        print(f"{name:<18}{wps or 0:>12.0f}{rel:>14}")
    if ratio:
        print(f"ratio_vs_best_peer: pulsecast's best path {best_path} / {best_peer_path} "
              f"= {ratio:.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.torch_child:
        return torch_child(args)
    import keras

    keras.config.set_dtype_policy(args.precision)
    device, backend = describe_device()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    print(f"device: {device}\nbackend: {backend}  keras {keras.__version__}  "
          f"precision {args.precision}  batch {args.batch_size}  windows/epoch {args.windows}  "
          f"timed epochs {args.epochs} (+1 warm-up)  repeats {args.repeats}", flush=True)
    runs: list[dict[str, float | None]] = []
    notes, evidence = [], []
    with tempfile.TemporaryDirectory(prefix="pulsecast-bench-") as tmp:
        root = Path(tmp) / "dataset"
        write_synthetic_dataset(root, args.windows)
        from pipelines.dataset.contract import load_dataset
        from pipelines.windows.batcher import WindowBatcher
        from pipelines.windows.spec import WindowSpec

        spec = WindowSpec(INPUT_STEPS, HORIZON, 1, (CHANNEL,), (CHANNEL,))
        x, y = WindowBatcher(load_dataset(root), spec, "train").materialize()
        for r in range(args.repeats):
            if args.repeats > 1:
                print(f"run {r + 1} of {args.repeats}", flush=True)
            results, notes, more = run_paths(args, paths, Path(tmp), root, x, y, backend)
            evidence += more if r == 0 else []
            runs.append(results)
            if args.repeats > 1:
                print_table(results)
    keras.config.set_dtype_policy("float32")
    # With repeats, each path's figure is its median over the runs and the ratio the median of
    # the runs' own side-by-side ratios (each from paths timed minutes apart, not hours).
    results = {k: _median([run[k] for run in runs]) for k in runs[0]}
    ratios = [best_ratio(run)[0] for run in runs]
    ratio = _median(ratios)
    _, best_path, best_peer_path = best_ratio(results)
    if args.repeats > 1:
        print(f"\nmedian of {args.repeats} runs:")
    print_table(results)
    if args.repeats > 1 and ratio:
        spread = [f"{v:.3f}" for v in ratios if v]
        print(f"ratio_vs_best_peer over {args.repeats} runs: median {ratio:.3f} "
              f"(runs {', '.join(spread)})")
    for line in notes + evidence:
        print(line)

    def rounded(v):
        return round(v, 1) if v else None

    print(json.dumps({
        "pulsecast_windows_per_s": rounded(results.get("pulsecast")),
        "pulsecast_device_windows_per_s": rounded(results.get("pulsecast_device")),
        "keras_numpy_windows_per_s": rounded(results.get("keras_numpy")),
        "torch_windows_per_s": rounded(results.get("torch")),
        "ratio_vs_best_peer": round(ratio, 3) if ratio else None,
        "ratio_runs": [round(v, 3) if v else None for v in ratios],
        "ratio_pulsecast_path": best_path, "ratio_peer_path": best_peer_path,
        "device": device, "backend": backend, "precision": args.precision,
        "batch_size": args.batch_size, "windows": args.windows, "epochs": args.epochs,
        "repeats": args.repeats, "steps_per_execution": args.steps_per_execution,
        "jit_compile": args.jit_compile, "workers": args.workers,
        "torch_threads": args.torch_threads,
    }), flush=True)
    return 0


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v]
    return statistics.median(known) if known else None


if __name__ == "__main__":
    sys.exit(main())
