"""The people-facing `:forecast` request: a raw signal at any rate in, the model's window out.

Pure numpy/scipy/pydantic, no I/O. A request body is `ForecastBody` (also its OpenAPI schema):

    {"signal": {"II": [...], "V": [...]}, "fs": 360, "start_time": "2024-01-01T10:00:00Z"?,
     "max_gap_s": 0.5?}

in physical units, `null`/NaN for missing samples; other keys are ignored. The model's contract
comes from its `pulsecast.json` (`channels`, `fs`, `input_steps`, `horizon`, `targets`,
`units`/`target_units`, `quantiles`). `make_window` keeps the signal's tail, fills gaps up to
`max_gap_s` linearly (held at the edges), refuses longer ones naming the channel and gap,
resamples to the model's `fs` with `scipy.signal.resample_poly` and returns the last
`input_steps` samples, `(input_steps, channels)`. `make_forecast_response` turns the model's
`forecast` `(1, horizon, targets)` (and `quantiles` `(1, horizon, targets, levels)`) into
per-target lists with timestamps.

Every bad input raises `ServingError` INVALID_ARGUMENT (HTTP 400) whose text names the value.
(About 320 lines while `fill_gaps` and `resample` live here: they move to the signal
conditioning that ingest shares, in `models/`, as issue 15 asks.)
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
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

from serve.errors import Code, ServingError, invalid

DEFAULT_MAX_GAP_S = 0.5
MAX_FS = 1_000_000.0
# Upsampling a signal more than this is guessing, and the polyphase filter grows with the factor.
MAX_UPSAMPLING = 100
MAX_SAMPLES_PER_CHANNEL = 10_000_000
# Extra input kept before the window so the resampling filter's start-up transient falls outside.
_FILTER_MARGIN_S = 1.0
_REQUIRED_METADATA = ("channels", "fs", "input_steps", "horizon", "targets")


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


def check_metadata(model_name: str, metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The model's pulsecast.json, or FAILED_PRECONDITION (400) when it has none."""
    if not metadata or any(k not in metadata for k in _REQUIRED_METADATA):
        raise ServingError(
            Code.FAILED_PRECONDITION,
            f"model {model_name} has no pulsecast.json metadata (channels, fs, input_steps, "
            "horizon, targets): use :predict with the model's own input tensor",
        )
    return metadata


def make_window(request: ForecastRequest, metadata: Mapping[str, Any]) -> np.ndarray:
    """The model's input window `(input_steps, channels)` float32 from the request's signal."""
    channels = list(metadata["channels"])
    model_fs = float(metadata["fs"])
    input_steps = int(metadata["input_steps"])
    columns = _pick_channels(request.signal, channels)
    if request.fs * MAX_UPSAMPLING < model_fs:
        raise invalid(
            f"'fs' of {request.fs:g} Hz is too low for a model sampled at {model_fs:g} Hz "
            f"(at most {MAX_UPSAMPLING}x upsampling)"
        )
    need_s = input_steps / model_fs
    have_s = request.n_samples / request.fs
    if have_s + 0.5 / request.fs < need_s:
        raise invalid(
            f"signal is too short: the model needs at least {need_s:.3f} s ({input_steps} "
            f"samples at {model_fs:g} Hz) of every channel, got {have_s:.3f} s "
            f"({request.n_samples} samples at {request.fs:g} Hz)"
        )
    # Only the tail reaches the window: gaps further back cannot spoil the forecast.
    keep = min(request.n_samples, math.ceil((need_s + _FILTER_MARGIN_S) * request.fs))
    window = np.empty((input_steps, len(channels)), dtype=np.float32)
    for j, (name, samples) in enumerate(zip(channels, columns, strict=True)):
        tail = fill_gaps(samples[-keep:], request.fs, request.max_gap_s, name)
        resampled = resample(tail, request.fs, model_fs)
        if len(resampled) < input_steps:  # rounding of the rate ratio: hold the first sample
            resampled = np.concatenate(
                [np.full(input_steps - len(resampled), resampled[0]), resampled]
            )
        window[:, j] = resampled[-input_steps:]
    return window


