"""Losses for probabilistic recipes: the pinball (quantile) loss, backend-neutral via `keras.ops`.

For a level q and error e = y - y_hat, pinball(e) = max(q * e, (q - 1) * e): under-forecasts cost
q per unit, over-forecasts 1 - q, so its minimiser is the q-quantile of y given the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


def pinball_loss(y_true, y_pred, quantiles: Sequence[float]):
    """Mean pinball loss over batch, horizon, targets and quantile levels.

    `y_true`: `(batch, horizon, n_targets)`; `y_pred`: `(batch, horizon, n_targets, n_quantiles)`,
    same units. Returns a scalar tensor.
    """
    levels = [float(q) for q in quantiles]
    if not levels:
        raise ValueError("pinball_loss needs at least one quantile level, got []")
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    q = ops.reshape(ops.convert_to_tensor(levels, dtype=y_pred.dtype), (1, 1, 1, len(levels)))
    err = ops.expand_dims(y_true, -1) - y_pred  # (B, H, K, Q)
    return ops.mean(ops.maximum(q * err, (q - 1.0) * err))


@keras.saving.register_keras_serializable(package="pulsecast")
class PinballLoss(keras.losses.Loss):
    """`pinball_loss` as a Keras loss for the `quantiles` output (serializable with its levels)."""

    def __init__(self, quantiles: Sequence[float], name: str = "pinball", **kwargs):
        super().__init__(name=name, **kwargs)
        self.quantiles = tuple(float(q) for q in quantiles)
        if not self.quantiles:
            raise ValueError("PinballLoss needs at least one quantile level, got ()")

    def call(self, y_true, y_pred):
        # Per-sample values so Keras' reduction and sample weights apply as for any loss.
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
        n = len(self.quantiles)
        q = ops.reshape(ops.convert_to_tensor(self.quantiles, dtype=y_pred.dtype), (1, 1, 1, n))
        err = ops.expand_dims(y_true, -1) - y_pred  # (B, H, K, Q)
        return ops.mean(ops.maximum(q * err, (q - 1.0) * err), axis=(1, 2, 3))  # (B,)

    def get_config(self):
        return {**super().get_config(), "quantiles": list(self.quantiles)}
