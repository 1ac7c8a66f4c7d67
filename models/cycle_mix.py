"""The `cycle_mix` head: a recurrent network that learns, per window and horizon step, how to mix
cycle-aligned copies of the past, plus a residual.

Owns the head's builder (`cycle_mix_outputs`, called by `models.architectures.build_model`) and
its four weightless layers. Why this head: on the challenge-2015 cohort (lead II and ABP, 8 s in,
1 s out at 125 Hz) a fixed median of cycle copies beats every classical baseline, a residual on
top of that median gains little (it cannot move a beat in time), and a plain LSTM does not even
beat the last cycle; an LSTM that *chooses among* the copies step by step is what learns.

    signal (B, T, C) -> Standardize -> WindowScale -> zs (B, T, C), loc, scale (B, 1, K)
    zs -> CycleCandidates (models.cycle)                               cands (B, H, K, N)
    zs -> AveragePooling1D(encoder_pool) -> LSTM(u) "lstm_1" -> RepeatVector(H)   (B, H, u)
    HorizonFeatures([cands, zs]) -> per step: cands, cands sorted, their median, last - median,
                                    h / H                              (B, H, 2KN + 2K + 1)
                                 -> what may be mixed: [cands, median, last]   (B, H, K, N + 2)
    concat -> LSTM(u) over the horizon "decoder" (+ "decoder_backward" over it reversed)
                                                                       (B, H, u or 2u)
    Dense(K(N + 2)) "mix_logits" -> SoftmaxMix: per step and target, a convex mix   (B, H, K)
    Dense(K) "residual_head" -> ResidualFade (0 at the origin, ~1 after a few fade steps)
    mix + residual -> WindowUnscale -> de-standardize -> forecast (B, H, K) in physical units

At initialisation both Dense kernels are zero: the mix weights are the softmax of the bias, which
puts `MEDIAN_LOGIT` on the median (weight e^3 / (e^3 + N + 1) = 0.69 for N = 8, 0.034 on each
copy and on the last value) and the residual is 0. So an untrained model is (almost) the cycle
median and training starts from the best non-learned forecast. The two decoder directions are two
LSTMs (pulsecast's, `models.fused_lstm`), the backward one reading the horizon reversed (what
`Bidirectional` computes), so that both train through the fused CPU kernel (`go_backwards` is not
eligible for it) and both are cuDNN-eligible on a GPU. (`arch = "gru"` etc. build the same head
of GRUs or simple RNNs; the recipes use LSTMs.)

Only `keras.layers` / `keras.ops`: the head runs on TensorFlow, JAX and PyTorch. Parameters:
`models.params.cycle_mix_head_params`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers, ops

from models.cycle import CycleCandidates
from models.normalization import NormStats, make_output_denormalizer
from models.output_layers import OrderedQuantiles
from models.spec import ModelSpec
from models.window_scale import WindowScale, WindowUnscale, target_positions_list

# Softmax logit of the median at initialisation (0 for each copy and for the last value).
MEDIAN_LOGIT = 3.0


@keras.saving.register_keras_serializable(package="pulsecast")
class HorizonFeatures(layers.Layer):
    """`[cands (B, H, K, N), zs (B, T, C)]` -> `[features (B, H, F), pool (B, H, K, N + 2)]`.

    Features per horizon step (F = 2KN + 2K + 1): the N copies of each target, the same sorted
    (rank order, so the network sees the spread whatever copy holds which value), their median,
    the last observed value minus the median, and h / H. `pool` holds what the head may mix:
    the N copies, their median and the last value. Window-scaled units. No weights.
    """

    def __init__(self, target_positions=(0,), **kwargs):
        super().__init__(**kwargs)
        self.target_positions = target_positions_list(target_positions)

    def call(self, inputs):
        cands, zs = inputs
        _, h, k, n = cands.shape
        ranked = ops.sort(cands, axis=-1)  # (B, H, K, N)
        median = 0.5 * (ranked[..., (n - 1) // 2] + ranked[..., n // 2])  # (B, H, K)
        last = ops.take(zs[:, -1, :], self.target_positions, axis=1)  # (B, K)
        last = ops.expand_dims(last, 1) + ops.zeros_like(median)  # (B, H, K)
        step = ops.arange(h, dtype=cands.dtype) / float(h)  # (H,)
        step = ops.expand_dims(ops.zeros_like(median[..., 0]) + step, -1)  # (B, H, 1)
        flat = (-1, h, k * n)
        features = ops.concatenate([ops.reshape(cands, flat), ops.reshape(ranked, flat), median,
                                    last - median, step], axis=-1)
        pool = ops.concatenate([cands, ops.expand_dims(median, -1), ops.expand_dims(last, -1)],
                               axis=-1)
        return [features, pool]

    def compute_output_shape(self, input_shape):
        b, h, k, n = input_shape[0]
        return [(b, h, 2 * k * n + 2 * k + 1), (b, h, k, n + 2)]

    def get_config(self):
        return {**super().get_config(), "target_positions": self.target_positions}


@keras.saving.register_keras_serializable(package="pulsecast")
class SoftmaxMix(layers.Layer):
    """`[logits (B, H, K * M), pool (B, H, K, M)]` -> `(B, H, K)`: softmax(logits) . pool per step
    and target. A convex mix: the forecast stays within the range of what it mixes. No weights."""

    def call(self, inputs):
        logits, pool = inputs
        weights = ops.softmax(ops.reshape(logits, (-1, *pool.shape[1:])), axis=-1)
        return ops.sum(weights * pool, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1][:-1])


@keras.saving.register_keras_serializable(package="pulsecast")
class ResidualFade(layers.Layer):
    """`(B, H, K)` -> the same times `1 - exp(-h / fade_steps)`, h = 0 .. H-1. No weights.

    The cycle copies already meet the last observed sample at the origin; a residual there only
    breaks that continuity, so it is faded in over the first `fade_steps` samples.
    """

    def __init__(self, fade_steps: float, **kwargs):
        super().__init__(**kwargs)
        if float(fade_steps) <= 0:
            raise ValueError(f"fade_steps must be > 0 samples, got {fade_steps}")
        self.fade_steps = float(fade_steps)

    def call(self, res):
        h = ops.arange(res.shape[1], dtype=res.dtype)
        fade = 1.0 - ops.exp(-h / self.fade_steps)  # (H,)
        return res * ops.reshape(fade, (1, -1, 1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "fade_steps": self.fade_steps}


@keras.saving.register_keras_serializable(package="pulsecast")
class TimeReverse(layers.Layer):
    """`(B, T, F)` -> the same with the time axis reversed. No weights."""

    def call(self, x):
        return ops.flip(x, axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


# `recurrent(spec, units, name=..., **kwargs)` -> one recurrent layer of `spec.arch`
# (`models.architectures._recurrent_layer`: for `lstm`, pulsecast's fused-on-CPU LSTM).
RecurrentFactory = Callable[..., layers.Layer]


def _decoder(spec: ModelSpec, x, recurrent: RecurrentFactory):
    """`(B, H, F)` -> `(B, H, u)`, or `(B, H, 2u)` read both ways when `spec.bidirectional`."""
    u = spec.units[0]
    forward = recurrent(spec, u, name="decoder", return_sequences=True)(x)
    if not spec.bidirectional:
        return forward
    backward = recurrent(spec, u, name="decoder_backward", return_sequences=True)(
        TimeReverse(name="horizon_reversed")(x))
    backward = TimeReverse(name="decoder_backward_in_time")(backward)
    return layers.Concatenate(name="decoder_both_ways")([forward, backward])


def cycle_mix_outputs(spec: ModelSpec, z, stats: NormStats, recurrent: RecurrentFactory) -> dict:
    """The head on standardized windows `z` `(B, T, C)`: `{"forecast": (B, H, K)}` in physical
    units (+ `"quantiles"` `(B, H, K, Q)` when `spec.quantiles`); its encoder and decoder are
    `recurrent` layers of `spec.arch`."""
    h, k, n = spec.horizon, spec.n_targets, spec.cycle_candidates
    positions = spec.targets_in_inputs
    stats = stats.targets_from_inputs(positions)  # the forecast is built from the targets' past
    zs, loc, scale = WindowScale(spec.max_period_steps, positions, name="window_scale")(z)
    cands = CycleCandidates(h, spec.min_period_steps, spec.max_period_steps, spec.search_steps,
                            n, positions, align=spec.cycle_align, match_steps=spec.match_steps,
                            level_decay=float(spec.level_decay_steps),
                            name="cycle_candidates")(zs)  # (B, H, K, N)
    enc = zs
    if spec.encoder_pool > 1:
        enc = layers.AveragePooling1D(spec.encoder_pool, name="encoder_pool")(zs)
    context = recurrent(spec, spec.units[0], name=f"{spec.arch}_1")(enc)  # (B, u): rhythm, shape
    context = layers.RepeatVector(h, name="repeat_context")(context)  # (B, H, u)
    features, pool = HorizonFeatures(positions, name="horizon_features")([cands, zs])
    steps = layers.Concatenate(name="decoder_features")([features, context])
    seq = _decoder(spec, steps, recurrent)  # (B, H, u or 2u)
    bias = [0.0] * n + [MEDIAN_LOGIT, 0.0]  # per target: the copies, the median, the last value
    logits = layers.Dense(k * (n + 2), kernel_initializer="zeros",
                          bias_initializer=keras.initializers.Constant(bias * k),
                          name="mix_logits")(seq)  # (B, H, K(N+2))
    centre = SoftmaxMix(name="cycle_mix")([logits, pool])  # (B, H, K), window units
    if spec.residual:
        res = layers.Dense(k, kernel_initializer="zeros", name="residual_head")(seq)  # (B, H, K)
        if spec.residual_fade_steps > 0:
            res = ResidualFade(spec.residual_fade_steps, name="residual_fade")(res)
        centre = layers.Add(name="mix_plus_residual")([centre, res])
    y = WindowUnscale(name="window_unscale")([centre, loc, scale])  # standardized units
    outputs = {"forecast": make_output_denormalizer(stats, name="forecast")(y)}
    if spec.probabilistic:
        n_q = len(spec.quantiles)
        q = layers.Dense(k * n_q, name="quantile_head")(seq)  # (B, H, K*Q)
        q = layers.Reshape((h, k, n_q), name="quantile_reshape")(q)
        q = OrderedQuantiles(name="quantile_order")(q)
        q = WindowUnscale(name="quantile_unscale")([q, loc, scale, centre])
        outputs["quantiles"] = make_output_denormalizer(stats, name="quantiles", axis=2)(q)
    return outputs
