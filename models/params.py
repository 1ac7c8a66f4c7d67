"""Parameter-count formulas, one per layer kind, and `check(model)`: formula vs Keras per layer.

d = input features of the layer, h = its units:

    LSTM        4((d+h)h + h)        kernel (d,4h), recurrent (h,4h), bias (4h)
    GRU         3((d+h)h + 2h)       reset_after=True: separate input and recurrent biases (2,3h)
                3((d+h)h + h)        reset_after=False
    SimpleRNN   (d+h)h + h           (IRNN is a SimpleRNN: same count)
    Dense       dh + h               on the last axis, whatever the rank
    Bidirectional  2 x the wrapped layer
    Standardize 2d                   per-channel mean and std, non-trainable
    Normalization  2d + 1 (adapted: mean, variance, count) or 0 (statistics given as constants)
    CycleMix    H·K·N                one weight per horizon step, target and cycle candidate
    cycle_mix head (models.cycle_mix), C channels, K targets, N copies, u units, D directions:
                RNN(C, u) + D·RNN(2KN + 2K + 1 + u, u) + Dense(D·u, K(N+2)) [+ Dense(D·u, K)]
                (`cycle_mix_head_params`; each layer is also checked on its own)
    EventHead   d + 1 + 2            a logistic regression (kernel (d,1), bias) and its Platt
                                     scaling (slope, intercept; non-trainable, set after the fit)
    event head (models.events_keras), core width h (0: `event_inputs = "features"`), Q quantile
                levels: EventHead(h + 6 + 2Q) = h + 6 + 2Q + 1 + 2
                (`event_head_params`; EventFeatures, 6 + 2Q features, has no weights)

Non-trainable weights count (Keras' `count_params` counts them): Standardize's statistics and
EventHead's calibration are part of the model a version ships.

A model whose Keras count disagrees with its formula is a bug (a wrong input width, a stray bias),
and training refuses it. The formulas are pure; `check` reads the layers of a built model (the only
part that touches Keras objects, and it imports nothing heavy itself).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Layers that own no weights; anything not named here or in FORMULAS is an error.
WEIGHTLESS = frozenset(
    {
        "InputLayer", "Reshape", "Flatten", "RepeatVector", "Dropout", "SpatialDropout1D",
        "Activation", "OrderedQuantiles", "Concatenate", "Add", "Permute", "Identity",
        "GaussianNoise", "Lambda", "AveragePooling1D", "Cropping1D",
        # models.cycle: per-window scaling and the in-graph period search own no weights
        "WindowScale", "WindowUnscale", "CycleCandidates", "CycleMedian",
        "AnchorLast",  # models.architectures: adds the last observed value
        # models.cycle_mix: per-step features, the softmax mix, the residual fade, time reversal
        "HorizonFeatures", "SoftmaxMix", "ResidualFade", "TimeReverse",
        "EventFeatures",  # models.events_keras: the event head's inputs from past and forecast
    }
)


class ParamCountError(ValueError):
    """A layer whose Keras parameter count differs from its formula (or has no formula)."""


def lstm_params(d: int, h: int, use_bias: bool = True) -> int:
    return 4 * ((d + h) * h + (h if use_bias else 0))


def gru_params(d: int, h: int, reset_after: bool = True, use_bias: bool = True) -> int:
    bias = (2 * h if reset_after else h) if use_bias else 0
    return 3 * ((d + h) * h + bias)


def simplernn_params(d: int, h: int, use_bias: bool = True) -> int:
    return (d + h) * h + (h if use_bias else 0)


def dense_params(d: int, h: int, use_bias: bool = True) -> int:
    return d * h + (h if use_bias else 0)


def cycle_mix_params(horizon: int, n_targets: int, n_candidates: int) -> int:
    return horizon * n_targets * n_candidates


def cycle_mix_head_params(n_channels: int, n_targets: int, n_candidates: int, units: int,
                          bidirectional: bool, residual: bool = True, arch: str = "lstm",
                          gru_reset_after: bool = True) -> int:
    """Trainable weights of the `cycle_mix` head: the encoder over the C channels, the decoder(s)
    over the per-step features (the N copies and their sorted copy per target, the median and
    last - median per target, h / H) plus the encoder context, the mix logits (N copies, median,
    last value per target) and the residual, both on every decoder step. Recurrent layers of
    `arch` (lstm, gru, simplernn or irnn)."""
    k, n, u = n_targets, n_candidates, units
    directions = 2 if bidirectional else 1
    per_step = 2 * k * n + 2 * k + 1 + u

    def rnn(d: int) -> int:
        if arch == "lstm":
            return lstm_params(d, u)
        if arch == "gru":
            return gru_params(d, u, gru_reset_after)
        if arch in ("simplernn", "irnn"):
            return simplernn_params(d, u)
        raise ValueError(f"head 'cycle_mix' has no {arch!r} layers")

    total = rnn(n_channels) + directions * rnn(per_step)
    total += dense_params(directions * u, k * (n + 2))
    return total + (dense_params(directions * u, k) if residual else 0)


def event_calibrated_params(d: int) -> int:
    """`models.events_keras.EventHead` on d features: a logistic regression (d + 1 trained
    weights) and its Platt scaling (slope and intercept, 2 non-trainable weights)."""
    return dense_params(d, 1) + 2


def event_head_params(core_width: int, n_quantiles: int) -> int:
    """Weights of one event head: an `EventHead` on the core's features (`core_width`, 0 when
    the head reads the event features alone) and the 6 + 2Q event features
    (`models.events_keras.EventFeatures`): the logistic regression's and its calibration's."""
    return event_calibrated_params(core_width + 6 + 2 * n_quantiles)


def standardize_params(d: int) -> int:
    return 2 * d


def normalization_params(d: int, adapted: bool) -> int:
    return 2 * d + 1 if adapted else 0


@dataclass(frozen=True)
class LayerRow:
    """One line of the `check` table."""

    name: str
    kind: str
    d: int | None
    h: int | None
    formula: str
    expected: int
    keras: int
    cudnn: bool | None  # None: not a recurrent layer with a fused kernel question
    why_not: str

    @property
    def ok(self) -> bool:
        return self.expected == self.keras


def _rnn_cfg(layer) -> dict:
    """The wrapped RNN's config (Bidirectional reports its forward layer)."""
    inner = getattr(layer, "forward_layer", None) or layer
    return inner.get_config()


