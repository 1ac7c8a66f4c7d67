"""The synthetic cohort's signals: one patient's coupled waveforms, numerics and layout in memory.

Generation is pure numpy (`make_*`): a patient's physiology is a `PatientSpec` drawn from
`(seed, index)` (`pipelines.sources.physiology`), and its signals follow from the spec and the
seed, so the same seed gives byte-identical files and patient k is the same patient whatever the
cohort size. Beats drive everything: R peaks come from an instantaneous heart rate (mean + slow
drift + Mayer waves + RSA + beat-to-beat noise); the ECG is a sum of Gaussian P-Q-R-S-T bumps per
beat (McSharry-style, T position scaling with sqrt(RR)); ABP is a two-element windkessel driven by
an ejection pulse that starts `abp_delay_s` after each R peak, plus a dicrotic notch; PLETH is a
slower, smoother windkessel delayed further; respiration modulates heart rate, ECG amplitude and
baseline, stroke volume and the pleth baseline.

Values are quantized to the resolution `pipelines.sources.synth` stores, so memory equals what
wfdb reads back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipelines.sources.physiology import (
    ADC_GAIN,
    CHANNELS,
    FS_HZ,
    NUMERIC_CHANNELS,
    NUMERIC_GAIN,
    PatientSpec,
    SynthError,
    patient_rng,
)

_LEAD_IN_S = 10.0  # generated then dropped, so filters and drifts start settled
_MIN_SEGMENT_S = 12.0


@dataclass(frozen=True)
class Segment:
    """Samples `[start, stop)` of a record; `channels` empty for a `~` null segment."""

    start: int
    stop: int
    channels: tuple[str, ...]


@dataclass(frozen=True)
class PatientSignals:
    """A patient in memory: exactly what `write_cohort` writes and wfdb reads back."""

    spec: PatientSpec
    fs: float
    waveforms: dict[str, np.ndarray]  # channel -> (time,) physical units, NaN in gaps
    numerics: dict[str, np.ndarray]  # channel -> (minutes,) per minute, 0 = missing
    r_peaks_s: np.ndarray  # (beats,) R-peak times from the record start, s
    segments: tuple[Segment, ...]  # one segment with every channel unless multi-segment


def _lowpass(x: np.ndarray, tau_samples: float, order: int = 1) -> np.ndarray:
    """`order` cascaded first-order lowpasses with time constant `tau_samples` (unit DC gain)."""
    from scipy.signal import lfilter

    a = math.exp(-1.0 / max(tau_samples, 1e-9))
    for _ in range(order):
        x = lfilter([1 - a], [1, -a], x, zi=[a * x[0]])[0]
    return x


def _slow_noise(rng: np.random.Generator, t: np.ndarray, corr_s: float) -> np.ndarray:
    """Unit-variance smooth noise with correlation time `corr_s`, made at 4 points per corr_s."""
    step = corr_s / 4
    knots_t = np.arange(t[0] - 4 * corr_s, t[-1] + step, step)
    knots = _lowpass(rng.standard_normal(knots_t.size), 4.0)
    knots = (knots - knots.mean()) / (knots.std() + 1e-12)
    return np.interp(t, knots_t, knots)


def _breath_shape(phase: np.ndarray) -> np.ndarray:
    """Breath waveform in [-1, 1] from a phase in radians: inspiration 40 % of the cycle."""
    x = np.mod(phase / (2 * np.pi), 1.0)
    insp = 0.4
    rise = -np.cos(np.pi * x / insp)
    # Expiration falls fast then levels off, as passive recoil does.
    fall = np.cos(np.pi * np.clip((x - insp) / (1 - insp), 0, 1) ** 0.6)
    return np.where(x < insp, rise, fall)


def _since_last(events: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each time: index of the latest event at or before it (-1 if none) and the time since."""
    idx = np.searchsorted(events, t, side="right") - 1
    since = np.where(idx >= 0, t - events[np.maximum(idx, 0)], np.inf)
    return idx, since


def _intervals(events: np.ndarray) -> np.ndarray:
    """Interval after each event, s (the last repeats the one before)."""
    rr = np.diff(events)
    return np.append(rr, rr[-1])


def _make_ecg(t: np.ndarray, r_peaks: np.ndarray, r_amp: np.ndarray, t_frac: float) -> np.ndarray:
    """ECG (mV) as Gaussian P, Q, R, S, T bumps around each beat. Shapes: t (time,)."""
    rr_prev = np.insert(np.diff(r_peaks), 0, np.diff(r_peaks)[0])
    idx, _ = _since_last(r_peaks, t)
    ecg = np.zeros_like(t)
    for shift in (-1, 0, 1):  # previous beat's T, this beat, next beat's P
        b = idx + shift
        ok = (b >= 0) & (b < r_peaks.size)
        bb = np.clip(b, 0, r_peaks.size - 1)
        dt_s = t - r_peaks[bb]
        sq = np.sqrt(rr_prev[bb])
        # (relative amplitude, centre s, width s); QT follows Bazett, so T moves with sqrt(RR).
        waves = (
            (0.12, -0.17, 0.022),
            (-0.10, -0.028, 0.008),
            (1.0, 0.0, 0.011),
            (-0.22, 0.03, 0.010),
            (t_frac, 0.4 * sq - 0.09, 0.05 * sq),
        )
        beat = sum(a * np.exp(-0.5 * ((dt_s - c) / w) ** 2) for a, c, w in waves)
        ecg += np.where(ok, r_amp[bb] * beat, 0.0)
    return ecg


