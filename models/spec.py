"""The model recipe: one frozen `ModelSpec` per forecaster, and its loader from a TOML config.

Pure: no Keras import. A spec says what to build (`architectures.build_model` builds it); the
window vocabulary (`input_steps`, `horizon`, `inputs`, `targets`) is the one `pipelines` uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from models.events import EVENTS, event_rule

ARCHS: tuple[str, ...] = ("lstm", "gru", "simplernn", "irnn", "seq2seq", "direct")
RECURRENT_ARCHS: tuple[str, ...] = ("lstm", "gru", "simplernn", "irnn", "seq2seq")
HEADS: tuple[str, ...] = ("direct", "cycle_residual", "cycle_mix")
# Heads built on the in-graph cycle copies (models.cycle): they share the period knobs.
CYCLE_HEADS: tuple[str, ...] = ("cycle_residual", "cycle_mix")
ANCHORS: tuple[str, ...] = ("none", "last")
CYCLE_MIXES: tuple[str, ...] = ("static", "median")
CYCLE_ALIGNS: tuple[str, ...] = ("period", "lag")
# What an event head reads (models.events_keras.EVENT_INPUTS; repeated: no Keras import here).
EVENT_INPUTS: tuple[str, ...] = ("core_and_features", "features")


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
    - `bidirectional`: wrap each recurrent layer of `lstm`/`gru`/`simplernn`/`irnn`; with head
      `cycle_mix`, its decoder reads the horizon both ways (the shipped recipes).
    - `gru_reset_after`: GRU variant; True is Keras' default and the only cuDNN-eligible one.
    - `head`: `direct` (the core's features -> all horizon steps) or `cycle_residual` (a learned
      mix of `cycle_candidates` cycle-aligned copies of the past, found in-graph by
      autocorrelation over periods `min_period_steps..max_period_steps`, plus a residual from the
      core, all in per-window scaled units; see `models.cycle`). Not for `seq2seq`.
      Or `cycle_mix` (`models.cycle_mix`, one width in `units`): a recurrent layer reads
      the window (pooled by `encoder_pool`), a second one runs over the horizon (both ways when
      `bidirectional`) reading the same cycle copies step by step, and learns per step a convex
      mix of the copies, their median and the last value, plus a residual; it starts as (almost)
      the median. `cycle_mix` and `residual_dropout` belong to `cycle_residual` and are refused.
    - `cycle_mix`: how the cycle head weights its candidates: `static` (one learned weight per
      horizon step, target and candidate) or `median` (no weights: the median of the
      candidates, robust to one odd beat; the `cycle_median` baseline's maths).
    - `residual_dropout`: dropout on the cycle head's residual features while training (keeps the
      residual from leaning on features that do not carry over to other records); 0 = off.
    - `period_search_steps`: how many of the last samples the period search correlates with
      their lagged copies; longer averages over beat-to-beat variation (0 = `max_period_steps`).
    - `cycle_align`: `period` (candidate k starts k periods back) or `lag` (candidate k copies
      from the sub-sample lag near k periods where the last `match_steps` samples correlate
      best: follows beat-to-beat drift without a peak detector; the shipped recipes).
    - `match_steps`: samples the `lag` alignment correlates (about half a beat: the shape just
      before the forecast origin).
    - `residual`: False leaves the core's residual out: the head is then the candidates' mix
      alone.
    - `residual_fade_steps`: head `cycle_mix` only: the residual is faded in as
      1 - exp(-h / residual_fade_steps) (0 at the origin, where the copies already meet the last
      sample); 0 = no fade.
    - `level_decay_steps`: > 0 moves each candidate by the gap between the last observed sample
      and the sample before the copied one, fading as exp(-h / level_decay_steps); 0 = off.
    - `encoder_pool`: average-pool the window by this factor before the recurrent core (a long
      context for the cycle search at a fraction of the recurrent cost); 1 = no pooling.
    - `anchor`: `last` makes the direct head forecast the change from the last observed value of
      each target (forecast = last value + head, the head's kernel starting at zero, so the
      untrained model is persistence); for slow signals without cycles (numerics). `none` = off.
    - `target_positions`: where each target sits among the input channels (the cycle head reads
      the targets' own past); empty = the first `n_targets` channels.
    - `events`: clinical events the model also warns of (`models.events.EVENTS`, e.g. `ahe`):
      each adds a `(batch, 1)` probability output named by its rule (`ahe_probability`), read
      off the core's features, the recent past and the forecast (`models.events_keras`). One
      target, head `direct` of a single-state core; the recipe checks that the horizon covers
      the rule's (`pipelines.config`: the spec does not know `fs`).
    - `event_inputs`: what each event head reads: `core_and_features` (the core's features and
      the event features) or `features` (the event features alone: past and forecast margins
      and rule scores, `models.events_keras.EventFeatures`).
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
    head: str = "direct"
    cycle_candidates: int = 3
    min_period_steps: int = 38  # 0.3 s at 125 Hz
    max_period_steps: int = 188  # 1.5 s at 125 Hz
    encoder_pool: int = 1
    cycle_mix: str = "static"
    cycle_align: str = "period"
    period_search_steps: int = 0
    residual_dropout: float = 0.0
    match_steps: int = 60
    level_decay_steps: int = 0
    residual: bool = True
    residual_fade_steps: int = 0
    anchor: str = "none"
    target_positions: tuple[int, ...] = ()
    events: tuple[str, ...] = ()
    event_inputs: str = "core_and_features"

    def __post_init__(self) -> None:
        # Lists from TOML become tuples so the spec stays hashable and truly frozen.
        object.__setattr__(self, "units", tuple(self.units))
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        object.__setattr__(self, "target_positions", tuple(self.target_positions))
        if isinstance(self.events, str):  # `events = "ahe"` would spell three unknown events
            raise SpecError(f"events must be a list of event names, got {self.events!r}")
        object.__setattr__(self, "events", tuple(self.events))
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
        self._check_head()
        self._check_events()

    def _check_events(self) -> None:
        for name in self.events:
            if name not in EVENTS:
                raise SpecError(f"events must name known events ({', '.join(sorted(EVENTS))}), "
                                f"got {name!r}")
        if self.event_inputs not in EVENT_INPUTS:
            raise SpecError(f"event_inputs must be one of {', '.join(EVENT_INPUTS)}, got "
                            f"{self.event_inputs!r}")
        if len(set(self.events)) != len(self.events):
            raise SpecError(f"events must not repeat, got {list(self.events)!r}")
        if not self.events:
            return
        if self.n_targets != 1:
            raise SpecError(f"events {list(self.events)!r} need exactly one target (the signal "
                            f"the rule reads), got n_targets={self.n_targets}")
        if self.head != "direct" or self.arch == "seq2seq":
            raise SpecError(f"events {list(self.events)!r} apply to head 'direct' of a "
                            f"single-state core, not head {self.head!r} with arch {self.arch!r}")

    def _check_head(self) -> None:
        if self.head not in HEADS:
            raise SpecError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.cycle_mix not in CYCLE_MIXES:
            raise SpecError(
                f"cycle_mix must be one of {', '.join(CYCLE_MIXES)}, got {self.cycle_mix!r}"
            )
        if self.cycle_align not in CYCLE_ALIGNS:
            raise SpecError(
                f"cycle_align must be one of {', '.join(CYCLE_ALIGNS)}, got {self.cycle_align!r}"
            )
        if not 0.0 <= self.residual_dropout < 1.0:
            raise SpecError(f"residual_dropout must be in [0, 1), got {self.residual_dropout!r}")
        search = self.period_search_steps
        if isinstance(search, bool) or not isinstance(search, int) or search < 0:
            raise SpecError(f"period_search_steps must be an integer >= 0, got {search!r}")
        for name in ("level_decay_steps", "residual_fade_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.residual, bool):
            raise SpecError(f"residual must be true or false, got {self.residual!r}")
        for name in ("cycle_candidates", "encoder_pool", "min_period_steps", "max_period_steps",
                     "match_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be an integer >= 1, got {value!r}")
        if self.encoder_pool > self.input_steps:
            raise SpecError(
                f"encoder_pool must be <= input_steps={self.input_steps}, got {self.encoder_pool}"
            )
        if self.anchor not in ANCHORS:
            raise SpecError(f"anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        if self.anchor != "none" and (self.head != "direct" or self.arch == "seq2seq"):
            raise SpecError(f"anchor {self.anchor!r} applies to head 'direct' of a single-state "
                            f"core, not head {self.head!r} with arch {self.arch!r}")
        positions = self.targets_in_inputs
        checked = (bool(self.target_positions) or self.head in CYCLE_HEADS
                   or self.anchor != "none")
        valid = len(positions) == self.n_targets and all(
            0 <= p < self.n_channels for p in positions
        )
        if checked and not valid:
            raise SpecError(
                f"target_positions must give {self.n_targets} channel indices in "
                f"[0, {self.n_channels}), got {self.target_positions!r}"
            )
        if self.residual_fade_steps and self.head != "cycle_mix":
            raise SpecError(f"residual_fade_steps applies to head 'cycle_mix', not {self.head!r}")
        if self.head not in CYCLE_HEADS:
            return
        if self.head == "cycle_mix":
            self._check_cycle_mix()
        if self.arch == "seq2seq":
            raise SpecError("head 'cycle_residual' needs a single-state core, not 'seq2seq'")
        if not 2 <= self.min_period_steps < self.max_period_steps:
            raise SpecError(
                f"need 2 <= min_period_steps < max_period_steps, got {self.min_period_steps} "
                f"and {self.max_period_steps}"
            )
        # The period search compares the last max_period samples with a segment up to
        # max_period + 1 samples earlier: two cycles of the longest period must fit.
        if self.input_steps < 2 * self.max_period_steps + 1:
            raise SpecError(
                f"input_steps={self.input_steps} must be >= 2 * max_period_steps + 1 = "
                f"{2 * self.max_period_steps + 1} for head {self.head!r}"
            )
        longest = self.input_steps - self.max_period_steps - 1
        if self.period_search_steps > longest:
            raise SpecError(
                f"period_search_steps must be <= input_steps - max_period_steps - 1 = {longest}, "
                f"got {self.period_search_steps}"
            )
        if self.cycle_align == "lag" and not 2 <= self.match_steps <= longest:
            raise SpecError(
                f"match_steps must be in [2, input_steps - max_period_steps - 1 = {longest}], "
                f"got {self.match_steps}"
            )

    def _check_cycle_mix(self) -> None:
        if self.arch in ("seq2seq", "direct"):
            raise SpecError(f"head 'cycle_mix' needs a single-layer recurrent arch (lstm, gru, "
                            f"simplernn, irnn), got {self.arch!r}")
        if len(self.units) != 1:
            raise SpecError(f"head 'cycle_mix' takes one width (its encoder and decoder), got "
                            f"units {self.units!r}")
        if self.cycle_mix != "static":
            raise SpecError(f"cycle_mix applies to head 'cycle_residual'; head 'cycle_mix' "
                            f"learns its own mix, got cycle_mix {self.cycle_mix!r}")
        if self.residual_dropout:
            raise SpecError(f"residual_dropout applies to head 'cycle_residual', got "
                            f"{self.residual_dropout!r} with head 'cycle_mix'")

    @property
    def search_steps(self) -> int:
        """Samples the period search correlates (`period_search_steps`, or `max_period_steps`)."""
        return self.period_search_steps or self.max_period_steps

    @property
    def targets_in_inputs(self) -> tuple[int, ...]:
        """Index of each target among the input channels."""
        return self.target_positions or tuple(range(self.n_targets))

    @property
    def event_outputs(self) -> tuple[str, ...]:
        """Names of the event probability outputs (`ahe_probability`), in `events` order."""
        return tuple(event_rule(name).output for name in self.events)

    @property
    def probabilistic(self) -> bool:
        """True when the model has a `quantiles` output."""
        return bool(self.quantiles)


# [model] keys a config may set; everything else in ModelSpec comes from [window] (and the cycle
# range from [model] min_period_s / max_period_s at [data] fs, in seconds like [evaluate]).
_DERIVED = ("input_steps", "horizon", "n_channels", "n_targets", "target_positions",
            "min_period_steps", "max_period_steps")
_MODEL_KEYS = frozenset(
    {f.name for f in fields(ModelSpec) if f.name not in _DERIVED} | {"min_period_s", "max_period_s"}
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
    missing = [t for t in targets if t not in inputs]
    positions = tuple(list(inputs).index(t) for t in targets) if not missing else ()
    options = {key: (tuple(v) if isinstance(v, list) else v) for key, v in model.items()
               if key not in ("min_period_s", "max_period_s")}
    for key, value in (("head", "cycle_residual"), ("head", "cycle_mix"), ("anchor", "last")):
        if model.get(key) == value and missing:
            raise SpecError(f"{key} {value!r} needs every target among the inputs; {missing} "
                            f"are not in {list(inputs)}")
    fs = float(config.get("data", {}).get("fs", 125.0))
    for key, field, rounding in (("min_period_s", "min_period_steps", math.floor),
                                 ("max_period_s", "max_period_steps", math.ceil)):
        if key in model:
            value = model[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise SpecError(f"[model] {key} must be a number of seconds > 0, got {value!r}")
            options[field] = int(rounding(value * fs))
    return ModelSpec(
        input_steps=window["input_steps"],
        horizon=window["horizon"],
        n_channels=len(inputs),
        n_targets=len(targets),
        target_positions=positions,
        **options,
    )
