"""Training recipes: a TOML file read into frozen, validated dataclasses.

A recipe (`configs/<name>.toml`) has a top-level `name` and four tables:

- `[data]`: where the records are and how to ingest them (`raw`, `dataset`, `channels`, `fs`,
  `numerics`, `fill_gap_s`: interpolate each channel's gaps up to this long at ingest);
- `[window]`: `input_steps`, `horizon`, `stride`, `inputs`, `targets`, `gap_policy`;
- `[model]`: read by `models.spec.model_spec_from_config` (architecture and its hyper-parameters);
- `[train]`: loss, optimizer, schedule, clipping, batch size, epochs, patience, seed, precision,
  truncated BPTT;
- `[evaluate]`: the baselines' settings (cycle range for last-cycle, ridge lags) and bootstrap.

Unknown keys anywhere raise `ConfigError` naming the key, so a typo never silently falls back to a
default. Paths stay as written (relative to the working directory).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

LOSSES = ("mse", "mae", "huber", "quantile")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class ConfigError(ValueError):
    """A recipe that cannot be trained as written; the message names the key and value."""


@dataclass(frozen=True)
class DataConfig:
    raw: str = "data/raw/synthetic"
    dataset: str = "data/datasets/ecg"
    channels: tuple[str, ...] = ("II",)
    fs: float = 125.0
    numerics: bool = False
    fill_gap_s: float = 0.0  # ingest: interpolate each channel's gaps up to this long

    def __post_init__(self) -> None:
        if self.fs <= 0:
            raise ConfigError(f"[data] fs must be > 0, got {self.fs}")
        if not self.fill_gap_s >= 0:
            raise ConfigError(f"[data] fill_gap_s must be >= 0, got {self.fill_gap_s}")
        if not self.channels:
            raise ConfigError("[data] channels must name at least one channel, got []")


@dataclass(frozen=True)
class WindowConfig:
    input_steps: int = 500
    horizon: int = 125
    stride: int = 25
    inputs: tuple[str, ...] = ("II",)
    targets: tuple[str, ...] = ("II",)
    gap_policy: str = "skip"
    # Windows whose targets hold still on more than this fraction of their steps (a flat line, a
    # calibration square wave; quality.window_still_fraction) are neither trained on nor scored.
    # 1.0 keeps every window: the default, since numerics at 1/min may hold a value for minutes.
    max_still_fraction: float = 1.0

    def __post_init__(self) -> None:
        for key in ("input_steps", "horizon", "stride"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"[window] {key} must be >= 1, got {value}")
        still = self.max_still_fraction
        if isinstance(still, bool) or not isinstance(still, int | float) or not 0 < still <= 1:
            raise ConfigError(f"[window] max_still_fraction must be in (0, 1], got {still!r}")
        if self.gap_policy not in ("skip", "mask"):
            raise ConfigError(
                f"[window] gap_policy must be 'skip' or 'mask', got {self.gap_policy!r}"
            )
        if not self.inputs or not self.targets:
            raise ConfigError(
                f"[window] inputs and targets must be non-empty, got {self.inputs} and "
                f"{self.targets}"
            )


@dataclass(frozen=True)
class TrainConfig:
    loss: str = "mse"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    clipnorm: float = 1.0
    batch_size: int = 256
    epochs: int = 10
    patience: int = 3
    seed: int = 0
    precision: str = "float32"
    tbptt_steps: int = 0  # 0 = ordinary windows; k > 0 = stateful training over chunks of k steps
    max_windows_per_epoch: int = 0  # 0 = every training window each epoch
    huber_delta: float = 1.0
    # Compiled-step knobs (see docs/performance.md for what each measured): optimizer steps run
    # per compiled call (cuts per-step Python/dispatch overhead), and XLA for the train step:
    # "auto" lets Keras decide (jit on JAX; off on TF CPU and for cuDNN LSTMs on TF GPU); false
    # on JAX runs the train step op by op, ~7x slower on an H100.
    steps_per_execution: int = 1
    jit_compile: bool | str = "auto"

    def __post_init__(self) -> None:
        choices = {"loss": LOSSES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                   "precision": PRECISIONS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"[train] {key} must be one of {allowed}, got {getattr(self, key)!r}"
                )
        for key in ("batch_size", "epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[train] {key} must be >= 1, got {getattr(self, key)}")
        for key in ("patience", "tbptt_steps", "max_windows_per_epoch"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[train] {key} must be >= 0, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"[train] learning_rate must be > 0, got {self.learning_rate}")
        spe = self.steps_per_execution
        if isinstance(spe, bool) or not isinstance(spe, int) or spe < 1:
            raise ConfigError(f"[train] steps_per_execution must be an int >= 1, got {spe!r}")
        if self.jit_compile not in (True, False, "auto"):
            raise ConfigError(
                f"[train] jit_compile must be true, false or 'auto', got {self.jit_compile!r}"
            )


@dataclass(frozen=True)
class EvalConfig:
    """How forecasts are scored against baselines on held-out patients."""

    min_period_s: float = 0.3  # last-cycle baseline: shortest cycle searched (ECG beat ~0.3-2 s)
    max_period_s: float = 2.0
    ridge_lags: int = 64
    max_windows: int = 20000  # evaluation windows, evenly subsampled when there are more
    n_boot: int = 1000

    def __post_init__(self) -> None:
        if not 0 < self.min_period_s < self.max_period_s:
            raise ConfigError(
                f"[evaluate] needs 0 < min_period_s < max_period_s, got "
                f"{self.min_period_s} and {self.max_period_s}"
            )
        for key in ("ridge_lags", "max_windows", "n_boot"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[evaluate] {key} must be >= 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class Recipe:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: dict[str, Any] = field(default_factory=dict)  # validated by models.spec
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    source: str = ""  # the file it was read from

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON-able data (stored in each published version)."""
        return {
            "name": self.name,
            "data": _plain(dataclasses.asdict(self.data)),
            "window": _plain(dataclasses.asdict(self.window)),
            "model": _plain(self.model),
            "train": _plain(dataclasses.asdict(self.train)),
            "evaluate": _plain(dataclasses.asdict(self.evaluate)),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, table: dict[str, Any], section: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{section}]; known keys: {sorted(known)}")
    kwargs = {}
    for key, value in table.items():
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"[{section}]: {err}") from err


def parse_recipe(raw: dict[str, Any], source: str = "") -> Recipe:
    """Validate a recipe already parsed from TOML into a `Recipe`."""
    allowed = {"name", "data", "window", "model", "train", "evaluate"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown} in {source or 'recipe'}; "
                          f"known: {sorted(allowed)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"recipe {source or ''} needs a top-level name, got {name!r}")
    recipe = Recipe(
        name=name,
        data=_build(DataConfig, raw.get("data", {}), "data"),
        window=_build(WindowConfig, raw.get("window", {}), "window"),
        model=dict(raw.get("model", {})),
        train=_build(TrainConfig, raw.get("train", {}), "train"),
        evaluate=_build(EvalConfig, raw.get("evaluate", {}), "evaluate"),
        source=source,
    )
    if recipe.train.loss == "quantile" and not recipe.model.get("quantiles"):
        raise ConfigError("[train] loss = 'quantile' needs [model] quantiles, e.g. [0.1, 0.5, 0.9]")
    missing = [c for c in (*recipe.window.inputs, *recipe.window.targets)
               if c not in recipe.data.channels]
    if missing:
        raise ConfigError(f"[window] channels {missing} are not in [data] channels "
                          f"{list(recipe.data.channels)}")
    return recipe


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
