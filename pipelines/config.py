"""Training recipes: a TOML file (`configs/<name>.toml`), a top-level `name` and five tables:

- `[data]`: where the records are and how to ingest them (`raw`, `dataset`, `channels`, `fs`,
  `numerics`, `fill_gap_s`: interpolate each channel's gaps up to this long at ingest,
  `max_gap_s`, `min_duration_s`, `valid_range`: `[low, high]`, values outside are gaps);
- `[window]`: `input_steps`, `horizon`, `stride`, `inputs`, `targets`, `gap_policy`,
  `max_still_fraction`;
- `[model]`: read by `models.spec.model_spec_from_config` (architecture and its hyper-parameters);
- `[train]`: loss, optimizer, schedule, clipping, batch size, epochs, patience, seed, precision,
  truncated BPTT;
- `[evaluate]`: the baselines' settings (cycle range for last-cycle and cycle-median, ridge lags,
  the cycle-median copies) and bootstrap.

Each table is a frozen pydantic dataclass (so `dataclasses.asdict`/`replace` work; a replaced copy
is validated again). Types are strict: only a TOML int is converted (to float, for a float key); a
string `input_steps` or a float `epochs` is an error, as is an unknown key. Every error is a
`ConfigError` (a `ValueError`), one line per problem naming the table, the key and the value:
`[window] input_steps must be an int, got '500'`. The window rules (lengths >= 1, channel lists,
gap policy) are `pipelines.windows.spec.WindowSpec`'s: `[window]` is checked by building one.
Paths stay as written (relative to the working directory).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError
from pydantic import model_validator as _model_validator
from pydantic.dataclasses import dataclass

from models.validation import read_problems
from pipelines.windows.spec import WindowSpec

Loss = Literal["mse", "mae", "huber", "quantile"]
Optimizer = Literal["adam", "adamw", "sgd", "rmsprop"]
Schedule = Literal["constant", "cosine", "exponential"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]


class ConfigError(ValueError):
    """A recipe that cannot be trained as written; the message names the key and value."""


def _fraction(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError("must be in (0, 1]")
    return value


def _jit_compile(value: object) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value  # type: ignore[return-value]
    raise ValueError("must be true, false or 'auto'")


# Strict scalars: TOML's int is the only value converted (to float, for a float key).
Int = Annotated[int, Field(strict=True)]
Count = Annotated[int, Field(strict=True, ge=1)]
NonNegative = Annotated[int, Field(strict=True, ge=0)]
Number = Annotated[float, Field(strict=True)]
Positive = Annotated[float, Field(strict=True, gt=0)]
Text = Annotated[str, Field(strict=True)]
Names = tuple[Text, ...]  # a TOML array of strings
Flag = Annotated[bool, Field(strict=True)]
# WindowSpec checks this too, but words it "a number in (0, 1]"; the recipe's wording is tested
Fraction = Annotated[float, Field(strict=True), AfterValidator(_fraction)]
JitCompile = Annotated[bool | str, PlainValidator(_jit_compile)]

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
_T = TypeVar("_T")


def _table(section: str) -> Callable[[type[_T]], type[_T]]:
    """A frozen pydantic dataclass for recipe table `[section]` ("" for the top level) whose
    validation errors, when it is built directly, are `ConfigError`s naming `[section] key`."""

    def wrap(cls: type[_T]) -> type[_T]:
        cls = dataclass(frozen=True, config=_STRICT)(cls)
        validate = cls.__init__

        @functools.wraps(validate)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                validate(self, *args, **kwargs)
            except ValidationError as err:
                raise ConfigError(_describe(err, (section,) if section else ())) from None

        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return wrap


def _valid_range(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, list | tuple) else ()
    if (len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in pair)
            or not -math.inf < pair[0] < pair[1] < math.inf):
        raise ValueError("must be [low, high], two finite numbers with low < high")
    return float(pair[0]), float(pair[1])


Seconds = Annotated[float, Field(strict=True, ge=0)]
ValidRange = Annotated[tuple[float, float] | None, PlainValidator(_valid_range)]


@_table("data")
class DataConfig:
    """How `pulsecast ingest` (and `pulsecast train`, when the dataset is missing) reads the raw
    records: `pipelines.ingest.config.ingest_config_from_recipe` is the one mapping. The defaults
    are `IngestConfig`'s, so a recipe that leaves a key out gets the dataset a bare ingest makes."""

    raw: Text = "data/raw/synthetic"
    dataset: Text = "data/datasets/ecg"
    channels: Annotated[Names, Field(min_length=1)] = ("II",)
    fs: Positive = 125.0
    numerics: Flag = False
    fill_gap_s: Seconds = 0.0  # ingest: interpolate each channel's gaps up to this long
    max_gap_s: Seconds = 60.0  # a longer stretch without data splits a record into pieces
    min_duration_s: Seconds = 10.0  # a shorter piece is skipped, with the reason
    # [low, high] in the channels' units: a value at or below `low` is no reading, one above
    # `high` an artefact; both become gaps (NaN) before gap handling. Unset: every value counts.
    valid_range: ValidRange = None


