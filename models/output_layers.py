"""Weightless output layers of the forecast heads: ordered quantiles and the last-value anchor.

`OrderedQuantiles` turns raw scores into non-crossing quantiles by construction; `AnchorLast`
adds each target's last observed value, so an anchored head forecasts the change from it (an
untrained anchored model is persistence). Built into models by `models.architectures`; registered
for `keras.saving` by name (`pulsecast>OrderedQuantiles`, `pulsecast>AnchorLast`).
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="pulsecast")
class OrderedQuantiles(layers.Layer):
    """Raw `(..., Q)` scores -> non-crossing quantiles: a base plus cumulative softplus increments.

    q_0 = s_0 and q_j = q_{j-1} + softplus(s_j), so q_0 <= q_1 <= ... for any weights: quantile
    crossing is impossible by construction rather than penalised. No weights.
    """

    def call(self, scores):
        base = scores[..., :1]
        steps = ops.softplus(scores[..., 1:])
        return ops.concatenate([base, base + ops.cumsum(steps, axis=-1)], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="pulsecast")
class AnchorLast(layers.Layer):
    """`[y, z]` -> y + the last step of z's `positions` channels, broadcast over y's horizon.

    y `(B, H, K)` or `(B, H, K, Q)` (standardized change from the last value), z `(B, T, C)` the
    standardized input. No weights.
    """

    def __init__(self, positions, **kwargs):
        super().__init__(**kwargs)
        self.positions = [int(p) for p in positions]

    def call(self, inputs):
        y, z = inputs
        last = ops.expand_dims(ops.take(z[:, -1, :], self.positions, axis=1), 1)  # (B, 1, K)
        if len(y.shape) == 4:
            last = ops.expand_dims(last, -1)  # (B, 1, K, 1)
        return y + last

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "positions": self.positions}
