"""Per-window standardization layers: each window in its own units, and back.

A forecast head that works on `(z - loc) / scale`, with `loc` and `scale` taken over the window's
own last samples, is shift- and scale-equivariant: it carries from the synthetic cohort to real
records with other gains and baselines. The cycle head (`models.cycle`,
`models.architectures`) is built on these:

    z (B, T, C) -> WindowScale -> [scaled (B, T, C), loc (B, 1, K), scale (B, 1, K)]
    y (B, H, K) (+ quantiles (B, H, K, Q) around it) -> WindowUnscale -> y * scale + loc

No weights; only `keras.ops`, so they run on TensorFlow, JAX and PyTorch. Registered for
`keras.saving` as `pulsecast>WindowScale` / `pulsecast>WindowUnscale` (by name, not module).
"""

from __future__ import annotations

import keras
from keras import layers, ops


def target_positions_list(target_positions, n: int | None = None) -> list[int]:
    """`target_positions` as a list of ints; ValueError when empty or, given `n` channels, out
    of range."""
    positions = [int(p) for p in target_positions]
    if not positions:
        raise ValueError("target_positions must name at least one channel, got []")
    if n is not None and (min(positions) < 0 or max(positions) >= n):
        raise ValueError(f"target_positions {positions} out of range for {n} channels")
    return positions


@keras.saving.register_keras_serializable(package="pulsecast")
class WindowScale(layers.Layer):
    """Per-window standardization: `(z - m) / s` per channel, m and s over the last `steps` samples.

    Input `(B, T, C)`. Outputs `[scaled (B, T, C), loc (B, 1, K), scale (B, 1, K)]`, the last two
    for the target channels (`target_positions`) so `WindowUnscale` can map a forecast back. A
    model built on scaled windows is shift- and scale-equivariant, which is what lets it move
    from the synthetic cohort to real records with other gains and baselines. No weights.
    """

    def __init__(self, steps: int, target_positions=(0,), min_scale: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if int(steps) < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        self.steps = int(steps)
        self.target_positions = target_positions_list(target_positions)
        self.min_scale = float(min_scale)

    def call(self, z):
        tail = z[:, -self.steps :, :]  # (B, W, C)
        loc = ops.mean(tail, axis=1, keepdims=True)  # (B, 1, C)
        scale = ops.sqrt(ops.mean(ops.square(tail - loc), axis=1, keepdims=True))
        # A flat window (lead off) is only centred, like Standardize's MIN_STD rule.
        scale = ops.maximum(scale, self.min_scale)
        idx = self.target_positions
        t_loc = ops.take(loc, idx, axis=2)  # (B, 1, K)
        t_scale = ops.take(scale, idx, axis=2)
        return [(z - loc) / scale, t_loc, t_scale]

    def compute_output_shape(self, input_shape):
        b, _, _ = input_shape
        k = len(self.target_positions)
        return [tuple(input_shape), (b, 1, k), (b, 1, k)]

    def get_config(self):
        return {**super().get_config(), "steps": self.steps,
                "target_positions": self.target_positions, "min_scale": self.min_scale}


@keras.saving.register_keras_serializable(package="pulsecast")
class WindowUnscale(layers.Layer):
    """`(y + offset) * scale + loc`, back from per-window units. No weights.

    Inputs `[y, loc (B, 1, K), scale (B, 1, K)]` with `y` `(B, H, K)`, or `(B, H, K, Q)` plus a
    fourth input `offset (B, H, K)` (the point forecast the quantiles are centred on).
    """

    def call(self, inputs):
        y, loc, scale = inputs[:3]
        if len(inputs) == 4:  # quantiles (B, H, K, Q) around the point forecast (B, H, K)
            loc, scale = ops.expand_dims(loc, -1), ops.expand_dims(scale, -1)
            y = y + ops.expand_dims(inputs[3], -1)
        return y * scale + loc

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