def _make_pulse(t: np.ndarray, onsets: np.ndarray, stroke: np.ndarray, eject_scale: float,
                rc_s: float, fs: float, notch: float, notch_lag_s: float,
                direct: float) -> np.ndarray:
    """Three-element windkessel pressure from an ejection pulse per onset, normalized to ~[0, 1].

    `direct` is the characteristic-impedance share: flow that shows in pressure at once, which
    gives the steep systolic upstroke; the RC part gives the exponential diastolic runoff.
    """
    idx, since = _since_last(onsets, t)
    rr = _intervals(onsets)[np.maximum(idx, 0)]
    eject_s = eject_scale * np.sqrt(rr)
    x = np.clip(since / eject_s, 0, 1)
    # sin^2 of a warped time: flow peaks early in ejection, as the aortic flow does.
    flow = np.where((idx >= 0) & (since < eject_s), np.sin(np.pi * x**0.5) ** 2, 0.0)
    flow *= stroke[np.maximum(idx, 0)]
    runoff = _lowpass(flow, rc_s * fs)
    p = runoff / np.percentile(runoff, 98) + direct * flow
    lo, hi = np.percentile(p, [2, 98])
    p = (p - lo) / (hi - lo)
    # Aortic valve closure: a short dip, then the reflected dicrotic wave.
    d = since - eject_s
    p += notch * (-np.exp(-0.5 * (d / 0.012) ** 2)
                  + 0.8 * np.exp(-0.5 * ((d - notch_lag_s) / 0.035) ** 2))
    return p


def _make_segments(spec: PatientSpec, n: int, fs: float, rng: np.random.Generator
                   ) -> tuple[Segment, ...]:
    if not spec.multi_segment:
        return (Segment(0, n, CHANNELS),)
    # all channels | ~ null (3-8 s) | no ABP (transducer off) | all channels; each >= 12 s.
    min_seg = int(_MIN_SEGMENT_S * fs)
    a = int(n * rng.uniform(0.3, 0.4))
    b = a + int(rng.uniform(3, 8) * fs)
    c = b + max(min_seg, int(n * rng.uniform(0.1, 0.2)))
    if n - c < min_seg:
        raise SynthError(f"record of {n} samples is too short for a multi-segment layout")
    no_abp = tuple(ch for ch in CHANNELS if ch != "ABP")
    return (Segment(0, a, CHANNELS), Segment(a, b, ()), Segment(b, c, no_abp),
            Segment(c, n, CHANNELS))


def _apply_gaps(waves: dict[str, np.ndarray], segments: tuple[Segment, ...], fs: float,
                rng: np.random.Generator) -> None:
    """NaN where a segment lacks a channel, plus 1-3 dropouts of 2-5 s in distinct channels."""
    for seg in segments:
        for ch in CHANNELS:
            if ch not in seg.channels:
                waves[ch][seg.start:seg.stop] = np.nan
    n = next(iter(waves.values())).size
    # One dropout per channel at most, shorter than any segment: no channel is ever all NaN.
    for ch in rng.choice(CHANNELS, size=int(rng.integers(1, 4)), replace=False):
        length = int(rng.uniform(2, 5) * fs)
        start = int(rng.integers(int(2 * fs), n - length - int(2 * fs)))
        waves[str(ch)][start:start + length] = np.nan


