"""Forecasting model builders: one `ModelSpec` in, one uncompiled `keras.Model` out.

Every model maps a window of raw physical units to a forecast in raw physical units:

    signal (B, T, C) -> normalize -> core -> head -> denormalize -> forecast (B, H, K)
                                               \\-> quantile head -> quantiles (B, H, K, Q)
                                               \\-> event head (+ signal, forecast, quantiles)
                                                    -> ahe_probability (B, 1)

Owns the builders (`build_model`, the truncated-BPTT twin `build_stateful_twin`, the losses); the
custom layers they use live beside them: `models.output_layers` (ordered quantiles, last-value
anchor), `models.window_scale`, `models.cycle`, `models.cycle_mix` (the `cycle_mix` head),
`models.events_keras` (event probabilities), `models.normalization`, `models.fused_lstm`.

Only `keras.layers` / `keras.ops`, so the same model runs on TensorFlow, JAX and PyTorch. Recurrent
layers keep the defaults that leave the fused cuDNN kernels eligible (tanh/sigmoid, no recurrent
dropout, unroll off, bias on); `models.params.check` reports it per layer.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models import fused_lstm
from models.cycle import CycleCandidates, CycleMedian, CycleMix
from models.cycle_mix import cycle_mix_outputs
from models.events_keras import event_losses, event_outputs
from models.losses import PinballLoss  # imported here so loading a compiled model finds it
from models.normalization import (
    NormStats,
    make_input_normalizer,
    make_output_denormalizer,
    standardize_layer_class,
)
from models.output_layers import AnchorLast, OrderedQuantiles
from models.spec import ModelSpec
from models.window_scale import WindowScale, WindowUnscale

# Full-rate samples at the end of the window that the cycle head's residual sees.
RECENT_STEPS = 32

# Registers `Standardize` at import, so `keras.saving.load_model` finds it after importing us.
Standardize = standardize_layer_class()


def _recurrent_layer(spec: ModelSpec, units: int, name: str, **kwargs) -> layers.Layer:
    """One recurrent layer of `spec.arch` (seq2seq layers are LSTMs)."""
    common = dict(dropout=spec.dropout, name=name, **kwargs)
    if spec.arch in ("lstm", "seq2seq"):
        # unit_forget_bias: a forget gate that starts open lets gradient through long windows.
        # pulsecast's LSTM: Keras' LSTM, trained through a fused native op on TF CPU.
        return fused_lstm.LSTM(units, unit_forget_bias=spec.forget_bias, **common)
    if spec.arch == "gru":
        return layers.GRU(units, reset_after=spec.gru_reset_after, **common)
    if spec.arch == "simplernn":
        return layers.SimpleRNN(units, activation="tanh", **common)
    if spec.arch == "irnn":
        # Le, Jaitly & Hinton 2015: ReLU units, identity recurrence, zero bias, small input
        # weights; the state is carried unchanged until the input says otherwise.
        return layers.SimpleRNN(
            units,
            activation="relu",
            recurrent_initializer=keras.initializers.Identity(),
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            bias_initializer="zeros",
            **common,
        )
    raise ValueError(f"arch {spec.arch!r} has no recurrent layer")


def _stacked_core(spec: ModelSpec, z):
    """(B, T, C) -> (B, h_last) through the stacked (optionally bidirectional) recurrent layers."""
    depth = len(spec.units)
    for i, units in enumerate(spec.units, start=1):
        last = i == depth
        name = f"{spec.arch}_{i}"
        layer = _recurrent_layer(spec, units, name=name, return_sequences=not last)
        if spec.bidirectional:
            layer = layers.Bidirectional(layer, name=f"bi_{name}")
        z = layer(z)  # (B, T, h_i) or (B, h_last); doubled widths when bidirectional
    return z


def _direct_core(spec: ModelSpec, z):
    """(B, T, C) -> (B, h_last): the flattened window through ReLU Dense layers (no recurrence)."""
    z = layers.Flatten(name="flatten")(z)  # (B, T*C)
    for i, units in enumerate(spec.units, start=1):
        z = layers.Dense(units, activation="relu", name=f"dense_{i}")(z)
        if spec.dropout > 0:
            z = layers.Dropout(spec.dropout, name=f"dropout_{i}")(z)
    return z


def _direct_heads(spec: ModelSpec, z, stats: NormStats, inputs=None, signal=None) -> dict:
    """(B, h) -> forecast (B, H, K) [+ quantiles (B, H, K, Q)]: all horizon steps at once.

    With `spec.anchor == "last"`, `inputs` (the standardized window `(B, T, C)`) gives the last
    observed value of each target, which the heads' outputs are added to (`AnchorLast`). With
    `spec.events`, `signal` (the raw window) feeds each event head (`models.events_keras`), which
    also reads the core's features `z` and the forecast in physical units: `ahe_probability`
    `(B, 1)`.
    """
    h, k = spec.horizon, spec.n_targets
    anchored = spec.anchor == "last"
    if anchored:
        stats = stats.targets_from_inputs(spec.targets_in_inputs)
    init = "zeros" if anchored else "glorot_uniform"  # anchored: start as persistence
    y = layers.Dense(h * k, kernel_initializer=init, name="head")(z)  # (B, H*K)
    y = layers.Reshape((h, k), name="head_reshape")(y)  # (B, H, K)
    if anchored:
        y = AnchorLast(spec.targets_in_inputs, name="anchor_last")([y, inputs])
    outputs = {"forecast": make_output_denormalizer(stats, name="forecast")(y)}
    if spec.probabilistic:
        n_q = len(spec.quantiles)
        q = layers.Dense(h * k * n_q, name="quantile_head")(z)  # (B, H*K*Q)
        q = layers.Reshape((h, k, n_q), name="quantile_reshape")(q)  # (B, H, K, Q)
        q = OrderedQuantiles(name="quantile_order")(q)
        if anchored:  # one shift of all quantiles: the order holds
            q = AnchorLast(spec.targets_in_inputs, name="quantile_anchor_last")([q, inputs])
        outputs["quantiles"] = _quantile_output(q, stats)
    if spec.events:
        outputs.update(event_outputs(spec.events, z, signal, outputs["forecast"],
                                     outputs.get("quantiles"), spec.targets_in_inputs[0],
                                     inputs=spec.event_inputs))
    return outputs


def _quantile_output(q, stats: NormStats):
    """(B, H, K, Q) ordered standardized quantiles -> physical units."""
    # std > 0, so de-normalizing along the target axis keeps the order.
    return make_output_denormalizer(stats, name="quantiles", axis=2)(q)


def _seq2seq(spec: ModelSpec, z, stats: NormStats) -> dict:
    """LSTM encoder -> LSTM decoder that runs over the horizon, one output step per decoder step.

    Decoder layer i starts from encoder layer i's final (h, c); its input at every step is the
    encoder's final top-layer state (the context). A shared per-step Dense maps each decoder state
    to that step's forecast, so the head has K weights-per-unit, not H*K.
    """
    states = []
    depth = len(spec.units)
    for i, units in enumerate(spec.units, start=1):
        enc = _recurrent_layer(
            spec, units, name=f"encoder_{i}", return_sequences=i < depth, return_state=True
        )
        out, h_state, c_state = enc(z)
        states.append([h_state, c_state])
        z = out  # (B, T, h_i) below the top layer
    context = layers.RepeatVector(spec.horizon, name="repeat_context")(states[-1][0])  # (B, H, h)
    d = context
    for i, units in enumerate(spec.units, start=1):
        dec = _recurrent_layer(spec, units, name=f"decoder_{i}", return_sequences=True)
        d = dec(d, initial_state=states[i - 1])  # (B, H, h_i)
    k = spec.n_targets
    y = layers.Dense(k, name="head")(d)  # (B, H, K)
    outputs = {"forecast": make_output_denormalizer(stats, name="forecast")(y)}
    if spec.probabilistic:
        n_q = len(spec.quantiles)
        q = layers.Dense(k * n_q, name="quantile_head")(d)  # (B, H, K*Q)
        q = layers.Reshape((spec.horizon, k, n_q), name="quantile_reshape")(q)
        outputs["quantiles"] = _quantile_output(OrderedQuantiles(name="quantile_order")(q), stats)
    return outputs


def _core(spec: ModelSpec, z):
    """(B, T, C) -> (B, h): the recurrent stack, or the flattened Dense stack for `direct`."""
    return _direct_core(spec, z) if spec.arch == "direct" else _stacked_core(spec, z)


def _cycle_residual(spec: ModelSpec, z, stats: NormStats) -> dict:
    """Cycle-aware head: a learned mix of cycle-aligned copies of the past plus a residual.

    In per-window units (the last max-period samples of each channel centred and scaled), so the
    model is shift/scale equivariant. The residual Dense starts at zero: an untrained model is the
    mean of the `cycle_candidates` candidates, already a smoothed last-cycle forecast (see
    `models.cycle`). The core sees the window average-pooled by `encoder_pool`.
    `cycle_mix = "median"` takes the candidates' median instead (no weights); `residual = false`
    leaves the residual out (what a core learns on one cohort need not carry to other records).
    """
    h, k = spec.horizon, spec.n_targets
    positions = spec.targets_in_inputs
    steps = spec.max_period_steps
    stats = stats.targets_from_inputs(spec.targets_in_inputs)  # built from the targets' own past
    zs, loc, scale = WindowScale(steps, positions, name="window_scale")(z)  # (B, T, C)
    enc = zs
    if spec.encoder_pool > 1:
        enc = layers.AveragePooling1D(spec.encoder_pool, name="encoder_pool")(zs)
    feats = _core(spec, enc)  # (B, h_last)
    n = spec.cycle_candidates
    cands = CycleCandidates(h, spec.min_period_steps, spec.max_period_steps, spec.search_steps,
                            n, positions, align=spec.cycle_align, match_steps=spec.match_steps,
                            level_decay=float(spec.level_decay_steps),
                            name="cycle_candidates")(zs)  # (B, H, K, N)
    if spec.cycle_mix == "median":
        base = CycleMedian(name="cycle_mix")(cands)  # (B, H, K)
    else:
        base = CycleMix(name="cycle_mix")(cands)  # (B, H, K)
    # The residual sees the encoder state, the cycle forecast it corrects and the last
    # RECENT_STEPS samples at full rate (a linear anchor for the first steps, like ridge_ar).
    n_recent = min(RECENT_STEPS, spec.input_steps)
    recent = layers.Cropping1D((spec.input_steps - n_recent, 0), name="recent_crop")(zs)
    both = layers.Concatenate(name="residual_features")([
        feats,
        layers.Flatten(name="cycle_flatten")(base),
        layers.Flatten(name="recent_flatten")(recent),
    ])
    if spec.residual_dropout > 0:
        both = layers.Dropout(spec.residual_dropout, name="residual_dropout")(both)
    centre = base  # (B, H, K), window units
    if spec.residual:
        res = layers.Dense(h * k, kernel_initializer="zeros", name="residual_head")(both)
        res = layers.Reshape((h, k), name="residual_reshape")(res)  # (B, H, K)
        centre = layers.Add(name="cycle_plus_residual")([base, res])
    y = WindowUnscale(name="window_unscale")([centre, loc, scale])  # standardized units
    outputs = {"forecast": make_output_denormalizer(stats, name="forecast")(y)}
    if spec.probabilistic:
        n_q = len(spec.quantiles)
        q = layers.Dense(h * k * n_q, name="quantile_head")(both)
        q = layers.Reshape((h, k, n_q), name="quantile_reshape")(q)
        q = OrderedQuantiles(name="quantile_order")(q)
        q = WindowUnscale(name="quantile_unscale")([q, loc, scale, centre])
        outputs["quantiles"] = make_output_denormalizer(stats, name="quantiles", axis=2)(q)
    return outputs


def build_model(spec: ModelSpec, norm: NormStats | None = None) -> keras.Model:
    """Build (not compile) the forecaster described by `spec`.

    Input `signal`: `(batch, input_steps, n_channels)` in physical units. Outputs, a dict:
    `forecast` `(batch, horizon, n_targets)` in physical units, plus `quantiles`
    `(batch, horizon, n_targets, n_quantiles)` (ordered along the last axis) when
    `spec.quantiles` is non-empty, plus one probability `(batch, 1)` float32 per event in
    `spec.events` (`ahe_probability`). `norm` holds train-split statistics; None means identity
    (mean 0, std 1), enough for `inspect` and shape checks.
    """
    stats = norm or NormStats.identity(spec.n_channels, spec.n_targets)
    if len(stats.input_mean) != spec.n_channels:
        raise ValueError(
            f"norm has {len(stats.input_mean)} input channels, spec has {spec.n_channels}"
        )
    if len(stats.target_mean) != spec.n_targets:
        raise ValueError(f"norm has {len(stats.target_mean)} targets, spec has {spec.n_targets}")
    signal = keras.Input(shape=(spec.input_steps, spec.n_channels), name="signal")  # (B, T, C)
    z = make_input_normalizer(stats)(signal)
    if spec.head == "cycle_residual":
        outputs = _cycle_residual(spec, z, stats)
    elif spec.head == "cycle_mix":
        outputs = cycle_mix_outputs(spec, z, stats, _recurrent_layer)
    elif spec.arch == "seq2seq":
        outputs = _seq2seq(spec, z, stats)
    elif spec.arch == "direct":
        outputs = _direct_heads(spec, _direct_core(spec, z), stats, z, signal)
    else:
        outputs = _direct_heads(spec, _stacked_core(spec, z), stats, z, signal)
    suffix = {"cycle_residual": "_cycle", "cycle_mix": "_cycle_mix"}.get(spec.head, "")
    return keras.Model(signal, outputs, name=f"pulsecast_{spec.arch}{suffix}")


# Archs whose whole core can run stateful over consecutive chunks (truncated BPTT).
STATEFUL_ARCHS: tuple[str, ...] = ("lstm", "gru", "simplernn", "irnn")


def stateful_refusal(spec: ModelSpec) -> str | None:
    """Why `spec` has no stateful twin, in words; None when `build_stateful_twin` can build it."""
    if spec.arch not in STATEFUL_ARCHS:
        return (f"arch {spec.arch!r} has no stateful twin (stateful archs: "
                f"{', '.join(STATEFUL_ARCHS)})")
    if spec.head != "direct":
        return f"head {spec.head!r} has no stateful twin (only head 'direct')"
    if spec.bidirectional:
        return "bidirectional = true has no stateful twin (the backward pass reads the future)"
    if spec.anchor != "none":
        return f"anchor {spec.anchor!r} has no stateful twin (only anchor 'none')"
    if spec.events:
        return (f"events {list(spec.events)!r} have no stateful twin (the event head reads the "
                f"whole window)")
    return None


def build_stateful_twin(spec: ModelSpec, batch_size: int, chunk_steps: int,
                        norm: NormStats | None = None) -> keras.Model:
    """The truncated-BPTT training twin of `build_model(spec, norm)`: same layer names and weights.

    Input `signal`: `(batch_size, chunk_steps, n_channels)`, a static batch (stateful RNNs need
    it): row b is stream b. Every recurrent layer is `stateful=True` and returns sequences, so a
    call starts from the state the previous call ended in (until `reset_state` or an assignment to
    `layer.states`). The top layer's output at every step is folded into the batch, stream-major,
    and goes through the same direct head: `forecast` `(batch_size * chunk_steps, horizon,
    n_targets)` (+ `quantiles`), row `b * chunk_steps + t` being stream b's forecast of the
    `horizon` samples after its step t. Copy weights layer by layer (same names) to and from the
    stateless model.
    """
    why = stateful_refusal(spec)
    if why:
        raise ValueError(why)
    for name, value in (("batch_size", batch_size), ("chunk_steps", chunk_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    stats = norm or NormStats.identity(spec.n_channels, spec.n_targets)
    signal = keras.Input(batch_shape=(batch_size, chunk_steps, spec.n_channels), name="signal")
    z = make_input_normalizer(stats)(signal)  # (B, k, C)
    for i, units in enumerate(spec.units, start=1):
        layer = _recurrent_layer(spec, units, name=f"{spec.arch}_{i}", return_sequences=True,
                                 stateful=True)
        z = layer(z)  # (B, k, h_i)
    folded = (batch_size * chunk_steps, spec.units[-1])
    z = layers.Lambda(lambda t: ops.reshape(t, folded), output_shape=lambda _: folded,
                      name="fold_steps")(z)  # (B*k, h_last)
    return keras.Model(signal, _direct_heads(spec, z, stats),
                       name=f"pulsecast_{spec.arch}_stateful")


def compile_losses(spec: ModelSpec, point="mse") -> dict:
    """Per-output losses matching `build_model`: `point` (MSE by default) on `forecast`, pinball
    on `quantiles`, and on each event probability the binary cross-entropy against the event
    rule applied in-graph to the target window (`models.events_keras.EventLoss`)."""
    losses: dict = {"forecast": point}
    if spec.probabilistic:
        losses["quantiles"] = PinballLoss(spec.quantiles)
    losses.update(event_losses(spec.events))
    return losses
