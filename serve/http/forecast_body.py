"""The `:forecast` request body: `ForecastBody` (its validation and its OpenAPI schema) and
`parse_forecast_request`, a parsed JSON document in, a `ForecastRequest` out.

    {"signal": {"II": [...], "V": [...]}, "fs": 360, "start_time": "2024-01-01T10:00:00Z"?,
     "max_gap_s": 0.5?}

in physical units, `null`/NaN for missing samples; other keys are ignored. Every bad field is an
INVALID_ARGUMENT (HTTP 400) naming the field and the value, the first one only (in the order
signal, fs, max_gap_s, start_time, then each channel's samples). What the model makes of the
request (its window, the values it takes) is `serve.http.forecast`. Pure pydantic/numpy.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    ValidationError,
    model_validator,
)
from pydantic.types import FailFast

from serve.errors import invalid

DEFAULT_MAX_GAP_S = 0.5
MAX_FS = 1_000_000.0
MAX_SAMPLES_PER_CHANNEL = 10_000_000


def _no_infinity(values: list[float | None]) -> list[float | None]:
    if any(v is not None and math.isinf(v) for v in values):
        raise ValueError("holds an infinite value")
    return values


def _iso_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'start_time' must be an ISO 8601 string, got {value!r:.40}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'start_time' must be an ISO 8601 time, got {value!r:.40}") from None


# JSON numbers and null only (strict: "1.5" and true are not numbers); the first bad one is
# reported (fail fast: a 10-million-sample body yields one error, not millions).
Samples = Annotated[
    list[StrictFloat | None], FailFast(),
    Field(min_length=1, max_length=MAX_SAMPLES_PER_CHANNEL), AfterValidator(_no_infinity),
]


class ForecastBody(BaseModel):
    """The `:forecast` request body, as validated and as the OpenAPI document describes it."""

    model_config = ConfigDict(frozen=True)  # other keys (a client's own ids) are ignored

    signal: dict[str, Samples] = Field(
        min_length=1,
        description="channel -> samples in physical units; null for missing samples")
    fs: StrictFloat = Field(gt=0, le=MAX_FS, allow_inf_nan=False,
                            description="sampling rate of `signal` in Hz")
    max_gap_s: StrictFloat = Field(DEFAULT_MAX_GAP_S, ge=0, allow_inf_nan=False,
                                   description="longest gap filled linearly, in seconds")
    start_time: Annotated[datetime | None, BeforeValidator(_iso_time)] = Field(
        None, description="ISO 8601 time of the first sample")

    @model_validator(mode="after")
    def _same_length(self) -> ForecastBody:
        lengths = {name: len(values) for name, values in self.signal.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"every channel of 'signal' must have the same length, got {lengths}")
        return self


@dataclass(frozen=True)
class ForecastRequest:
    """A validated `:forecast` body: `signal` maps channel -> float64 samples (NaN = missing)."""

    signal: dict[str, np.ndarray]
    fs: float
    start_time: datetime | None
    max_gap_s: float

    @property
    def n_samples(self) -> int:
        return len(next(iter(self.signal.values())))


def parse_forecast_request(doc: Mapping[str, Any]) -> ForecastRequest:
    """Validate a parsed `:forecast` body (`ForecastBody`); raises INVALID_ARGUMENT naming the
    bad field and value (the first one, in the order signal, fs, max_gap_s, start_time, then
    each channel's samples)."""
    try:
        body = ForecastBody.model_validate(doc)
    except ValidationError as err:
        raise invalid(_first_error_text(err)) from None
    signal = {name: np.array(values, dtype=np.float64)  # null -> NaN
              for name, values in body.signal.items()}
    return ForecastRequest(signal, float(body.fs), body.start_time, float(body.max_gap_s))


_FIELD_ORDER = {"fs": 1, "max_gap_s": 2, "start_time": 3}


def _first_error_text(err: ValidationError) -> str:
    """The text of the error the body is refused for, naming the field and the bad value."""
    errors = err.errors(include_url=False)

    def rank(e: dict) -> int:
        loc = e["loc"]
        if not loc:
            return 5  # the model-level check: it ran only because every field was valid
        if loc[0] == "signal":
            return 0 if len(loc) == 1 else 4
        return _FIELD_ORDER.get(str(loc[0]), 5)

    e = min(errors, key=rank)
    loc, value = e["loc"], None if e["type"] == "missing" else e.get("input")
    if e["type"] == "value_error" and len(loc) != 2:  # our own checks word their texts
        return str(e["ctx"]["error"])
    if loc == ("signal",):
        return "'signal' must be an object of channel name -> list of samples"
    if loc == ("fs",):
        return (f"'fs' must be a positive number of samples per second up to {MAX_FS:g}, "
                f"got {value!r:.40}")
    if loc == ("max_gap_s",):
        return f"'max_gap_s' must be a number >= 0, got {value!r:.40}"
    channel = loc[1]
    if len(loc) > 2:
        return (f"channel {channel!r} must hold numbers or null, got {type(value).__name__} "
                f"{reprlib.repr(value):.40}")  # reprlib: a 1000-deep list must not recurse
    if e["type"] == "too_long":
        return (f"channel {channel!r} has {len(value)} samples, more than "
                f"{MAX_SAMPLES_PER_CHANNEL}")
    if e["type"] == "value_error":
        return f"channel {channel!r} holds an infinite value"
    return f"channel {channel!r} must be a non-empty list of numbers"