@_table("window")
class WindowConfig:
    """Types only: the values are `WindowSpec`'s to check (`_as_window_spec`)."""

    input_steps: Int = 500
    horizon: Int = 125
    stride: Int = 25
    inputs: Names = ("II",)
    targets: Names = ("II",)
    gap_policy: Text = "skip"
    # Windows whose targets hold still on more than this fraction of their steps (a flat line, a
    # calibration square wave; quality.window_still_fraction) are neither trained on nor scored.
    # 1.0 keeps every window: the default, since numerics at 1/min may hold a value for minutes.
    max_still_fraction: Fraction = 1.0

    @_model_validator(mode="after")
    def _as_window_spec(self) -> WindowConfig:
        WindowSpec(**dataclasses.asdict(self))  # its ValueError names the key and the value
        return self


@_table("train")
class TrainConfig:
    loss: Loss = "mse"
    optimizer: Optimizer = "adam"
    learning_rate: Positive = 1e-3
    schedule: Schedule = "cosine"
    clipnorm: Number = 1.0
    batch_size: Count = 256
    epochs: Count = 10
    patience: NonNegative = 3
    seed: Int = 0
    precision: Precision = "float32"
    tbptt_steps: NonNegative = 0  # 0 = ordinary windows; k > 0 = stateful training, chunks of k
    max_windows_per_epoch: NonNegative = 0  # 0 = every training window each epoch
    # validation windows scored after each epoch, evenly spaced over the val records; 0 = all
    max_val_windows: NonNegative = 0
    huber_delta: Number = 1.0
    # Weight of each [model] events output's cross-entropy (nats) against the forecast losses
    # (physical units): how much a nat of warning is worth in the forecast's units.
    event_loss_weight: Positive = 1.0
    # Compiled-step knobs (see docs/performance.md for what each measured): optimizer steps run
    # per compiled call (cuts per-step Python/dispatch overhead), and XLA for the train step:
    # "auto" lets Keras decide (jit on JAX; off on TF CPU and for cuDNN LSTMs on TF GPU); false
    # on JAX runs the train step op by op, ~7x slower on an H100.
    steps_per_execution: Count = 1
    jit_compile: JitCompile = "auto"


@_table("evaluate")
class EvalConfig:
    """How forecasts are scored against baselines on held-out patients."""

    min_period_s: Number = 0.3  # last-cycle baseline: shortest cycle searched (ECG beat ~0.3-2 s)
    max_period_s: Number = 2.0
    ridge_lags: Count = 64
    max_windows: Count = 20000  # evaluation windows, evenly subsampled when there are more
    n_boot: Count = 1000
    # cycle_median baseline (the cycle head of models.cycle, nothing learned), periods as above:
    # copies of the past at the lags near 1..cycle_candidates periods back where the last
    # cycle_match_s correlate best, each moved to meet the last sample (fading over
    # cycle_level_decay_s; 0 = not moved), the period found over the last cycle_search_s.
    # The defaults are the ecg head's (8 beats, 3.2 s, 0.48 s, 0.24 s).
    cycle_candidates: Count = 8
    cycle_search_s: Positive = 3.2
    cycle_match_s: Positive = 0.48
    cycle_level_decay_s: Annotated[float, Field(strict=True, ge=0)] = 0.24

    @_model_validator(mode="after")
    def _period_range(self) -> EvalConfig:
        if not 0 < self.min_period_s < self.max_period_s:
            raise ValueError(f"needs 0 < min_period_s < max_period_s, got {self.min_period_s} "
                             f"and {self.max_period_s}")
        return self


