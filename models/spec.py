"""The model recipe: one frozen `ModelSpec` per forecaster, and its loader from a TOML config.

Pure: no Keras import. A spec says what to build (`architectures.build_model` builds it); the
window vocabulary (`input_steps`, `horizon`, `inputs`, `targets`) is the one `pipelines` uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

ARCHS: tuple[str, ...] = ("lstm", "gru", "simplernn", "irnn", "seq2seq", "direct")
RECURRENT_ARCHS: tuple[str, ...] = ("lstm", "gru", "simplernn", "irnn", "seq2seq")


class SpecError(ValueError):
    """A model recipe that cannot be built; the message names the bad value."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build: windows `(batch, input_steps, n_channels)` -> `(batch, horizon, n_targets)`.

    - `arch`: `lstm` (default), `gru`, `simplernn` (tanh), `irnn` (ReLU, identity recurrence),
      `seq2seq` (LSTM encoder, LSTM decoder emitting one step at a time) or `direct` (no recurrence:
      the flattened window through ReLU Dense layers, all horizon steps at once).
    - `units`: one width per stacked layer (recurrent units, or hidden Dense widths for `direct`).
    - `dropout`: input dropout of each recurrent layer (never recurrent dropout: that would leave
      the fused cuDNN kernel); for `direct`, dropout after each hidden Dense.
    - `forget_bias`: LSTM forget-gate bias initialised to 1 (Jozefowicz et al. 2015).
    - `quantiles`: strictly increasing levels in (0, 1); non-empty makes the recipe probabilistic
      (an extra `quantiles` output trained with the pinball loss).
    - `bidirectional`: wrap each recurrent layer of `lstm`/`gru`/`simplernn`/`irnn`.
    - `gru_reset_after`: GRU variant; True is Keras' default and the only cuDNN-eligible one.
    """

    arch: str = "lstm"
    units: tuple[int, ...] = (64,)
    input_steps: int = 500
    horizon: int = 125
    n_channels: int = 1
    n_targets: int = 1
    dropout: float = 0.0
    forget_bias: bool = True
    quantiles: tuple[float, ...] = ()
    bidirectional: bool = False
    gru_reset_after: bool = True

    def __post_init__(self) -> None:
        # Lists from TOML become tuples so the spec stays hashable and truly frozen.
        object.__setattr__(self, "units", tuple(self.units))
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        if self.arch not in ARCHS:
            raise SpecError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if not self.units:
            raise SpecError("units must name at least one layer width, got ()")
        for width in self.units:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise SpecError(f"units must be integers >= 1, got {self.units!r}")
        for name in ("input_steps", "horizon", "n_channels", "n_targets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for q in self.quantiles:
            if not 0.0 < q < 1.0:
                raise SpecError(f"quantiles must lie in (0, 1), got {q!r}")
        if any(b <= a for a, b in zip(self.quantiles, self.quantiles[1:], strict=False)):
            raise SpecError(f"quantiles must be strictly increasing, got {self.quantiles!r}")
        if self.bidirectional and self.arch in ("seq2seq", "direct"):
            raise SpecError(f"bidirectional applies to stacked recurrent archs, not {self.arch!r}")

    @property
    def probabilistic(self) -> bool:
        """True when the model has a `quantiles` output."""
        return bool(self.quantiles)


# [model] keys a config may set; everything else in ModelSpec comes from [window].
_MODEL_KEYS = frozenset(
    f.name for f in fields(ModelSpec)
    if f.name not in ("input_steps", "horizon", "n_channels", "n_targets")
)


def model_spec_from_config(config: Mapping[str, Any]) -> ModelSpec:
    """A `ModelSpec` from a parsed config (`[window]` and `[model]` tables).

    `n_channels = len(window.inputs)`, `n_targets = len(window.targets)`; `inputs` default to
    `[data].channels` and `targets` to `inputs`. An unknown key in `[model]` raises, naming it.
    """
    window = config.get("window")
    if not isinstance(window, Mapping):
        raise SpecError("config has no [window] table")
    model = config.get("model", {})
    if not isinstance(model, Mapping):
        raise SpecError(f"[model] must be a table, got {model!r}")
    unknown = sorted(set(model) - _MODEL_KEYS)
    if unknown:
        raise SpecError(
            f"unknown key in [model]: {unknown[0]!r} (known: {', '.join(sorted(_MODEL_KEYS))})"
        )
    for key in ("input_steps", "horizon"):
        if key not in window:
            raise SpecError(f"[window] is missing {key!r}")
    inputs = window.get("inputs") or config.get("data", {}).get("channels")
    if not inputs:
        raise SpecError("[window].inputs (or [data].channels) must list at least one channel")
    targets = window.get("targets") or inputs
    return ModelSpec(
        input_steps=window["input_steps"],
        horizon=window["horizon"],
        n_channels=len(inputs),
        n_targets=len(targets),
        **{key: (tuple(v) if isinstance(v, list) else v) for key, v in model.items()},
    )
