"""The synthetic cohort's physiology: channels and units, and each patient's drawn `PatientSpec`.

A patient's physiology is a `PatientSpec` drawn from `(seed, index)` (`make_patient_spec`), so the
same seed gives the same patient and patient k is the same patient whatever the cohort size. Its
signals follow from the spec and the seed (`pipelines.sources.waveforms`); `pipelines.sources.synth`
writes them as WFDB files. Pure numpy, no disk.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

FS_HZ = 125.0
CHANNELS: tuple[str, ...] = ("II", "ABP", "PLETH", "RESP")
UNITS: tuple[str, ...] = ("mV", "mmHg", "NU", "NU")
NUMERIC_CHANNELS: tuple[str, ...] = ("HR", "SpO2", "ABP Mean")
NUMERIC_UNITS: tuple[str, ...] = ("bpm", "%", "mmHg")
NUMERICS_FS_HZ = 1.0 / 60.0
# Digital units per physical unit for fmt 16 (range +-32767 counts): 1 uV, 0.01 mmHg, 0.001 NU.
ADC_GAIN: dict[str, float] = {"II": 1000.0, "ABP": 100.0, "PLETH": 1000.0, "RESP": 1000.0}
NUMERIC_GAIN = 10.0
_MULTI_SEGMENT_EVERY = 4


class SynthError(ValueError):
    """A synthetic-cohort request that cannot be met; the message names the bad value."""


@dataclass(frozen=True)
class PatientSpec:
    """One patient's physiology: rates in per-minute, times in s, amplitudes in channel units."""

    index: int
    patient_id: str
    start: dt.datetime
    multi_segment: bool
    hr_bpm: float  # mean heart rate
    hr_drift_bpm: float  # slow drift (minutes)
    lf_bpm: float  # Mayer waves, ~0.1 Hz
    hf_bpm: float  # beat-to-beat noise
    rsa_bpm: float  # respiratory sinus arrhythmia
    resp_rate_bpm: float  # breaths per minute
    resp_amp: float  # NU
    ecg_r_mv: float
    ecg_t_frac: float  # T amplitude relative to R
    ecg_resp_mod: float  # fractional R amplitude change over a breath
    wander_mv: float  # baseline wander amplitude
    sys_mmhg: float
    dia_mmhg: float
    map_drift_mmhg: float
    abp_delay_s: float  # R peak -> arterial upstroke
    windkessel_s: float  # arterial RC time constant
    notch_frac: float  # dicrotic notch depth relative to pulse pressure
    pleth_delay_s: float  # R peak -> pleth upstroke (> abp_delay_s)
    pleth_amp: float  # NU
    spo2_pct: float
    noise_level: float  # multiplies every channel's noise

    @property
    def record_name(self) -> str:
        return f"{self.patient_id}-{self.start:%Y-%m-%d-%H-%M}"

    @property
    def segment_prefix(self) -> str:
        """MIMIC-style numeric id that names the segments of a multi-segment record."""
        return f"3{self.index + 1:06d}"


def patient_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def make_patient_spec(index: int, seed: int) -> PatientSpec:
    """Draw patient `index`'s physiology from `seed`; independent of the cohort size."""
    if index < 0:
        raise SynthError(f"patient index must be >= 0, got {index}")
    rng = patient_rng(seed, index, 0)
    u = rng.uniform
    sys_mmhg = u(100, 150)
    abp_delay_s = u(0.12, 0.22)
    day = int(rng.integers(0, 3650))
    minute = int(rng.integers(0, 24 * 60))
    start = dt.datetime(2150, 1, 1) + dt.timedelta(days=day, minutes=minute)
    return PatientSpec(
        index=index,
        patient_id=f"p{index + 1:06d}",
        start=start,
        multi_segment=index % _MULTI_SEGMENT_EVERY == 1,
        hr_bpm=u(55, 105),
        hr_drift_bpm=u(1, 6),
        lf_bpm=u(0.5, 3),
        hf_bpm=u(0.3, 1.5),
        rsa_bpm=u(1, 6),
        resp_rate_bpm=u(10, 22),
        resp_amp=u(0.3, 1.0),
        ecg_r_mv=u(0.7, 1.8),
        ecg_t_frac=u(0.15, 0.4),
        ecg_resp_mod=u(0.03, 0.15),
        wander_mv=u(0.02, 0.2),
        sys_mmhg=sys_mmhg,
        dia_mmhg=min(u(55, 90), sys_mmhg - 30),
        map_drift_mmhg=u(2, 8),
        abp_delay_s=abp_delay_s,
        windkessel_s=u(1.2, 2.0),
        notch_frac=u(0.05, 0.15),
        pleth_delay_s=abp_delay_s + u(0.08, 0.2),
        pleth_amp=u(0.4, 1.5),
        spo2_pct=u(94, 99.5),
        noise_level=u(0.5, 3.0),
    )


def make_cohort_specs(patients: int, seed: int) -> list[PatientSpec]:
    """Specs of patients 0..patients-1."""
    return [make_patient_spec(i, seed) for i in range(patients)]