def cudnn_status(layer) -> tuple[bool | None, str]:
    """Is this layer eligible for the fused cuDNN kernel, and if not why (keras-notes §2)."""
    kind = type(layer).__name__
    if kind == "Bidirectional":
        kind = type(layer.forward_layer).__name__
    if kind == "SimpleRNN":
        return False, "SimpleRNN has no fused kernel"
    if kind not in ("LSTM", "GRU"):
        return None, ""
    cfg = _rnn_cfg(layer)
    reasons = []
    if cfg.get("activation") != "tanh":
        reasons.append(f"activation={cfg.get('activation')}")
    if cfg.get("recurrent_activation") != "sigmoid":
        reasons.append(f"recurrent_activation={cfg.get('recurrent_activation')}")
    if cfg.get("recurrent_dropout", 0) != 0:
        reasons.append(f"recurrent_dropout={cfg.get('recurrent_dropout')}")
    if cfg.get("unroll"):
        reasons.append("unroll=True")
    if not cfg.get("use_bias", True):
        reasons.append("use_bias=False")
    if kind == "GRU" and not cfg.get("reset_after", True):
        reasons.append("reset_after=False")
    inner = getattr(layer, "forward_layer", None) or layer
    if getattr(inner, "use_cudnn", "auto") is False:
        reasons.append("use_cudnn=False")
    return not reasons, "; ".join(reasons)


def _input_width(layer) -> int | None:
    """Feature width of the layer's (first) input in the built graph: the last axis, or the
    layer's own `axis` for per-channel statistics (the quantile de-normalizer works on axis 2)."""
    inp = layer.input
    if isinstance(inp, (list, tuple)):
        if not inp:
            return None
        inp = inp[0]  # RNN called with initial_state: the sequence comes first
    axis = getattr(layer, "axis", -1) if type(layer).__name__ == "Standardize" else -1
    return inp.shape[axis]


