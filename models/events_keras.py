"""Event outputs in Keras: the event rule in-graph, the event head and its loss.

`models.events` is the one home of a rule (pure numpy); this module is its Keras side, built
only with `keras.ops` / `keras.layers`, so it runs on every backend:

- `low_window_counts` / `rule_label`: the rule on `(batch, minutes)` tensors (mmHg), exactly
  `EventRule.occurs` / `EventRule.label` (a NaN minute is not low);
- `EventFeatures`: weightless, what the event head reads besides the core's features: the
  recent past (mean of the last `RECENT_MIN` minutes, last value, low fraction of the last
  `window_min` minutes) and the forecast's own answer to the rule (its minimum, mean and the
  most low minutes in any `window_min`-minute window, for the point forecast and each quantile),
  all in physical units relative to the rule's threshold, with the gradient stopped so the event
  loss never bends the forecast;
- `event_outputs`: the head, `Concatenate([core, features]) -> EventHead`: a logistic
  regression on the core's features and the event features (or on the event features alone,
  `inputs="features"`), output `(batch, 1)` float32 named by the rule (`ahe_probability`). No
  hidden layer: the positives of a rare event come from few patients, and on the Challenge 2009
  records a hidden ReLU layer (16 units) overfitted them (held-out AUROC 0.73-0.95 over two
  seeds, against 0.96 for the logistic head);
- `EventHead`: that logistic regression, `sigmoid(slope * (x . kernel + bias) + intercept)`,
  where `kernel` and `bias` are trained and `slope` / `intercept` are two non-trainable weights,
  1 and 0 while training (a plain logistic regression), set after the fit by
  `set_event_calibration` (Platt scaling, `pipelines.training.event_threshold`). The loss trains
  the head on every training window, where an episode starts in ~1 % of hours; the question a
  warning is asked at T0 has ~50 % prevalence. Platt scaling on the training records' T0 cases
  moves the probability to that population inside the graph, so `:predict` clients get the
  calibrated `ahe_probability` too; ranking is unchanged (slope > 0);
- `set_event_base_rates`: the head's bias starts at the training base rate;
- `EventLoss`: binary cross-entropy of that probability against the rule applied in-graph to
  the window's own target `y_true` `(batch, horizon, n_targets)` in physical units.

One step is one minute (the recipe refuses events at any other `fs`: `pipelines.config`).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models.events import EventRule, event_rule

RECENT_MIN = 5  # minutes averaged for the "current pressure" feature (DESIGN: the warning baseline)
MARGIN_SCALE = 10.0  # physical units (mmHg): margins to the threshold are divided by it


def n_event_features(n_quantiles: int) -> int:
    """Width of `EventFeatures`' output: 3 from the past, 3 from the forecast, 2 per quantile."""
    return 6 + 2 * n_quantiles


def low_window_counts(minutes, threshold: float, window_min: int):
    """Low minutes (at or below `threshold`; NaN is not low) in every `window_min`-minute window
    of `minutes` `(batch, n)`: `(batch, n - window_min + 1)` float32, through one cumsum."""
    x = ops.convert_to_tensor(minutes)
    low = ops.cast(ops.less_equal(x, threshold), "float32")  # (B, n); NaN <= t is False
    csum = ops.pad(ops.cumsum(low, axis=-1), [[0, 0], [1, 0]])  # (B, n + 1), a leading 0
    n = x.shape[-1]
    return csum[:, window_min:] - csum[:, : n - window_min + 1]


def rule_label(future, rule: EventRule):
    """`rule.label` in-graph: 1.0 where the rule is met in the first `horizon_min` minutes of
    `future` `(batch, >= horizon_min)` (mmHg), else 0.0; `(batch,)` float32."""
    future = ops.convert_to_tensor(future)[:, : rule.horizon_min]
    if future.shape[-1] < rule.window_min:
        return ops.zeros_like(future[:, 0], dtype="float32")
    counts = low_window_counts(future, rule.threshold, rule.window_min)
    return ops.cast(ops.max(counts, axis=-1) >= rule.min_low, "float32")


