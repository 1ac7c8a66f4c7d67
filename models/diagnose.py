"""The vanishing-gradient picture, measured: |dLoss/dx_t| for every input step t.

A plain tanh RNN forgets: the gradient reaching old input steps shrinks geometrically with the
distance to the forecast origin, so it cannot learn from them. An IRNN (ReLU + identity recurrence)
and an LSTM (additive cell state, forget gate open at init) keep it alive. This module trains each
briefly on the same windows, then measures the per-step gradient norm of the forecast loss with
respect to the input window. Gradients use tf.GradientTape on TensorFlow and jax.grad on JAX.

Writes nothing itself except `write_gradient_plot` (one PNG).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from models.spec import ModelSpec

DEFAULT_ARCHS: tuple[str, ...] = ("simplernn", "irnn", "lstm")


def make_sine_windows(
    n_windows: int, input_steps: int, horizon: int, n_channels: int = 1, n_targets: int = 1,
    noise: float = 0.1, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic sine + Gaussian noise windows: x `(N, T, C)`, y `(N, H, K)` float32.

    Each window has its own period (20 to 80 samples) and phase per channel; targets are the
    continuation of the first `n_targets` channels.
    """
    if n_targets > n_channels:
        raise ValueError(f"n_targets must be <= n_channels ({n_channels}), got {n_targets}")
    rng = np.random.default_rng(seed)
    t = np.arange(input_steps + horizon)  # (T+H,)
    period = rng.uniform(20.0, 80.0, size=(n_windows, 1, n_channels))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_windows, 1, n_channels))
    clean = np.sin(2 * np.pi * t[None, :, None] / period + phase)  # (N, T+H, C)
    series = clean + noise * rng.standard_normal(clean.shape)
    x = series[:, :input_steps, :].astype(np.float32)
    y = clean[:, input_steps:, :n_targets].astype(np.float32)
    return x, y


def input_gradient_norms(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`(input_steps,)`: L2 norm over batch and channels of d(MSE of `forecast`)/d(x[:, t, :])."""
    import keras

    backend = keras.backend.backend()
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            pred = model(xt, training=False)["forecast"]
            loss = tf.reduce_mean(tf.square(pred - y))
        grad = tape.gradient(loss, xt).numpy()
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss_fn(xb):
            out, _ = model.stateless_call(trainable, frozen, xb, training=False)
            return jnp.mean(jnp.square(out["forecast"] - y))

        grad = np.asarray(jax.grad(loss_fn)(jnp.asarray(x)))
    else:
        raise ValueError(
            f"diagnose gradients supports the tensorflow and jax backends, got {backend!r}"
        )
    return np.sqrt(np.sum(np.square(grad), axis=(0, 2)))  # (T,)


def compute_gradient_profiles(
    spec: ModelSpec, x: np.ndarray, y: np.ndarray, archs: tuple[str, ...] = DEFAULT_ARCHS,
    epochs: int = 2, batch_size: int = 64, seed: int = 0, probe: int = 128,
) -> dict[str, np.ndarray]:
    """Train each arch briefly on the same `(x, y)` and measure its per-step input gradient norms.

    `spec` gives units, window and targets (its `arch` is replaced per run; quantiles dropped).
    The gradient is measured on the first `probe` windows after training. Returns arch ->
    `(input_steps,)`.
    """
    import keras

    from models.architectures import build_model
    from models.normalization import fit_norm_stats

    norm = fit_norm_stats(x, y)
    profiles: dict[str, np.ndarray] = {}
    for arch in archs:
        keras.utils.set_random_seed(seed)  # same init stream and batch order for every arch
        run_spec = dataclasses.replace(spec, arch=arch, quantiles=(), bidirectional=False)
        model = build_model(run_spec, norm)
        # Clipping keeps the ReLU IRNN from diverging in its first steps (Le et al. clip too).
        model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=1.0), loss={"forecast": "mse"})
        if epochs > 0:
            model.fit(x, {"forecast": y}, epochs=epochs, batch_size=batch_size, verbose=0)
        profiles[arch] = input_gradient_norms(model, x[:probe], y[:probe])
    return profiles


def format_gradient_table(profiles: dict[str, np.ndarray], n_rows: int = 10) -> str:
    """Norms at `n_rows` evenly spaced input steps (oldest first), then the oldest/newest ratio."""
    archs = list(profiles)
    n_steps = len(next(iter(profiles.values())))
    steps = np.unique(np.linspace(0, n_steps - 1, num=min(n_rows, n_steps)).round().astype(int))
    header = ["t", "lag"] + archs
    lines = [header]
    for t in steps:
        lines.append([str(t), str(n_steps - t)] + [f"{profiles[a][t]:.3e}" for a in archs])
    ratio = []
    for a in archs:
        g = profiles[a]
        ratio.append(f"{g[0] / g[-1]:.2e}" if g[-1] > 0 else "n/a")
    lines.append(["oldest/newest", ""] + ratio)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_gradient_plot(profiles: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """One PNG: |dLoss/dx_t| against the lag to the forecast origin, log scale, a line per arch."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for arch, g in profiles.items():
        lag = np.arange(len(g), 0, -1)  # t = 0 is the oldest step, lag = T
        ax.semilogy(lag, np.maximum(g, 1e-30), label=arch)
    ax.invert_xaxis()
    ax.set_xlabel("input step, as lag before the forecast origin (samples)")
    ax.set_ylabel("‖dLoss/dx_t‖")
    ax.set_title(title or "Gradient reaching each input step after brief training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)  # atomic: a reader never sees half a PNG
    return path