def expected_params(layer, d: int | None) -> tuple[str, int | None, str, int]:
    """`(kind, h, formula text, count)` for `layer` fed `d` features on its last axis.

    Raises ParamCountError for a layer kind with weights and no formula.
    """
    kind = type(layer).__name__
    if kind == "Bidirectional":
        _, h, text, count = expected_params(layer.forward_layer, d)
        return f"Bidirectional({type(layer.forward_layer).__name__})", h, f"2·[{text}]", 2 * count
    if kind in WEIGHTLESS:
        return kind, None, "0 (no weights)", 0
    cfg = layer.get_config()
    bias = cfg.get("use_bias", True)
    if kind == "LSTM":
        h = cfg["units"]
        text = f"4·(({d}+{h})·{h}+{h})" if bias else f"4·({d}+{h})·{h}"
        return kind, h, text, lstm_params(d, h, bias)
    if kind == "GRU":
        h, reset_after = cfg["units"], cfg.get("reset_after", True)
        b = (f"2·{h}" if reset_after else f"{h}") if bias else "0"
        return kind, h, f"3·(({d}+{h})·{h}+{b})", gru_params(d, h, reset_after, bias)
    if kind == "SimpleRNN":
        h = cfg["units"]
        return kind, h, f"({d}+{h})·{h}+{h if bias else 0}", simplernn_params(d, h, bias)
    if kind == "Dense":
        h = cfg["units"]
        return kind, h, f"{d}·{h}+{h if bias else 0}", dense_params(d, h, bias)
    if kind == "Standardize":
        return kind, None, f"2·{d} (mean, std; non-trainable)", standardize_params(d)
    if kind == "EventHead":
        return (kind, 1, f"{d}·1+1+2 (logistic; slope, intercept non-trainable)",
                event_calibrated_params(d))
    if kind == "CycleMix":
        _, horizon, k, n = layer.input.shape  # (B, H, K, N) candidates
        return kind, None, f"{horizon}·{k}·{n}", cycle_mix_params(horizon, k, n)
    if kind == "Normalization":
        adapted = bool(layer.weights)
        text = f"2·{d}+1 (mean, variance, count)" if adapted else "0 (constant statistics)"
        return kind, None, text, normalization_params(d, adapted)
    raise ParamCountError(
        f"layer {layer.name!r} of kind {kind} has no parameter formula in models.params"
    )


def layer_rows(model) -> list[LayerRow]:
    """The table for a built model: one row per layer (input layers left out)."""
    rows = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        d = _input_width(layer)
        kind, h, text, count = expected_params(layer, d)
        cudnn, why = cudnn_status(layer)
        rows.append(
            LayerRow(layer.name, kind, d, h, text, count, layer.count_params(), cudnn, why)
        )
    return rows


def check(model) -> list[LayerRow]:
    """Per-layer table of formula vs Keras counts; raises ParamCountError naming a mismatch."""
    rows = layer_rows(model)
    for row in rows:
        if not row.ok:
            raise ParamCountError(
                f"layer {row.name!r} ({row.kind}, d={row.d}, h={row.h}): formula {row.formula} "
                f"= {row.expected} but Keras counts {row.keras}"
            )
    return rows


def rows_to_dicts(rows: list[LayerRow]) -> list[dict]:
    """JSON-ready rows (`ok` included)."""
    return [{**asdict(row), "ok": row.ok} for row in rows]


def format_table(rows: list[LayerRow]) -> str:
    """A fixed-width text table, with a total line."""
    header = ("layer", "kind", "d", "h", "formula", "expected", "keras", "cuDNN")
    lines = [header]
    for r in rows:
        cudnn = "-" if r.cudnn is None else ("yes" if r.cudnn else f"no ({r.why_not})")
        lines.append(
            (r.name, r.kind, _blank(r.d), _blank(r.h), r.formula, str(r.expected), str(r.keras),
             cudnn)
        )
    total_expected = sum(r.expected for r in rows)
    total_keras = sum(r.keras for r in rows)
    lines.append(("total", "", "", "", "", str(total_expected), str(total_keras), ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0 or n == len(lines) - 2:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _blank(value: int | None) -> str:
    return "" if value is None else str(value)
