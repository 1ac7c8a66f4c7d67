"""The synthetic cohort: coupled ECG, arterial pressure, pleth and respiration as real WFDB files.

Generation is pure numpy (`make_*`): a patient's physiology is a `PatientSpec` drawn from
`(seed, index)`, and its signals follow from the spec and the seed, so the same seed gives
byte-identical files and patient k is the same patient whatever the cohort size. Beats drive
everything: R peaks come from an instantaneous heart rate (mean + slow drift + Mayer waves + RSA
+ beat-to-beat noise); the ECG is a sum of Gaussian P-Q-R-S-T bumps per beat (McSharry-style, T
position scaling with sqrt(RR)); ABP is a two-element windkessel driven by an ejection pulse that
starts `abp_delay_s` after each R peak, plus a dicrotic notch; PLETH is a slower, smoother
windkessel delayed further; respiration modulates heart rate, ECG amplitude and baseline, stroke
volume and the pleth baseline.

On disk (`write_cohort`, the one edge function), MIMIC-III-matched style:

    <out>/RECORDS                        every record, `<patient_id>/<record>` per line
    <out>/cohort.json                    the config and every patient's spec
    <out>/p000001/<record>.hea|.dat      waveforms II (mV), ABP (mmHg), PLETH (NU), RESP (NU)
    <out>/p000001/<record>n.hea|.dat     numerics HR (bpm), SpO2 (%), ABP Mean (mmHg) at fs 1/60;
                                         0 means missing, as in MIMIC
    <out>/p000002/<record>.hea           multi-segment master (every patient with index % 4 == 1):
    <out>/p000002/3000002_layout.hea     layout header, then segments `3000002_0001...`, a `~`
                                         null segment, and one segment without ABP

`<record>` is `<patient_id>-YYYY-MM-DD-HH-MM` (the record's start; dates lie in the 2150s, like
MIMIC's shifted dates). Waveforms have NaN gaps of a few seconds in some channels (never a whole
channel). The folder is staged and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FS_HZ = 125.0
CHANNELS: tuple[str, ...] = ("II", "ABP", "PLETH", "RESP")
UNITS: tuple[str, ...] = ("mV", "mmHg", "NU", "NU")
NUMERIC_CHANNELS: tuple[str, ...] = ("HR", "SpO2", "ABP Mean")
NUMERIC_UNITS: tuple[str, ...] = ("bpm", "%", "mmHg")
NUMERICS_FS_HZ = 1.0 / 60.0
# Digital units per physical unit for fmt 16 (range +-32767 counts): 1 uV, 0.01 mmHg, 0.001 NU.
_ADC_GAIN: dict[str, float] = {"II": 1000.0, "ABP": 100.0, "PLETH": 1000.0, "RESP": 1000.0}
_NUMERIC_GAIN = 10.0
_WFDB_NAN = -32768  # fmt 16's "no sample" value
_LEAD_IN_S = 10.0  # generated then dropped, so filters and drifts start settled
_MULTI_SEGMENT_EVERY = 4
_MIN_SEGMENT_S = 12.0


class SynthError(ValueError):
    """A synthetic-cohort request that cannot be met; the message names the bad value."""


@dataclass(frozen=True)
class SynthConfig:
    """What `pulsecast synth` makes: `patients` patients of `minutes` minutes each at `fs` Hz."""

    out: Path
    patients: int = 8
    minutes: float = 10.0
    seed: int = 0
    fs: float = FS_HZ
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.patients <= 999_999:
            raise SynthError(f"patients must be between 1 and 999999, got {self.patients}")
        if not (math.isfinite(self.minutes) and self.minutes >= 1):
            raise SynthError(f"minutes must be >= 1 (numerics are per minute), got {self.minutes}")
        if not (math.isfinite(self.fs) and self.fs >= 100):
            raise SynthError(f"fs must be >= 100 Hz so the QRS is sampled, got {self.fs}")
        if self.seed < 0:
            raise SynthError(f"seed must be >= 0, got {self.seed}")


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


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def make_patient_spec(index: int, seed: int) -> PatientSpec:
    """Draw patient `index`'s physiology from `seed`; independent of the cohort size."""
    if index < 0:
        raise SynthError(f"patient index must be >= 0, got {index}")
    rng = _rng(seed, index, 0)
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
    # Stored at 1/_NUMERIC_GAIN resolution: round here so memory equals what wfdb reads back.
    return {k: np.round(v * _NUMERIC_GAIN) / _NUMERIC_GAIN for k, v in numerics.items()}