def _pick_channels(signal: Mapping[str, np.ndarray], channels: list[str]) -> list[np.ndarray]:
    """The model's channels in order, matched exactly, then case-insensitively."""
    by_upper = {name.strip().upper(): arr for name, arr in signal.items()}
    out, missing = [], []
    for name in channels:
        arr = signal.get(name)
        if arr is None:
            arr = by_upper.get(name.strip().upper())
        if arr is None:
            missing.append(name)
        out.append(arr)
    if missing:
        raise invalid(
            f"signal is missing channel(s) {missing}: the model needs {channels}, "
            f"got {sorted(signal)}"
        )
    return out


def fill_gaps(samples: np.ndarray, fs: float, max_gap_s: float, channel: str) -> np.ndarray:
    """Linear fill of NaN runs up to `max_gap_s` (edges held); a longer run is a 400."""
    missing = np.isnan(samples)
    if not missing.any():
        return samples
    # runs of NaN: starts where missing turns on, ends where it turns off
    edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    worst = int(np.argmax(lengths))
    gap_s = lengths[worst] / fs
    if gap_s > max_gap_s or missing.all():
        at_s = starts[worst] / fs
        raise invalid(
            f"channel {channel!r} has a gap of {gap_s:.3f} s ({lengths[worst]} samples) starting "
            f"{at_s:.3f} s into the part of the signal used; gaps up to max_gap_s="
            f"{max_gap_s:g} s are filled"
        )
    idx = np.arange(len(samples))
    filled = samples.copy()
    filled[missing] = np.interp(idx[missing], idx[~missing], samples[~missing])
    return filled


def resample(samples: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling from `fs_in` to `fs_out` Hz; equal rates return the input."""
    if abs(fs_in - fs_out) <= 1e-9 * fs_out:
        return samples
    from scipy.signal import resample_poly

    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    if ratio <= 0:
        raise invalid(f"cannot resample from {fs_in:g} Hz to {fs_out:g} Hz")
    # padtype="line": the tail (what the forecast leans on most) is not pulled towards zero
    return resample_poly(samples, ratio.numerator, ratio.denominator, padtype="line")


def make_forecast_response(
    model_name: str, version: int, metadata: Mapping[str, Any],
    outputs: Mapping[str, np.ndarray], request: ForecastRequest,
) -> dict[str, Any]:
    """The JSON document of a forecast: per-target lists, timestamps, optional quantiles."""
    targets = list(metadata["targets"])
    model_fs = float(metadata["fs"])
    forecast = outputs.get("forecast")
    if forecast is None:
        if len(outputs) != 1:
            raise invalid(f"model {model_name} has no 'forecast' output, only {sorted(outputs)}")
        forecast = next(iter(outputs.values()))
    forecast = np.asarray(forecast, dtype=np.float64).reshape(-1, len(targets))
    horizon = forecast.shape[0]
    doc: dict[str, Any] = {
        "model_name": model_name,
        "version": version,
        "fs": model_fs,
        "units": _target_units(metadata, targets),
        "targets": targets,
        "forecast": {t: forecast[:, k].tolist() for k, t in enumerate(targets)},
        "timestamps": _timestamps(request, model_fs, horizon),
    }
    levels = list(metadata.get("quantiles") or [])
    if "quantiles" in outputs and levels:
        q = np.asarray(outputs["quantiles"], dtype=np.float64).reshape(
            horizon, len(targets), len(levels)
        )
        doc["quantiles"] = {
            f"{level:g}": {t: q[:, k, i].tolist() for k, t in enumerate(targets)}
            for i, level in enumerate(levels)
        }
    return doc


def _target_units(metadata: Mapping[str, Any], targets: list[str]) -> list[str]:
    if metadata.get("target_units"):
        return list(metadata["target_units"])
    units = dict(zip(metadata.get("channels", []), metadata.get("units", []), strict=False))
    return [units.get(t, "") for t in targets]


def _timestamps(request: ForecastRequest, model_fs: float, horizon: int) -> list[Any]:
    """Forecast sample times: ISO when `start_time` was given, else seconds after the end."""
    steps = [k / model_fs for k in range(1, horizon + 1)]
    if request.start_time is None:
        return [round(s, 6) for s in steps]
    end = request.start_time + timedelta(seconds=(request.n_samples - 1) / request.fs)
    return [(end + timedelta(seconds=s)).isoformat(timespec="milliseconds") for s in steps]