@_table("")
class Recipe:
    name: Annotated[str, Field(strict=True, min_length=1)]
    data: DataConfig = field(default_factory=DataConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: dict[str, Any] = field(default_factory=dict)  # validated by models.spec
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    source: str = ""  # the file it was read from (not a recipe key)

    @_model_validator(mode="after")
    def _tables_agree(self) -> Recipe:
        if self.train.loss == "quantile" and not self.model.get("quantiles"):
            raise ValueError("[train] loss = 'quantile' needs [model] quantiles, "
                             "e.g. [0.1, 0.5, 0.9]")
        channels = (*self.window.inputs, *self.window.targets)
        missing = [c for c in channels if c not in self.data.channels]
        if missing:
            raise ValueError(f"[window] channels {missing} are not in [data] channels "
                             f"{list(self.data.channels)}")
        self._events_fit_the_window()
        return self

    def _events_fit_the_window(self) -> None:
        """An event rule counts minutes: one step must be one minute (the in-graph rule and its
        label step through the forecast minute by minute), and the horizon must cover the
        rule's. Unknown names and the rest are `models.spec`'s to refuse."""
        from models.events import EVENTS

        events = self.model.get("events") or []
        rules = [EVENTS[e] for e in events if isinstance(e, str) and e in EVENTS]
        if not rules:
            return
        if not math.isclose(self.data.fs * 60.0, 1.0, rel_tol=1e-9):
            raise ValueError(f"[model] events {list(events)} count minutes: they need one value "
                             f"a minute ([data] fs = 1/60 Hz), got fs = {self.data.fs:g} Hz")
        for rule in rules:
            covered_min = self.window.horizon / self.data.fs / 60.0
            if covered_min < rule.horizon_min:
                raise ValueError(
                    f"[model] events {rule.name!r} needs the {rule.horizon_min} minutes after "
                    f"the cut point: [window] horizon = {self.window.horizon} steps at fs = "
                    f"{self.data.fs:g} Hz covers {covered_min:g} minutes")

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON-able data (stored in each published version)."""
        out = _plain(dataclasses.asdict(self))
        del out["source"]
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_TABLES: dict[str, type] = {"data": DataConfig, "window": WindowConfig, "train": TrainConfig,
                            "evaluate": EvalConfig}
_RECIPE_KEYS = sorted({f.name for f in dataclasses.fields(Recipe)} - {"source"})
# What each pydantic error type says, before ", got <value>"; ctx numbers fill the braces.
_SAYS = {
    "int_type": "must be an int", "float_type": "must be a number",
    "bool_type": "must be true or false", "string_type": "must be a string",
    "tuple_type": "must be an array", "dict_type": "must be a table",
    "dataclass_type": "must be a table", "finite_number": "must be a finite number",
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}", "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}", "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _describe(err: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """pydantic's errors as recipe problems, one a line: `[table] key <rule>, got <value>`;
    unknown keys gathered per table. `prefix`: where the validated value sits (`("window",)`)."""
    lines: list[str] = []
    unknown: dict[tuple[Any, ...], list[str]] = {}
    for p in read_problems(err, prefix, _SAYS):
        if p.kind == "unknown":
            unknown.setdefault(p.loc[:-1], []).append(str(p.loc[-1]))
        elif p.kind == "missing":
            lines.append(f"{_where(p.loc)} is required")
        elif p.kind == "rule" and len(p.loc) <= 1:  # a table's rule names key and value
            lines.append(f"{_where(p.loc)} {p.says}".lstrip())
        else:  # a key's own rule (_fraction, _jit_compile) or a wrong type or range
            lines.append(f"{_where(p.loc)} {p.says}, got {p.value!r}")
    for where, keys in unknown.items():
        if where:
            known = sorted(f.name for f in dataclasses.fields(_TABLES[where[0]]))
            lines.append(f"unknown key(s) {sorted(keys)} in {_where(where)}; known keys: {known}")
        else:
            lines.append(f"unknown top-level key(s) {sorted(keys)}; known: {_RECIPE_KEYS}")
    return "\n".join(lines)


def _where(loc: tuple[Any, ...]) -> str:
    """`("window", "inputs", 1)` -> `[window] inputs[1]`; a top-level key stands alone."""
    if not loc:
        return ""
    table, rest = (f"[{loc[0]}]", loc[1:]) if loc[0] in _TABLES else ("", loc)
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest).lstrip(".")
    return f"{table} {key}".strip()


_RECIPE = TypeAdapter(Recipe)


def parse_recipe(raw: dict[str, Any], source: str = "") -> Recipe:
    """Validate a recipe parsed from TOML (or a version's stored config) into a `Recipe`;
    a `ConfigError` lists every problem found, one a line, each after `<source>: ` if given."""
    if "source" in raw:  # Recipe.source says where the recipe came from; no file sets it
        problems = f"unknown top-level key(s) ['source']; known: {_RECIPE_KEYS}"
    else:
        try:
            return _RECIPE.validate_python({**raw, "source": source})
        except ValidationError as err:
            problems = _describe(err)
    if source:  # every line names the file, as a compiler's would
        problems = "\n".join(f"{source}: {line}" for line in problems.splitlines())
    raise ConfigError(problems)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a TOML recipe; errors name the file, the key and the value."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"recipe {path} is not valid TOML: {err}") from err
    return parse_recipe(raw, source=str(path))


def with_overrides(recipe: Recipe, **overrides: Any) -> Recipe:
    """A copy with operational fields replaced (CLI flags); `None` values are ignored."""
    data, train, name = recipe.data, recipe.train, recipe.name
    if overrides.get("dataset") is not None:
        data = dataclasses.replace(data, dataset=str(overrides["dataset"]))
    if overrides.get("raw") is not None:
        data = dataclasses.replace(data, raw=str(overrides["raw"]))
    if overrides.get("epochs") is not None:
        train = dataclasses.replace(train, epochs=int(overrides["epochs"]))
    if overrides.get("model_name") is not None:
        name = str(overrides["model_name"])
    return dataclasses.replace(recipe, name=name, data=data, train=train)