@keras.saving.register_keras_serializable(package="pulsecast")
class EventFeatures(layers.Layer):
    """`[signal, forecast(, quantiles)]` in physical units -> `(B, n_event_features(Q))` features.

    signal `(B, T, C)` (the target sits at channel `position`), forecast `(B, H, 1)`, quantiles
    `(B, H, 1, Q)`. Margins are `(value - threshold) / MARGIN_SCALE`; rule scores are the most
    low minutes of any `window_min`-minute window over `min_low` (>= 1: the rule is met). Only
    the first `horizon_min` forecast steps count. No weights; no gradient flows back.
    """

    def __init__(self, threshold: float, window_min: int, min_low: int, horizon_min: int,
                 position: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.window_min = int(window_min)
        self.min_low = int(min_low)
        self.horizon_min = int(horizon_min)
        self.position = int(position)

    def _margin(self, v):
        return (v - self.threshold) / MARGIN_SCALE

    def _rule_score(self, minutes):
        counts = low_window_counts(minutes, self.threshold, self.window_min)
        return ops.max(counts, axis=-1) / float(self.min_low)

    def call(self, inputs):
        signal, forecast, *rest = inputs
        past = ops.stop_gradient(ops.cast(signal[:, :, self.position], "float32"))  # (B, T)
        recent = past[:, -RECENT_MIN:]
        last_window = past[:, -self.window_min:]
        low_past = ops.mean(ops.cast(ops.less_equal(last_window, self.threshold), "float32"),
                            axis=-1)
        feats = [self._margin(ops.mean(recent, axis=-1)), self._margin(past[:, -1]), low_past]
        ahead = [forecast[:, : self.horizon_min, 0]]  # (B, Hm)
        if rest:
            q = rest[0][:, : self.horizon_min, 0, :]  # (B, Hm, Q)
            ahead += [q[..., j] for j in range(q.shape[-1])]
        for j, path in enumerate(ahead):
            path = ops.stop_gradient(ops.cast(path, "float32"))
            feats.append(self._margin(ops.min(path, axis=-1)))
            if j == 0:  # the point forecast's mean; the quantiles' would repeat it
                feats.append(self._margin(ops.mean(path, axis=-1)))
            feats.append(self._rule_score(path))
        return ops.stack(feats, axis=-1)  # (B, F)

    def compute_output_shape(self, input_shape):
        n_q = input_shape[2][-1] if len(input_shape) > 2 else 0
        return (input_shape[0][0], n_event_features(n_q))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold,
                "window_min": self.window_min, "min_low": self.min_low,
                "horizon_min": self.horizon_min, "position": self.position}


@keras.saving.register_keras_serializable(package="pulsecast")
class EventHead(layers.Layer):
    """`(B, d)` features -> `(B, 1)` probability: `sigmoid(slope * (x . kernel + bias) +
    intercept)`.

    `kernel` `(d, 1)` and `bias` `(1,)` are trained (a logistic regression, like `Dense(1,
    sigmoid)`); `slope` and `intercept` `(1,)` are non-trainable, 1 and 0 until
    `set_event_calibration` sets them (Platt scaling of the trained logit). d + 1 + 2 weights.
    """

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.kernel = self.add_weight(shape=(d, 1), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")
        self.slope = self.add_weight(shape=(1,), initializer="ones", trainable=False,
                                     name="slope")
        self.intercept = self.add_weight(shape=(1,), initializer="zeros", trainable=False,
                                         name="intercept")

    def logit(self, x):
        """The trained logistic regression's logit `(B, 1)`, before calibration."""
        return ops.matmul(x, self.kernel) + self.bias

    def call(self, x):
        return ops.sigmoid(self.slope * self.logit(x) + self.intercept)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)


EVENT_INPUTS: tuple[str, ...] = ("core_and_features", "features")


