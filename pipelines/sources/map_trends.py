"""Synthetic mean-arterial-pressure trends shaped like the PhysioNet/CinC Challenge 2009's records.

One value a minute for `minutes` minutes (default 660), the forecast hour being the last 60
(`t0 = minutes - 60`, sample 600 by default). Each patient is a `MapPatientSpec` drawn from
`(seed, index)` (`make_map_spec`), so the same seed gives the same patient and patient k is the
same whatever the cohort size; `make_map_series` turns it into the series, and
`pipelines.sources.synth.write_map_cohort` writes it as a WFDB numerics record. Pure numpy.

The physiology, per patient:

- a mean-reverting random walk (AR(1) on the minute) around a baseline of 70-95 mmHg, a slow
  wave of a few mmHg, and measurement noise; values kept in 20-250 mmHg, rounded to 0.1 mmHg
  (gain 10, as MIMIC II writes numerics);
- a group, by index, named as the Challenge's: `H2` (even index: an acute hypotensive episode
  whose low phase starts in the first 30 minutes of the forecast hour; H2, not H1, because no
  pressor ends it: it recovers by itself), `C2` (index % 4 == 1: an episode that is over at least
  30 minutes before `t0`), `C1` (index % 4 == 3: none; a third of them dip to 62-70 mmHg, which is
  not an episode);
- an episode: a decline over 3-15 minutes to 45-58 mmHg, held 30-90 minutes, a recovery over
  10-30 minutes; in 60 % of H2 and 40 % of C2 patients a slow drift down of 8-20 mmHg over the
  30-90 minutes before the decline, the warning a forecaster can learn (the others give none);
- monitor artefacts: up to two runs of 1-5 minutes of 0 (no reading) and, in a quarter of the
  patients, one spike of 305-450 mmHg; never on the first or last minute (ingest drops leading and
  trailing gaps, which would move T0 off sample `t0`).

The group says what was drawn; the label is the rule's on what came out:
`ahe_label(series, t0)` applies `models.events.AHE` to minutes `t0..t0+59`, a 0 counting as no
reading (NaN, not low), so an H2 patient whose episode starts late in the hour, or whose low
minutes are broken by missing readings, can be labelled 0, as 4 of the 30 real H records are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.events import AHE
from pipelines.sources.physiology import SynthError, patient_rng

MAP_MINUTES = 660
FORECAST_MIN = 60  # the hour after T0: t0 = minutes - FORECAST_MIN
MIN_MINUTES = 300  # an episode, its lead-in and its recovery before T0 (C2) need 4 h
MAP_GAIN = 10.0  # digital units per mmHg (0.1 mmHg steps)
MAP_RANGE_MMHG = (20.0, 250.0)  # physiological values are kept inside; artefacts are not
GROUPS: tuple[str, ...] = ("H2", "C1", "C2")
_STREAM_SPEC, _STREAM_NOISE = 10, 11  # rng streams, apart from the waveform cohort's


@dataclass(frozen=True)
class Episode:
    """A decline to `level_mmhg` reached at minute `onset_min` (the low phase's start), held
    `duration_min` minutes, then recovered; `lead_drift_mmhg` drifted down over the
    `lead_min` minutes before the decline (0: no warning)."""

    onset_min: int
    level_mmhg: float
    decline_min: int
    duration_min: int
    recovery_min: int
    lead_drift_mmhg: float = 0.0
    lead_min: int = 0


@dataclass(frozen=True)
class MapPatientSpec:
    """One synthetic patient of the MAP cohort (pressures in mmHg, times in minutes)."""

    index: int
    patient_id: str
    group: str  # "H2", "C1" or "C2" (see the module docstring)
    baseline_mmhg: float
    reversion: float  # fraction of the distance to the baseline closed each minute
    walk_mmhg: float  # random-walk step, per minute
    wave_mmhg: float  # slow wave amplitude
    wave_period_min: float
    noise_mmhg: float  # measurement noise
    episode: Episode | None  # an acute hypotensive episode (H2, C2), or a dip that is not one (C1)
    no_reading: tuple[tuple[int, int], ...]  # (first minute, minutes) of 0
    spike: tuple[int, float] | None  # (minute, mmHg) of one artefact above 300

    @property
    def record_name(self) -> str:
        """`p000001n`: a MIMIC patient id, then `n` for a numerics record."""
        return f"{self.patient_id}n"


def _group(index: int) -> str:
    return "H2" if index % 2 == 0 else ("C2" if index % 4 == 1 else "C1")


def _episode(rng: np.random.Generator, group: str, t0: int) -> Episode | None:
    u, i = rng.uniform, rng.integers
    decline, duration, recovery = int(i(3, 16)), int(i(30, 91)), int(i(10, 31))
    if group == "H2":
        onset = t0 + int(i(0, 31))
    elif group == "C2":  # over (recovered) at least 30 min before T0
        latest = t0 - duration - recovery - 30
        onset = int(i(min(120, latest), latest + 1))
    else:
        if u() >= 1 / 3:
            return None
        # a dip that never is an episode: 62-70 mmHg, 15-40 minutes, anywhere
        duration = int(i(15, 41))
        return Episode(int(i(60, t0 + 20)), float(u(62, 70)), decline, duration, recovery)
    warns = u() < (0.6 if group == "H2" else 0.4)
    return Episode(onset, float(u(45, 58)), decline, duration, recovery,
                   lead_drift_mmhg=float(u(8, 20)) if warns else 0.0,
                   lead_min=int(i(30, 91)) if warns else 0)


def make_map_spec(index: int, seed: int, minutes: int = MAP_MINUTES) -> MapPatientSpec:
    """Draw patient `index` of the MAP cohort from `seed`; independent of the cohort size."""
    if index < 0:
        raise SynthError(f"patient index must be >= 0, got {index}")
    check_minutes(minutes)
    rng = patient_rng(seed, index, _STREAM_SPEC)
    u, i = rng.uniform, rng.integers
    group = _group(index)
    baseline = float(u(70, 95))
    shape = (float(u(0.03, 0.1)), float(u(0.6, 1.6)), float(u(1, 5)), float(u(180, 480)),
             float(u(0.5, 2.0)))
    episode = _episode(rng, group, minutes - FORECAST_MIN)
    no_reading = tuple((int(i(1, minutes - 6)), int(i(1, 6))) for _ in range(int(i(0, 3))))
    spike = (int(i(1, minutes - 1)), float(u(305, 450))) if u() < 0.25 else None
    return MapPatientSpec(index, f"p{index + 1:06d}", group, baseline, *shape, episode,
                          no_reading, spike)


def check_minutes(minutes: int) -> None:
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < MIN_MINUTES:
        raise SynthError(f"minutes must be an integer >= {MIN_MINUTES} for the MAP cohort "
                         f"(10 h before T0 and the hour after is 660), got {minutes!r}")


def _ramp(t: np.ndarray, start: float, stop: float) -> np.ndarray:
    """0 before `start`, 1 from `stop` on, linear between."""
    return np.clip((t - start) / max(stop - start, 1.0), 0.0, 1.0)


def _episode_weight(t: np.ndarray, e: Episode) -> np.ndarray:
    """How far each minute is taken toward the episode's level: 0 -> 1 over the decline, 1 while
    low, 1 -> 0 over the recovery."""
    down = _ramp(t, e.onset_min - e.decline_min, e.onset_min)
    up = 1.0 - _ramp(t, e.onset_min + e.duration_min, e.onset_min + e.duration_min + e.recovery_min)
    return np.minimum(down, up)


def make_map_series(spec: MapPatientSpec, seed: int, minutes: int = MAP_MINUTES) -> np.ndarray:
    """The patient's MAP, one value a minute: float64 `(minutes,)` in mmHg, rounded to 0.1 mmHg,
    0 where there is no reading (as the record stores it)."""
    from scipy.signal import lfilter

    check_minutes(minutes)
    rng = patient_rng(seed, spec.index, _STREAM_NOISE)
    t = np.arange(minutes, dtype=np.float64)
    keep = 1.0 - spec.reversion
    steps = rng.normal(0.0, spec.walk_mmhg, minutes)
    first = rng.normal(0.0, spec.walk_mmhg / np.sqrt(1.0 - keep**2))  # the walk's own spread
    walk = lfilter([1.0], [1.0, -keep], steps, zi=[keep * first])[0]  # (minutes,) mmHg
    phase = rng.uniform(0, 2 * np.pi)
    x = spec.baseline_mmhg + walk + spec.wave_mmhg * np.sin(2 * np.pi * t / spec.wave_period_min
                                                            + phase)
    e = spec.episode
    if e is not None:
        lead_start = e.onset_min - e.decline_min - e.lead_min
        release = e.onset_min + e.duration_min + e.recovery_min
        drift = e.lead_drift_mmhg * np.minimum(
            _ramp(t, lead_start, e.onset_min - e.decline_min), 1.0 - _ramp(t, release - 1, release))
        w = _episode_weight(t, e)
        # while low, the walk moves the level a little (a pressure held by the body's last reserve)
        low = e.level_mmhg + 0.3 * walk
        x = (1.0 - w) * (x - drift) + w * low
    x = x + rng.normal(0.0, spec.noise_mmhg, minutes)
    x = np.round(np.clip(x, *MAP_RANGE_MMHG) * MAP_GAIN) / MAP_GAIN
    for first_min, n in spec.no_reading:
        x[first_min : first_min + n] = 0.0
    if spec.spike is not None:
        x[spec.spike[0]] = round(spec.spike[1] * MAP_GAIN) / MAP_GAIN
    return x


def ahe_label(series: np.ndarray, t0: int) -> bool:
    """`models.events.AHE` on minutes `t0..t0+59` of `series` (mmHg, 0 = no reading -> NaN)."""
    hour = np.asarray(series[t0 : t0 + AHE.horizon_min], dtype=np.float64)
    return bool(AHE.label(np.where(hour == 0, np.nan, hour)))