def make_patient_signals(spec: PatientSpec, seed: int, minutes: float = 10.0,
                         fs: float = FS_HZ) -> PatientSignals:
    """Generate one patient's waveforms, numerics and layout; deterministic in (spec, seed)."""
    rng = _rng(seed, spec.index, 1)
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
    waves = {ch: np.round(x[lead:] * _ADC_GAIN[ch]) / _ADC_GAIN[ch]
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


def _digital(signal: np.ndarray, gain: float) -> np.ndarray:
    """Physical -> fmt 16 counts (baseline 0), NaN -> the WFDB "no sample" value."""
    d = np.clip(np.round(signal * gain), -32767, 32767)
    return np.where(np.isnan(signal), _WFDB_NAN, d).astype(np.int16)


def _write_segment(name: str, signals: PatientSignals, seg: Segment, start: dt.datetime,
                   folder: Path, base_date: bool) -> None:
    import wfdb

    chans = list(seg.channels)
    d = np.column_stack([_digital(signals.waveforms[ch][seg.start:seg.stop], _ADC_GAIN[ch])
                         for ch in chans])
    wfdb.wrsamp(name, fs=signals.fs, units=[UNITS[CHANNELS.index(c)] for c in chans],
                sig_name=chans, d_signal=d, fmt=["16"] * len(chans),
                adc_gain=[_ADC_GAIN[c] for c in chans], baseline=[0] * len(chans),
                base_time=start.time(), base_date=start.date() if base_date else None,
                write_dir=str(folder))


def _wfdb_time(when: dt.datetime) -> str:
    return f"{when:%H:%M:%S}.{when.microsecond // 1000:03d}"


def _write_multi_segment(signals: PatientSignals, folder: Path) -> None:
    """Segments with wrsamp, then the layout and master headers by hand (MIMIC's layout)."""
    spec, fs = signals.spec, signals.fs
    prefix = spec.segment_prefix
    lines = [f"{prefix}_layout 0"]
    k = 0
    for seg in signals.segments:
        if not seg.channels:
            lines.append(f"~ {seg.stop - seg.start}")
            continue
        k += 1
        name = f"{prefix}_{k:04d}"
        _write_segment(name, signals, seg, spec.start + dt.timedelta(seconds=seg.start / fs),
                       folder, base_date=False)
        lines.append(f"{name} {seg.stop - seg.start}")
    layout = [f"{prefix}_layout {len(CHANNELS)} {fs:g} 0 {_wfdb_time(spec.start)}"]
    layout += [f"~ 0 {_ADC_GAIN[ch]:g}/{u} 16 0 0 0 0 {ch}"
               for ch, u in zip(CHANNELS, UNITS, strict=True)]
    (folder / f"{prefix}_layout.hea").write_text("\n".join(layout) + "\n")
    n = signals.segments[-1].stop
    master = (f"{spec.record_name}/{len(lines)} {len(CHANNELS)} {fs:g} {n} "
              f"{_wfdb_time(spec.start)} {spec.start:%d/%m/%Y}")
    (folder / f"{spec.record_name}.hea").write_text("\n".join([master, *lines]) + "\n")


def _write_numerics(signals: PatientSignals, folder: Path) -> None:
    import wfdb

    spec = signals.spec
    d = np.column_stack([_digital(signals.numerics[ch], _NUMERIC_GAIN) for ch in NUMERIC_CHANNELS])
    wfdb.wrsamp(f"{spec.record_name}n", fs=NUMERICS_FS_HZ, units=list(NUMERIC_UNITS),
                sig_name=list(NUMERIC_CHANNELS), d_signal=d, fmt=["16"] * d.shape[1],
                adc_gain=[_NUMERIC_GAIN] * d.shape[1], baseline=[0] * d.shape[1],
                base_time=spec.start.time(), base_date=spec.start.date(), write_dir=str(folder))


def write_patient(signals: PatientSignals, folder: Path) -> Path:
    """Write one patient's waveform and numerics records into `folder`; returns the record path."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = signals.spec
    if spec.multi_segment:
        _write_multi_segment(signals, folder)
    else:
        _write_segment(spec.record_name, signals, signals.segments[0], spec.start, folder,
                       base_date=True)
    _write_numerics(signals, folder)
    return folder / spec.record_name


def _cohort_metadata(config: SynthConfig, specs: list[PatientSpec]) -> dict:
    def spec_dict(s: PatientSpec) -> dict:
        d = asdict(s)
        d["start"] = s.start.isoformat()
        d["record_name"] = s.record_name
        return d

    return {"generator": "pulsecast.synth", "seed": config.seed, "minutes": config.minutes,
            "fs": config.fs, "channels": list(CHANNELS), "units": list(UNITS),
            "numeric_channels": list(NUMERIC_CHANNELS), "numeric_units": list(NUMERIC_UNITS),
            "patients": [spec_dict(s) for s in specs]}


def write_cohort(config: SynthConfig) -> list[Path]:
    """Generate and write the cohort to `config.out`; returns each patient's waveform record path.

    The numerics record of `<path>` is `<path>n`. The folder is staged beside `out` and renamed
    into place; an existing non-empty `out` is replaced only with `overwrite`.
    """
    from pipelines.dataset import staged_dir
    from pipelines.progress import progress

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is a file, not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise SynthError(f"output folder {out} already exists and is not empty "
                         "(choose another --out or pass --overwrite)")
    specs = make_cohort_specs(config.patients, config.seed)
    records: list[str] = []
    with staged_dir(out) as stage:
        for spec in progress(specs, total=len(specs), desc="synth", logger=log):
            signals = make_patient_signals(spec, config.seed, config.minutes, config.fs)
            write_patient(signals, stage / spec.patient_id)
            records += [f"{spec.patient_id}/{spec.record_name}",
                        f"{spec.patient_id}/{spec.record_name}n"]
        (stage / "RECORDS").write_text("\n".join(records) + "\n")
        meta = _cohort_metadata(config, specs)
        (stage / "cohort.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        stage.chmod(0o755)  # mkdtemp makes it 0700
    return [out / s.patient_id / s.record_name for s in specs]