def event_outputs(events: tuple[str, ...], core, signal, forecast, quantiles=None,
                  position: int = 0, inputs: str = "core_and_features") -> dict:
    """One `(B, 1)` float32 probability output per event, named by its rule (`ahe_probability`).

    `core` `(B, h)`: the core's features; `signal` `(B, T, C)` the raw input; `forecast`
    `(B, H, 1)` and `quantiles` `(B, H, 1, Q)` (or None) the model's outputs in physical units.
    `inputs`: what the head reads, `core_and_features` (both) or `features` (the event
    features alone: a logistic regression on hand-made features that cannot overfit the few
    patients with an episode through the core's learned ones).
    """
    if inputs not in EVENT_INPUTS:
        raise ValueError(f"event inputs must be one of {', '.join(EVENT_INPUTS)}, got {inputs!r}")
    outputs = {}
    for name in events:
        rule = event_rule(name)
        parts = [signal, forecast] + ([quantiles] if quantiles is not None else [])
        feats = EventFeatures(rule.threshold, rule.window_min, rule.min_low, rule.horizon_min,
                              position, name=f"{name}_features")(parts)  # (B, F)
        if inputs == "core_and_features":
            feats = layers.Concatenate(name=f"{name}_inputs")([core, feats])  # (B, h + F)
        outputs[rule.output] = EventHead(dtype="float32", name=rule.output)(feats)  # (B, 1)
    return outputs


def event_head_inputs(model, event: str):
    """A model from `model`'s input to what `event`'s head reads `(B, d)` (with the head's
    `logit`, the trained logit before calibration)."""
    head = model.get_layer(event_rule(event).output)
    return keras.Model(model.inputs, head.input), head


def set_event_calibration(model, event: str, slope: float, intercept: float) -> None:
    """Set `event`'s Platt scaling: p = sigmoid(slope * logit + intercept). slope > 0 keeps the
    ranking (and the AUROC) of the trained head."""
    if not slope > 0:
        raise ValueError(f"calibration slope must be > 0 (it would reorder the cases), "
                         f"got {slope!r}")
    head = model.get_layer(event_rule(event).output)
    head.slope.assign(ops.convert_to_tensor([slope], dtype="float32"))
    head.intercept.assign(ops.convert_to_tensor([intercept], dtype="float32"))


def set_event_base_rates(model, events: tuple[str, ...], y) -> dict[str, float]:
    """Start each event output at its base rate: the bias of its sigmoid Dense becomes the
    logit of the share of `y` `(n, horizon, 1)` (training target windows, physical units) that
    the rule labels positive (clipped to [1e-4, 1 - 1e-4]). Returns {event: rate}.

    A rare event from a bias of 0 (probability 0.5) costs Adam, whose steps are about the
    learning rate each, thousands of steps of learning the base rate before it learns anything
    that tells the cases apart."""
    import numpy as np

    rates = {}
    for name in events:
        rule = event_rule(name)
        rate = float(np.mean(rule.label(np.asarray(y)[..., 0]))) if len(y) else 0.0
        p = min(max(rate, 1e-4), 1 - 1e-4)
        layer = model.get_layer(rule.output)
        layer.bias.assign(np.full(layer.bias.shape, np.log(p / (1 - p)), dtype="float32"))
        rates[name] = rate
    return rates


@keras.saving.register_keras_serializable(package="pulsecast")
class EventLoss(keras.losses.Loss):
    """Binary cross-entropy of an event probability `(B, 1)` against the rule applied in-graph
    to `y_true` `(B, horizon, n_targets)` (target `target`, physical units): per sample `(B,)`."""

    def __init__(self, event: str, target: int = 0, name: str | None = None, **kwargs):
        self.rule = event_rule(event)
        super().__init__(name=name or f"{self.rule.name}_bce", **kwargs)
        self.event = event
        self.target = int(target)

    def call(self, y_true, y_pred):
        y_true = ops.convert_to_tensor(y_true)
        label = rule_label(ops.cast(y_true[:, :, self.target], "float32"), self.rule)  # (B,)
        p = ops.cast(ops.reshape(y_pred, (-1,)), "float32")  # (B,)
        return ops.binary_crossentropy(label, p)

    def get_config(self):
        return {**super().get_config(), "event": self.event, "target": self.target}


def event_losses(events: tuple[str, ...]) -> dict:
    """`{output name: EventLoss}` for `compile`, keyed like the model's outputs."""
    return {event_rule(name).output: EventLoss(name) for name in events}
