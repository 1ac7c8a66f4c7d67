"""The people-facing `:forecast` request: a raw signal at any rate in, the model's window out.

Pure numpy/scipy, no I/O. The request body and its validation are `serve.http.forecast_body`
(`ForecastBody`, `parse_forecast_request`: the JSON in, a `ForecastRequest` out). The model's
contract comes from its `pulsecast.json` (`channels`, `fs`, `input_steps`, `horizon`, `targets`,
`units`/`target_units`, `quantiles`, `valid_range`; `models.metadata`).

Values are read as ingest read the model's training data, and impossible ones are refused before
the model runs (`make_window`, each channel's whole signal):

- `null` (NaN) is no reading: a gap, filled up to `max_gap_s` like any other; an infinite value
  is refused (JSON has no infinity, but Python's parser reads `1e999` as one);
- a value outside its unit's plausible range (`models.units`: the unit is the channel's in the
  model's `units`; an unknown unit has none) is refused naming the channel, the value and the
  range: `1e30` mV is no ECG, and a forecast from it would be nonsense;
- with the model's `valid_range` `[low, high]` (the recipe's `[data] valid_range`, applied to
  every channel as ingest applied it), a value above `high` is refused naming the channel and
  the value (ingest dropped such artefacts from training: the model never saw one), and a value
  at or below `low` is no reading (NaN, then filled like a `null`);
- a value beyond float32's range (for a unit with no plausible range) is refused: the model's
  input is float32.

`make_window` then conditions each channel as ingest did (`models.conditioning.condition_tail`:
the tail resampled to the model's `fs` with ingest's rate ratio and filter, then gaps up to
`max_gap_s` filled linearly at that rate, held at the edges; a longer gap is refused naming the
channel and gap) and returns the last `input_steps` samples, `(input_steps, channels)`.
`make_forecast_response` turns the model's `forecast` `(1, horizon, targets)` (and `quantiles`
`(1, horizon, targets, levels)`) into per-target lists with timestamps.

A request costs what it weighs: the resampling ratio's terms are bounded by `MAX_RATIO_TERM`
(ingest's are not). A rate whose exact ratio to the model's fits the bound is conditioned exactly
as ingest would; any other is resampled on the closest grid the bound allows
(`models.conditioning`, "Bounded cost": each sample of the window and its margin within 0.05
samples of its exact time), or refused when no such grid exists. `make_window` also checks that
the forecast's times (`start_time` plus the signal plus the horizon) stay within the calendar
before the model runs.

Every bad input raises `ServingError` INVALID_ARGUMENT (HTTP 400) whose text names the value.
The answer is never a forecast of `null`s: when the model's forecast, quantiles or event
probability is not finite (NaN or infinity, from an input that passed every check), the request
is FAILED_PRECONDITION (HTTP 400, as for a model whose metadata cannot serve `:forecast`): the
version cannot forecast this input. Not INVALID_ARGUMENT, since the input broke no rule; not
INTERNAL (500), since nothing failed in the server and sending it again gives the same answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from models.channels import canonical_name
from models.conditioning import GapTooLongError, condition_tail
from models.metadata import REQUIRED_KEYS, MetadataError, VersionMetadata
from models.resampling import MAX_DRIFT, RatioTooCoarseError
from models.units import plausible_range
from serve.errors import Code, ServingError, invalid
from serve.http.forecast_body import (  # noqa: F401  (re-exported: callers use one module)
    DEFAULT_MAX_GAP_S,
    ForecastBody,
    ForecastRequest,
    parse_forecast_request,
)

log = logging.getLogger(__name__)

# Upsampling a signal more than this is guessing, and the polyphase filter grows with the factor.
MAX_UPSAMPLING = 100
# The largest term of a resampling ratio (and so the most downsampling): the filter has
# 20 * MAX_RATIO_TERM + 1 taps at most, 800 KB designed in about 20 ms on a cache miss, against
# 42 million taps, 10 s and 2 GB for 5.813946611267183 -> 125 Hz unbounded. For a 125 Hz model
# and a 5 s window, 1000 would refuse MIMIC's 249.89 Hz (no ratio with terms <= 1000 within 0.05
# samples) and one random rate in five of 1.25 Hz - 125 kHz; 5000 places all of them within
# 0.04 samples (refusing a few in 1000 near its 5000x downsampling limit).
MAX_RATIO_TERM = 5000
# Extra input kept before the window so the resampling filter's start-up transient falls outside.
_FILTER_MARGIN_S = 1.0
# The model's input is float32: a larger value would reach it as infinity.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_metadata(model_name: str, metadata: Mapping[str, Any] | None) -> VersionMetadata:
    """The model's pulsecast.json, typed; FAILED_PRECONDITION (400) when it has none, or one that
    breaks the contract (`models.metadata`: the text names the key and the value)."""
    if not metadata or any(k not in metadata for k in REQUIRED_KEYS):
        raise ServingError(
            Code.FAILED_PRECONDITION,
            f"model {model_name} has no pulsecast.json metadata (channels, fs, input_steps, "
            "horizon, targets): use :predict with the model's own input tensor",
        )
    try:
        return VersionMetadata.from_dict(metadata)
    except MetadataError as err:
        raise ServingError(Code.FAILED_PRECONDITION,
                           f"model {model_name} has unusable metadata: {err}") from None


def _typed(metadata: VersionMetadata | Mapping[str, Any]) -> VersionMetadata:
    if isinstance(metadata, VersionMetadata):
        return metadata
    return VersionMetadata.from_dict(metadata)


def make_window(request: ForecastRequest,
                metadata: VersionMetadata | Mapping[str, Any]) -> np.ndarray:
    """The model's input window `(input_steps, channels)` float32 from the request's signal,
    each channel conditioned as ingest conditioned the model's training data.

    INVALID_ARGUMENT, before any filtering, for a rate beyond `MAX_UPSAMPLING` or
    `MAX_RATIO_TERM` times the model's, a signal shorter than the window, forecast times past
    the year 9999, or a value no signal in its unit takes or the model's `valid_range` refuses
    (`_readings`, module doc); while conditioning, for a gap too long or a rate no bounded ratio
    resamples closely enough."""
    meta = _typed(metadata)
    channels, model_fs, input_steps = list(meta.channels), meta.fs, meta.input_steps
    picked = _pick_channels(request.signal, channels)
    if request.fs * MAX_UPSAMPLING < model_fs:
        raise invalid(
            f"'fs' of {request.fs!r} Hz is too low for a model sampled at {model_fs:g} Hz "
            f"(at most {MAX_UPSAMPLING}x upsampling)"
        )
    if request.fs > model_fs * MAX_RATIO_TERM:
        raise invalid(
            f"'fs' of {request.fs!r} Hz is too high for a model sampled at {model_fs:g} Hz "
            f"(at most {MAX_RATIO_TERM}x downsampling): downsample the signal first"
        )
    need_s = input_steps / model_fs
    have_s = request.n_samples / request.fs
    if have_s + 0.5 / request.fs < need_s:
        raise invalid(
            f"signal is too short: the model needs at least {_span(need_s)} ({input_steps} "
            f"samples at {model_fs:g} Hz) of every channel, got {_span(have_s)} "
            f"({request.n_samples} samples at {request.fs:g} Hz)"
        )
    _signal_end(request, model_fs, meta.horizon)  # refuse before the model runs
    units = meta.units or ("",) * len(channels)
    columns = [_readings(sent, samples, unit, meta.valid_range)
               for (sent, samples), unit in zip(picked, units, strict=True)]
    window = np.empty((input_steps, len(channels)), dtype=np.float32)
    for j, (name, samples) in enumerate(zip(channels, columns, strict=True)):
        # Only the tail (plus a margin for the filter and for a gap's neighbour) is conditioned:
        # gaps further back cannot spoil the forecast.
        try:
            window[:, j] = condition_tail(samples, request.fs, model_fs, input_steps,
                                          request.max_gap_s, name, margin_s=_FILTER_MARGIN_S,
                                          max_term=MAX_RATIO_TERM)
        except RatioTooCoarseError as e:
            raise invalid(
                f"'fs' of {request.fs!r} Hz has no resampling ratio to the model's "
                f"{model_fs:g} Hz with terms up to {MAX_RATIO_TERM} that keeps the {e.n_out} "
                f"samples of the window and its margin within {MAX_DRIFT:g} samples of their "
                f"times (the closest is off by {e.drift:.3g}): resample the signal to "
                f"{model_fs:g} Hz, or to a rate with a simpler ratio to it, before sending"
            ) from None
        except (GapTooLongError, ValueError) as e:
            raise invalid(str(e)) from None
    return window


def _span(seconds: float) -> str:
    """A duration as a person reads it: seconds for waveforms, minutes for trends."""
    if seconds < 600:
        return f"{seconds:.3f} s"
    return f"{seconds / 60:.4g} minutes"


def _pick_channels(signal: Mapping[str, np.ndarray], channels: list[str]
                   ) -> list[tuple[str, np.ndarray]]:
    """The model's channels in order as (name sent, samples), matched exactly, then by ingest's
    alias table (`models.channels`: case, spacing and MIMIC's spellings, e.g. `ABPMean` /
    `ABP Mean` for `ABPMEAN`)."""
    by_canonical = {canonical_name(name): (name, arr) for name, arr in signal.items()}
    out, missing = [], []
    for name in channels:
        found = (name, signal[name]) if name in signal else by_canonical.get(
            canonical_name(name))
        if found is None:
            missing.append(name)
        out.append(found)
    if missing:
        raise invalid(
            f"signal is missing channel(s) {missing}: the model needs {channels}, "
            f"got {sorted(signal)}"
        )
    return out


def _readings(channel: str, samples: np.ndarray, unit: str,
              valid_range: tuple[float, float] | None) -> np.ndarray:
    """A channel's samples (float64, NaN = no reading) as the model reads them: INVALID_ARGUMENT
    naming the channel and the first bad value for a value above the model's `valid_range`, one
    outside its unit's plausible range (`models.units`) or one beyond float32; values at or
    below the low end of `valid_range` become NaN (a copy: the request is not changed)."""
    u = f" {unit}" if unit else ""  # "412.0 mmHg": a value with its unit, when known
    if valid_range is not None:
        low, high = valid_range
        above = np.flatnonzero(samples > high)  # NaN compares False: no reading stays a gap
        if above.size:
            raise invalid(
                f"channel {channel!r} holds {float(samples[above[0]])!r}{u}, above the "
                f"{high:g}{u} this model takes; values at or below {low:g}{u} are read as no "
                "reading"
            )
    bounds = plausible_range(unit)
    if bounds is not None:
        outside = np.flatnonzero((samples < bounds[0]) | (samples > bounds[1]))
        if outside.size:
            raise invalid(
                f"channel {channel!r} holds {float(samples[outside[0]])!r}{u}, outside the "
                f"plausible range {bounds[0]:g}..{bounds[1]:g} {unit} of any signal in {unit}"
            )
    huge = np.flatnonzero(np.abs(samples) > _FLOAT32_MAX)
    if huge.size:
        raise invalid(
            f"channel {channel!r} holds {float(samples[huge[0]])!r}{u}, beyond the "
            f"+-{_FLOAT32_MAX:.6g} a float32 input holds"
        )
    if valid_range is not None:
        no_reading = samples <= valid_range[0]
        if no_reading.any():
            return np.where(no_reading, np.nan, samples)
    return samples


def make_forecast_response(
    model_name: str, version: int, metadata: VersionMetadata | Mapping[str, Any],
    outputs: Mapping[str, np.ndarray], request: ForecastRequest,
) -> dict[str, Any]:
    """The JSON document of a forecast: per-target lists, timestamps, optional quantiles."""
    meta = _typed(metadata)
    targets = list(meta.targets)
    model_fs = meta.fs
    forecast = outputs.get("forecast")
    if forecast is None:
        if len(outputs) != 1:
            raise invalid(f"model {model_name} has no 'forecast' output, only {sorted(outputs)}")
        forecast = next(iter(outputs.values()))
    forecast = np.asarray(forecast, dtype=np.float64).reshape(-1, len(targets))
    _check_finite(model_name, version, "forecast", forecast)
    horizon = forecast.shape[0]
    doc: dict[str, Any] = {
        "model_name": model_name,
        "version": version,
        "fs": model_fs,
        "units": list(meta.units_of_targets()),
        "targets": targets,
        "forecast": {t: forecast[:, k].tolist() for k, t in enumerate(targets)},
        "timestamps": _timestamps(request, model_fs, horizon),
    }
    levels = list(meta.quantiles)
    if "quantiles" in outputs and levels:
        q = np.asarray(outputs["quantiles"], dtype=np.float64).reshape(
            horizon, len(targets), len(levels)
        )
        _check_finite(model_name, version, "quantiles", q)
        doc["quantiles"] = {
            f"{level:g}": {t: q[:, k, i].tolist() for k, t in enumerate(targets)}
            for i, level in enumerate(levels)
        }
    if meta.events:
        doc["events"] = make_events(model_name, meta, outputs, version)
    return doc


def _check_finite(model_name: str, version: int | None, what: str, values: np.ndarray) -> None:
    """FAILED_PRECONDITION when a model output the answer quotes holds NaN or infinity: the
    answer is a forecast or an error, never a 200 of `null`s (module doc)."""
    if np.isfinite(values).all():
        return
    of = f"model {model_name}" if version is None else f"model {model_name} version {version}"
    log.warning("%s produced a non-finite %s from a request that passed every check", of, what)
    raise ServingError(
        Code.FAILED_PRECONDITION,
        f"{of} produced a non-finite {what} (NaN or infinity) from an input that passed every "
        "check: this version cannot forecast this signal",
    )


def make_events(model_name: str, meta: VersionMetadata, outputs: Mapping[str, np.ndarray],
                version: int | None = None) -> dict[str, dict[str, Any]]:
    """`{"<event>": {"probability", "alarm", "threshold", "horizon_min"}}` for each event the
    version warns of: the probability from its named output `(1, 1)`, the alarm at the
    threshold chosen on training records and stored with the version (`pulsecast.json`)."""
    events: dict[str, dict[str, Any]] = {}
    for name, entry in meta.events.items():
        value = outputs.get(entry["output"])
        if value is None:
            raise ServingError(Code.FAILED_PRECONDITION,
                               f"model {model_name} declares event {name!r} but has no "
                               f"{entry['output']!r} output")
        probability = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
        _check_finite(model_name, version, f"{name} probability", np.float64(probability))
        threshold = float(entry["threshold"])
        events[name] = {"probability": round(probability, 6),
                        "alarm": bool(probability >= threshold),
                        "threshold": threshold, "horizon_min": int(entry["horizon_min"])}
    return events


def _timestamps(request: ForecastRequest, model_fs: float, horizon: int) -> list[Any]:
    """Forecast sample times: ISO when `start_time` was given, else seconds after the end."""
    steps = [k / model_fs for k in range(1, horizon + 1)]
    end = _signal_end(request, model_fs, horizon)
    if end is None:
        return [round(s, 6) for s in steps]
    return [(end + timedelta(seconds=s)).isoformat(timespec="milliseconds") for s in steps]


def _signal_end(request: ForecastRequest, model_fs: float, horizon: int) -> datetime | None:
    """The time of the request's last sample (None without `start_time`); INVALID_ARGUMENT when
    it or the last forecast time `horizon / model_fs` s later passes what a datetime holds (year
    9999), the sum `_timestamps` would otherwise fail on with an OverflowError (a 500)."""
    if request.start_time is None:
        return None
    signal_s = (request.n_samples - 1) / request.fs
    horizon_s = horizon / model_fs
    try:
        end = request.start_time + timedelta(seconds=signal_s)
        end + timedelta(seconds=horizon_s)  # the latest time _timestamps adds
    except OverflowError:
        raise invalid(
            f"'start_time' {request.start_time.isoformat()} plus the signal ({signal_s:.6g} s) "
            f"and the forecast horizon ({horizon_s:.6g} s) passes the year 9999: send the "
            "signal's real start time, or none"
        ) from None
    return end
