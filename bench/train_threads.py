"""CPU threading and graph knobs for the Keras LSTM train step, side by side (issue 4).

`bench/train.py` compares pulsecast's fit path with plain Keras and PyTorch in one process. This
one asks what the TensorFlow CPU runtime itself leaves on the table at the reference shape
(window 256, 1 channel, LSTM 64, Dense 32, batch 256, Adam, MSE): each variant trains the same
plain `Input -> LSTM(64) -> Dense(32)` model in its **own process** (thread pools and oneDNN are
fixed when TensorFlow starts), one warm-up epoch, then `--epochs` timed epochs; the figure is the
median epoch in training windows/s and the ratio is against the default-settings variant of
the same run. Variants:

- `default`: TensorFlow's thread pools as shipped (both sized to the cores), oneDNN on.
- `intra1_inter1`: one thread for everything (is the second core used at all?).
- `intra1_inter2`: single-threaded ops, two independent ops at a time.
- `split2`: the batch cut in two halves inside the graph, each half through the same LSTM
  layer (same weights, same maths), so two recurrent loops can run at once.
- `split2_devices`: the same with each half pinned to its own logical CPU device (two graph
  partitions, two executors).
- `unroll`: `LSTM(unroll=True)`: a static 256-step graph instead of a while loop.
- `onednn_off`: `TF_ENABLE_ONEDNN_OPTS=0` (Eigen kernels).

    python bench/train_threads.py [--windows 4096] [--epochs 8] [--only default,split2]

Ends with one JSON line: windows/s and ratio per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

T, D, H, HORIZON, BATCH = 256, 1, 64, 32, 256

VARIANTS: dict[str, dict] = {
    "default": {},
    "intra1_inter1": {"intra": 1, "inter": 1},
    "intra1_inter2": {"intra": 1, "inter": 2},
    "intra1_inter4": {"intra": 1, "inter": 4},
    "intra1_inter2_split2": {"intra": 1, "inter": 2, "split": 2},
    "intra1_inter2_unroll": {"intra": 1, "inter": 2, "unroll": True},
    "split2": {"split": 2},
    "split2_devices": {"split": 2, "devices": 2},
    "unroll": {"unroll": True},
    "onednn_off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
}


def run_variant(knobs: dict, windows: int, epochs: int) -> list[float]:
    """Train the plain model under `knobs` in this process; windows/s of each timed epoch."""
    import numpy as np
    import tensorflow as tf

    if "intra" in knobs:
        tf.config.threading.set_intra_op_parallelism_threads(knobs["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(knobs["inter"])
    n_dev = knobs.get("devices", 1)
    if n_dev > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n_dev)])
    import keras

    class BatchSplit(keras.layers.Layer):
        """The wrapped layer on `parts` slices of the batch, concatenated back (same weights)."""

        def __init__(self, inner, parts: int, devices: int, **kwargs):
            super().__init__(**kwargs)
            self.inner, self.parts, self.devices = inner, parts, devices

        def build(self, input_shape):
            self.inner.build(input_shape)

        def call(self, x):
            n = keras.ops.shape(x)[0]
            cuts = [(n * i) // self.parts for i in range(self.parts + 1)]
            outs = []
            for i in range(self.parts):
                with tf.device(f"/device:CPU:{i % self.devices}"):
                    outs.append(self.inner(x[cuts[i]:cuts[i + 1]]))
            return keras.ops.concatenate(outs, axis=0)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], H)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((windows, T, D)).astype("float32")
    y = rng.standard_normal((windows, HORIZON)).astype("float32")
    inp = keras.Input((T, D))
    lstm = keras.layers.LSTM(H, unroll=bool(knobs.get("unroll")))
    split = knobs.get("split", 1)
    h = BatchSplit(lstm, split, n_dev)(inp) if split > 1 else lstm(inp)
    model = keras.Model(inp, keras.layers.Dense(HORIZON)(h))
    model.compile("adam", "mse")
    rates: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            rates.append(windows / (time.perf_counter() - self.t0))

    model.fit(x, y, batch_size=BATCH, epochs=epochs + 1, shuffle=False, verbose=0,
              callbacks=[Timer()])
    return rates[1:]  # the first epoch traces the graph


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=8, help="timed epochs per variant")
    parser.add_argument("--only", default="", help="comma-separated variants (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one variant, in its own process
        rates = run_variant(VARIANTS[args.child], args.windows, args.epochs)
        print(json.dumps({"rates": rates}))
        return 0
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if "default" not in names:
        names.insert(0, "default")
    results: dict[str, float] = {}
    for name in names:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **VARIANTS[name].get("env", {})}
        out = subprocess.run(
            [sys.executable, __file__, "--child", name, "--windows", str(args.windows),
             "--epochs", str(args.epochs)],
            env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"  {name}: failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
            continue
        rates = json.loads(out.stdout.strip().splitlines()[-1])["rates"]
        results[name] = statistics.median(rates)
        print(f"  {name}: {results[name]:.0f} windows/s (epochs {[round(r) for r in rates]})",
              flush=True)
    base = results.get("default")
    print(f"\n{'variant':16s} {'windows/s':>10s}  vs default")
    for name, wps in results.items():
        ratio = f"{wps / base:.2f}x" if base else "-"
        print(f"{name:16s} {wps:10.0f}  {ratio}")
    print(json.dumps({"bench": "train_threads", "windows": args.windows, "epochs": args.epochs,
                      "windows_per_s": {k: round(v, 1) for k, v in results.items()},
                      "ratio_vs_default": {k: round(v / base, 3) for k, v in results.items()}
                      if base else {}}))
    return 0 if base else 1


if __name__ == "__main__":
    sys.exit(main())
