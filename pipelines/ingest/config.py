"""`IngestConfig`: what to ingest and how (paths, channels, `fs`, gaps, valid values, splits, bad
input, executor); `ingest_config_from_recipe`: the one mapping from a recipe's `[data]` table, used
by `pulsecast ingest --config` and by `pulsecast train` when it ingests, so both make the same
dataset."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.dataset.splits import validate_fractions
from pipelines.ingest.executors import validate_executor
from pipelines.ingest.quality import RecordRules

if TYPE_CHECKING:
    from pipelines.config import DataConfig

_RULES = RecordRules()


def _std_floors(value) -> tuple[tuple[str, float], ...]:
    """`{unit: std}` or `((unit, std), ...)` as a tuple of pairs; ValueError naming a bad one."""
    pairs = value.items() if isinstance(value, Mapping) else value
    out = []
    for pair in pairs:
        try:
            unit, floor = pair
            unit, floor = str(unit).strip(), float(floor)
        except (TypeError, ValueError):
            raise ValueError(f"min_channel_std must map units to numbers, got {pair!r}") from None
        if not unit or not (math.isfinite(floor) and floor >= 0):
            raise ValueError(f"min_channel_std must map units to numbers >= 0, got {pair!r}")
        out.append((unit, floor))
    return tuple(out)


def _valid_range(value) -> tuple[float, float] | None:
    """`(low, high)` floats with low < high, or None; ValueError naming anything else."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"valid_range must be (low, high), got {value!r}") from None
    if not -math.inf < low < high < math.inf:
        raise ValueError(f"valid_range must have low < high, both finite, got {value!r}")
    return low, high


@dataclass(frozen=True)
class IngestConfig:
    """What to ingest and how. Paths may be given as strings; they are stored as `Path`."""

    raw_dir: Path
    dataset_dir: Path
    channels: tuple[str, ...]
    fs: float
    numerics: bool = False
    patient_id: str | None = None
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    min_duration_s: float = 10.0
    max_gap_s: float = 60.0
    fill_gap_s: float = 0.0  # a channel's gaps up to this long are interpolated (0: none)
    # (low, high) in the channels' units: a value <= low is no reading, one > high an artefact;
    # both become NaN before gap handling and are counted per record (`pipelines.ingest.validity`)
    valid_range: tuple[float, float] | None = None
    workers: int = 1
    strict: bool = False
    executor: str = "local"  # "local" (process pool) or "ray" (`pipelines.ingest.executors`)
    ray_address: str | None = None  # Ray cluster ("auto", "ray://host:port"); None: a local Ray
    # Bad input (waveforms; `pipelines.ingest.assemble`): a record whose requested channel is
    # absent or flat (std at or below its unit's floor) for the whole record is skipped; a stretch
    # of at least `min_still_s` seconds where a channel holds one value (a lead off) or sits at
    # its ADC limits (clipped) becomes a gap, and a record is skipped only when a channel keeps no
    # usable stretch of at least `min_duration_s`. False: every record and sample as read.
    skip_unusable_channels: bool = True
    min_channel_std: tuple[tuple[str, float], ...] = _RULES.min_std
    min_still_s: float = _RULES.min_still_s

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "raw_dir", Path(self.raw_dir))
        set_(self, "dataset_dir", Path(self.dataset_dir))
        raw_channels = self.channels.split(",") if isinstance(self.channels, str) else self.channels
        channels = tuple(str(c).strip() for c in raw_channels)
        if not channels or any(not c or "," in c for c in channels):
            raise ValueError(f"channels must be non-empty names without commas, got {channels}")
        upper = [c.upper() for c in channels]
        if len(set(upper)) != len(upper):
            raise ValueError(f"channels must not repeat, got {channels}")
        set_(self, "channels", channels)
        if isinstance(self.fs, bool) or not isinstance(self.fs, int | float):
            raise ValueError(f"fs must be a number > 0, got {self.fs!r}")
        if not (math.isfinite(self.fs) and self.fs > 0):
            raise ValueError(f"fs must be > 0, got {self.fs:g}")
        set_(self, "fs", float(self.fs))
        set_(self, "split_fractions", validate_fractions(tuple(self.split_fractions)))
        for name in ("min_duration_s", "max_gap_s", "fill_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value:g}")
        set_(self, "valid_range", _valid_range(self.valid_range))
        set_(self, "min_channel_std", _std_floors(self.min_channel_std))
        if not (math.isfinite(self.min_still_s) and self.min_still_s > 0):
            raise ValueError(f"min_still_s must be > 0 seconds, got {self.min_still_s:g}")
        if int(self.workers) != self.workers or self.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {self.workers}")
        validate_executor(self.executor, self.ray_address, self.workers)
        if self.patient_id is not None and not str(self.patient_id).strip():
            raise ValueError(
                f"patient_id must be a non-empty string or None, got {self.patient_id!r}"
            )

    def to_json(self) -> dict:
        """The config as JSON-ready values (paths as strings, tuples as lists)."""
        return {
            "raw_dir": str(self.raw_dir), "dataset_dir": str(self.dataset_dir),
            "channels": list(self.channels), "fs": self.fs, "numerics": self.numerics,
            "patient_id": self.patient_id, "split_fractions": list(self.split_fractions),
            "min_duration_s": self.min_duration_s, "max_gap_s": self.max_gap_s,
            "fill_gap_s": self.fill_gap_s,
            "valid_range": list(self.valid_range) if self.valid_range else None,
            "workers": self.workers, "strict": self.strict,
            "executor": self.executor, "ray_address": self.ray_address,
            "skip_unusable_channels": self.skip_unusable_channels,
            "min_channel_std": dict(self.min_channel_std),
            "min_still_s": self.min_still_s,
        }

    @property
    def record_rules(self) -> RecordRules:
        """The bad-input thresholds as `pipelines.ingest.quality` takes them."""
        return RecordRules(min_std=self.min_channel_std, min_still_s=self.min_still_s)


# The `[data]` keys that are ingest settings, by their IngestConfig names
_FROM_RECIPE = ("channels", "fs", "numerics", "fill_gap_s", "max_gap_s", "min_duration_s",
                "valid_range")


def ingest_config_from_recipe(data: DataConfig, raw: str | Path | None = None,
                              dataset: str | Path | None = None, **overrides: Any) -> IngestConfig:
    """The `IngestConfig` a recipe's `[data]` table asks for: its raw folder (or `raw`) into its
    dataset (or `dataset`), with every ingest key taken from the table. `overrides` are
    `IngestConfig` fields (explicit CLI flags, `workers`, ...); a `None` value is not an override.
    """
    settings: dict[str, Any] = {name: getattr(data, name) for name in _FROM_RECIPE}
    settings.update(raw_dir=raw if raw is not None else data.raw,
                    dataset_dir=dataset if dataset is not None else data.dataset)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return IngestConfig(**settings)
