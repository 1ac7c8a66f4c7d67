"""Compare bench/probes/fused_lstm.cc's dump with Keras: the last hidden state and the gradients
of its sum with respect to the LSTM's kernel, recurrent kernel and bias.

    python bench/probes/check_fused_lstm.py DUMP_DIR     # after `fused_lstm DUMP_DIR`

Prints the largest relative errors and exits 1 if any exceeds 1e-4.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

T, B, H = 256, 256, 64


def main(dump: Path) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    def read(name: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.fromfile(dump / name, dtype=np.float32).reshape(shape)

    x = read("x", (T, B, 1)).transpose(1, 0, 2)  # time-major in the dump
    layer = keras.layers.LSTM(H)
    layer.build((None, T, 1))
    cell = layer.cell
    cell.kernel.assign(read("W", (1, 4 * H)))
    cell.recurrent_kernel.assign(read("U", (H, 4 * H)))
    cell.bias.assign(np.zeros(4 * H, np.float32))
    with tf.GradientTape() as tape:
        h = layer(tf.constant(x))
        loss = tf.reduce_sum(h)
    grads = tape.gradient(loss, [cell.kernel, cell.recurrent_kernel, cell.bias])
    ours = {"h": read("h", (B, H)), "dW": read("dW", (1, 4 * H)), "dU": read("dU", (H, 4 * H)),
            "db": read("db", (4 * H,))}
    theirs = {"h": h.numpy(), "dW": grads[0].numpy(), "dU": grads[1].numpy(),
              "db": grads[2].numpy()}
    worst = 0.0
    for name, value in ours.items():
        ref = theirs[name]
        err = float(np.abs(value - ref).max() / np.abs(ref).max())
        worst = max(worst, err)
        print(f"{name}: max |fused - keras| / max |keras| = {err:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
