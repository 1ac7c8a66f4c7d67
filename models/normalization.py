"""In-graph normalization: raw physical units in, raw physical units out.

`NormStats` (pure, frozen) holds per-channel mean/std of the inputs and of the targets, fitted on
the train split only. `Standardize` is the Keras layer that applies them: `(x - mean) / std` on the
way in, `y * std + mean` (`invert=True`) on the way out. The statistics live in the layer as
non-trainable weights (and in its config), so a saved or exported model carries them: a stock TF
Serving client sends millivolts and gets millivolts, and train/serve skew cannot happen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

# A channel whose train std is below this (a flat line, a lead-off plateau) is only centred:
# dividing by ~0 would turn noise into huge inputs.
MIN_STD = 1e-6


@dataclass(frozen=True)
class NormStats:
    """Per-channel statistics in physical units: inputs `(n_channels,)`, targets `(n_targets,)`."""

    input_mean: tuple[float, ...]
    input_std: tuple[float, ...]
    target_mean: tuple[float, ...]
    target_std: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in ("input_mean", "input_std", "target_mean", "target_std"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values or not all(np.isfinite(values)):
                raise ValueError(f"NormStats.{name} must be non-empty and finite, got {values!r}")
            object.__setattr__(self, name, values)
        if len(self.input_mean) != len(self.input_std):
            raise ValueError(
                f"input_mean and input_std differ in length: "
                f"{len(self.input_mean)} != {len(self.input_std)}"
            )
        if len(self.target_mean) != len(self.target_std):
            raise ValueError(
                f"target_mean and target_std differ in length: "
                f"{len(self.target_mean)} != {len(self.target_std)}"
            )
        for name in ("input_std", "target_std"):
            if min(getattr(self, name)) <= 0:
                raise ValueError(f"NormStats.{name} must be > 0, got {getattr(self, name)!r}")

    def targets_from_inputs(self, positions: tuple[int, ...]) -> NormStats:
        """These stats with the target statistics replaced by the input statistics of the target
        channels (`positions`: each target's index among the inputs).

        A forecast built from the targets' own past (copied cycles, the last value) is in their
        *input* standardized units, so it goes back to physical units with the input statistics.
        The target statistics (over the target windows) differ slightly, and mapping a copied
        sample back with them moves it by (x - mean) * (std_t / std_in - 1) + (mean_t - mean_in).
        """
        return replace(self, target_mean=tuple(self.input_mean[i] for i in positions),
                       target_std=tuple(self.input_std[i] for i in positions))

    @classmethod
    def identity(cls, n_channels: int, n_targets: int) -> NormStats:
        """Mean 0, std 1: a model that is buildable before any data is seen (e.g. `inspect`)."""
        return cls((0.0,) * n_channels, (1.0,) * n_channels, (0.0,) * n_targets, (1.0,) * n_targets)


def _channel_stats(a: np.ndarray, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """NaN-aware mean/std over every axis but the last; std floored at MIN_STD -> 1."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"{name} must be (..., channels), got shape {a.shape}")
    flat = a.reshape(-1, a.shape[-1])
    finite = np.isfinite(flat).sum(axis=0)
    if np.any(finite == 0):
        column = int(np.argmin(finite))
        raise ValueError(f"{name} has a channel with no finite value (column {column})")
    mean = np.nanmean(flat, axis=0)
    std = np.nanstd(flat, axis=0)
    std = np.where(std < MIN_STD, 1.0, std)
    return tuple(mean.tolist()), tuple(std.tolist())


def fit_norm_stats(x: np.ndarray, y: np.ndarray) -> NormStats:
    """Fit `NormStats` on train windows, NaN-aware.

    `x`: `(batch, input_steps, n_channels)`, `y`: `(batch, horizon, n_targets)`, physical units
    (a `(time, channels)` signal works too: statistics reduce every axis but the last).
    """
    input_mean, input_std = _channel_stats(x, "x")
    target_mean, target_std = _channel_stats(y, "y")
    return NormStats(input_mean, input_std, target_mean, target_std)


def _standardize_class():
    """Define and register the Keras layer on first use, so importing this module stays cheap."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="pulsecast")
    class Standardize(keras.layers.Layer):
        """`(x - mean) / std` along `axis`, or `x * std + mean` with `invert=True`.

        `mean`/`std` are non-trainable weights of shape `(channels,)`, so `count_params()` shows
        2 * channels for this layer; they also sit in the config, so `from_config` alone rebuilds
        the same layer.
        """

        def __init__(self, mean, std, axis: int = -1, invert: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.mean_init = [float(v) for v in np.ravel(mean)]
            self.std_init = [float(v) for v in np.ravel(std)]
            if len(self.mean_init) != len(self.std_init):
                raise ValueError(
                    f"mean and std differ in length: {len(self.mean_init)} != {len(self.std_init)}"
                )
            self.axis = int(axis)
            self.invert = bool(invert)

        def build(self, input_shape):
            n = len(self.mean_init)
            if input_shape[self.axis] != n:
                raise ValueError(
                    f"layer {self.name!r} has {n} channel statistics but the input has "
                    f"{input_shape[self.axis]} on axis {self.axis} (shape {input_shape})"
                )
            self.mean = self.add_weight(
                name="mean", shape=(n,), trainable=False,
                initializer=keras.initializers.Constant(self.mean_init),
            )
            self.std = self.add_weight(
                name="std", shape=(n,), trainable=False,
                initializer=keras.initializers.Constant(self.std_init),
            )
            # Broadcast shape: channels on `axis`, 1 elsewhere (batch included).
            ndim = len(input_shape)
            axis = self.axis % ndim
            self._bshape = tuple(n if i == axis else 1 for i in range(ndim))

        def call(self, x):
            mean = ops.reshape(ops.cast(self.mean, x.dtype), self._bshape)
            std = ops.reshape(ops.cast(self.std, x.dtype), self._bshape)
            if self.invert:
                return x * std + mean
            return (x - mean) / std

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            config = super().get_config()
            config.update(
                mean=self.mean_init, std=self.std_init, axis=self.axis, invert=self.invert
            )
            return config

    return Standardize


@functools.cache
def standardize_layer_class():
    """The registered `Standardize` Keras layer class (defined once per process, on first use).

    Keras is imported here, not at module import, so `NormStats` stays cheap to import. Loading a
    saved `.keras` model needs the class registered first: import `models.architectures` (which
    touches it) or call this function.
    """
    return _standardize_class()


def __getattr__(name: str):
    # `from models.normalization import Standardize` works, lazily (PEP 562).
    if name == "Standardize":
        return standardize_layer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_input_normalizer(stats: NormStats, name: str = "normalize"):
    """Layer mapping `(batch, input_steps, n_channels)` raw units to standardized units."""
    return standardize_layer_class()(stats.input_mean, stats.input_std, axis=-1, name=name)


def make_output_denormalizer(stats: NormStats, name: str, axis: int = -1):
    """Layer mapping standardized target units back to physical units along `axis`."""
    return standardize_layer_class()(
        stats.target_mean, stats.target_std, axis=axis, invert=True, name=name
    )