def _make_numerics(spec: PatientSpec, hr: np.ndarray, abp: np.ndarray, fs: float,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-minute HR, SpO2 and mean ABP; 0 where missing (ABP mostly absent, or a monitor miss)."""
    per_min = int(round(60 * fs))
    minutes = hr.size // per_min
    hr_min = hr[: minutes * per_min].reshape(minutes, per_min).mean(axis=1)
    abp_min = abp[: minutes * per_min].reshape(minutes, per_min)
    counts = np.sum(~np.isnan(abp_min), axis=1)
    map_min = np.nansum(abp_min, axis=1) / np.maximum(counts, 1)
    map_min[counts < per_min // 2] = 0.0  # the monitor reports 0 when ABP is mostly absent
    spo2 = np.clip(spec.spo2_pct + 0.7 * np.cumsum(rng.standard_normal(minutes)) / 3, 85, 100)
    numerics = {"HR": hr_min, "SpO2": spo2, "ABP Mean": map_min}
    for _ in range(int(rng.integers(1, 3))):  # the monitor's own misses
        ch = NUMERIC_CHANNELS[int(rng.integers(len(NUMERIC_CHANNELS)))]
        numerics[ch][int(rng.integers(minutes))] = 0.0
    # Stored at 1/NUMERIC_GAIN resolution: round here so memory equals what wfdb reads back.
    return {k: np.round(v * NUMERIC_GAIN) / NUMERIC_GAIN for k, v in numerics.items()}


def make_patient_signals(spec: PatientSpec, seed: int, minutes: float = 10.0,
                         fs: float = FS_HZ) -> PatientSignals:
    """Generate one patient's waveforms, numerics and layout; deterministic in (spec, seed)."""
    rng = patient_rng(seed, spec.index, 1)
    lead = int(_LEAD_IN_S * fs)
    n = int(round(minutes * 60 * fs))
    t = np.arange(n + lead) / fs - _LEAD_IN_S  # s; the record starts at t = 0

    resp_rate = spec.resp_rate_bpm * (1 + 0.08 * _slow_noise(rng, t, 30.0))
    resp_phase = 2 * np.pi * np.cumsum(resp_rate / 60) / fs + rng.uniform(0, 2 * np.pi)
    breath = _breath_shape(resp_phase)  # (time,) +1 = end of inspiration

    hr = (spec.hr_bpm + spec.hr_drift_bpm * _slow_noise(rng, t, 90.0)
          + spec.lf_bpm * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 2 * np.pi))
          + spec.rsa_bpm * breath  # heart speeds up on inspiration
          + spec.hf_bpm * _slow_noise(rng, t, 1.5))
    hr = np.clip(hr, 35, 180)
    cardiac = np.cumsum(hr / 60) / fs + rng.uniform(0, 1)  # beats
    beats = np.arange(math.ceil(cardiac[0]), math.floor(cardiac[-1]) + 1)
    r_peaks = np.interp(beats, cardiac, t)  # (beats,) s
    breath_at_r = np.interp(r_peaks, t, breath)
    noise = spec.noise_level

    r_amp = spec.ecg_r_mv * (1 + spec.ecg_resp_mod * breath_at_r
                             + 0.01 * rng.standard_normal(r_peaks.size))
    ecg = (_make_ecg(t, r_peaks, r_amp, spec.ecg_t_frac)
           + spec.wander_mv * (0.7 * np.roll(breath, int(0.3 * fs)) + 0.5 * _slow_noise(rng, t, 20))
           + 0.01 * noise * rng.standard_normal(t.size))

    rr = _intervals(r_peaks)
    # Stroke volume: bigger after a longer filling time (Frank-Starling), smaller on inspiration.
    stroke = (rr / rr.mean()) ** 0.3 * (1 - 0.05 * breath_at_r)
    onsets = r_peaks + spec.abp_delay_s + 0.004 * rng.standard_normal(r_peaks.size)
    pulse = _make_pulse(t, onsets, stroke, 0.3, spec.windkessel_s, fs, spec.notch_frac, 0.06,
                        direct=0.4)
    abp = (spec.dia_mmhg + (spec.sys_mmhg - spec.dia_mmhg) * pulse
           + spec.map_drift_mmhg * _slow_noise(rng, t, 120.0) - 3 * breath
           + 0.4 * noise * rng.standard_normal(t.size))

    onsets = r_peaks + spec.pleth_delay_s
    pleth = _make_pulse(t, onsets, stroke, 0.4, 0.6, fs, 0.3 * spec.notch_frac, 0.1,
                        direct=0.3)
    pleth = _lowpass(pleth, 0.03 * fs, order=2)  # tissue smooths the volume pulse
    pleth = (1.0 + spec.pleth_amp * (pleth * (1 + 0.1 * breath) + 0.25 * breath
                                     + 0.15 * _slow_noise(rng, t, 60.0))
             + 0.005 * noise * rng.standard_normal(t.size))

    cardiac_phase = 2 * np.pi * np.mod(cardiac, 1.0)
    resp = spec.resp_amp * (breath + 0.1 * _slow_noise(rng, t, 40.0)
                            + 0.03 * np.cos(cardiac_phase)  # cardiogenic oscillation
                            + 0.01 * noise * rng.standard_normal(t.size))

    # Quantized to the stored resolution, so memory equals what wfdb reads back.
    waves = {ch: np.round(x[lead:] * ADC_GAIN[ch]) / ADC_GAIN[ch]
             for ch, x in zip(CHANNELS, (ecg, abp, pleth, resp), strict=True)}
    segments = _make_segments(spec, n, fs, rng)
    _apply_gaps(waves, segments, fs, rng)
    numerics = _make_numerics(spec, hr[lead:], waves["ABP"], fs, rng)
    return PatientSignals(spec=spec, fs=fs, waveforms=waves, numerics=numerics,
                          r_peaks_s=r_peaks[r_peaks >= 0], segments=segments)


def make_patient(spec: PatientSpec, seed: int, minutes: float = 10.0,
                 fs: float = FS_HZ) -> dict[str, np.ndarray]:
    """One patient's waveforms in memory: channel -> (time,) physical units, NaN in gaps."""
    return make_patient_signals(spec, seed, minutes, fs).waveforms


def make_signal_matrix(waveforms: dict[str, np.ndarray],
                       channels: tuple[str, ...] = CHANNELS) -> np.ndarray:
    """Stack channels into `(time, channels)` float64, in `channels` order."""
    return np.column_stack([waveforms[ch] for ch in channels])
