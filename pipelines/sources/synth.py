"""The synthetic cohort on disk: coupled ECG, arterial pressure, pleth and respiration as WFDB.

`write_cohort` is the one edge function: it draws every patient (`pipelines.sources.physiology`),
generates their signals (`pipelines.sources.waveforms`, pure numpy: the same seed gives
byte-identical files) and writes them, MIMIC-III-matched style:

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
channel).

`write_map_cohort` (`pulsecast synth --kind map`) writes mean arterial pressure trends with acute
hypotensive episodes (`pipelines.sources.map_trends`), laid out as the PhysioNet/CinC Challenge
2009's training folder:

    <out>/RECORDS                        every record, one a line
    <out>/labels.csv                     record,group,ahe_in_forecast_window,t0_sample
    <out>/cohort.json                    the config and every patient's spec
    <out>/p000001n.hea|.dat              numerics: one signal `ABPMean` (mmHg), fs 1/60, fmt 16,
                                         gain 10, 660 minutes; T0 = sample 600; 0 = no reading

Either folder is staged and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipelines.sources.map_trends import (
    FORECAST_MIN,
    MAP_GAIN,
    MAP_MINUTES,
    MapPatientSpec,
    ahe_label,
    check_minutes,
    make_map_series,
    make_map_spec,
)
from pipelines.sources.physiology import (
    ADC_GAIN,
    CHANNELS,
    FS_HZ,
    NUMERIC_CHANNELS,
    NUMERIC_GAIN,
    NUMERIC_UNITS,
    NUMERICS_FS_HZ,
    UNITS,
    PatientSpec,
    SynthError,
    make_cohort_specs,
)
from pipelines.sources.waveforms import PatientSignals, Segment, make_patient_signals

log = logging.getLogger(__name__)

_WFDB_NAN = -32768  # fmt 16's "no sample" value


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


def _digital(signal: np.ndarray, gain: float) -> np.ndarray:
    """Physical -> fmt 16 counts (baseline 0), NaN -> the WFDB "no sample" value."""
    d = np.clip(np.round(signal * gain), -32767, 32767)
    return np.where(np.isnan(signal), _WFDB_NAN, d).astype(np.int16)


def _write_segment(name: str, signals: PatientSignals, seg: Segment, start: dt.datetime,
                   folder: Path, base_date: bool) -> None:
    import wfdb

    chans = list(seg.channels)
    d = np.column_stack([_digital(signals.waveforms[ch][seg.start:seg.stop], ADC_GAIN[ch])
                         for ch in chans])
    wfdb.wrsamp(name, fs=signals.fs, units=[UNITS[CHANNELS.index(c)] for c in chans],
                sig_name=chans, d_signal=d, fmt=["16"] * len(chans),
                adc_gain=[ADC_GAIN[c] for c in chans], baseline=[0] * len(chans),
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
    layout += [f"~ 0 {ADC_GAIN[ch]:g}/{u} 16 0 0 0 0 {ch}"
               for ch, u in zip(CHANNELS, UNITS, strict=True)]
    (folder / f"{prefix}_layout.hea").write_text("\n".join(layout) + "\n")
    n = signals.segments[-1].stop
    master = (f"{spec.record_name}/{len(lines)} {len(CHANNELS)} {fs:g} {n} "
              f"{_wfdb_time(spec.start)} {spec.start:%d/%m/%Y}")
    (folder / f"{spec.record_name}.hea").write_text("\n".join([master, *lines]) + "\n")


def _write_numerics(signals: PatientSignals, folder: Path) -> None:
    import wfdb

    spec = signals.spec
    d = np.column_stack([_digital(signals.numerics[ch], NUMERIC_GAIN) for ch in NUMERIC_CHANNELS])
    wfdb.wrsamp(f"{spec.record_name}n", fs=NUMERICS_FS_HZ, units=list(NUMERIC_UNITS),
                sig_name=list(NUMERIC_CHANNELS), d_signal=d, fmt=["16"] * d.shape[1],
                adc_gain=[NUMERIC_GAIN] * d.shape[1], baseline=[0] * d.shape[1],
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


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty folder without `overwrite`, naming it."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is a file, not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"output folder {out} already exists and is not empty "
                         "(choose another --out or pass --overwrite)")


def write_cohort(config: SynthConfig) -> list[Path]:
    """Generate and write the cohort to `config.out`; returns each patient's waveform record path.

    The numerics record of `<path>` is `<path>n`. The folder is staged beside `out` and renamed
    into place; an existing non-empty `out` is replaced only with `overwrite`.
    """
    from pipelines.dataset.contract import staged_dir
    from pipelines.progress import progress

    out = Path(config.out)
    _check_out(out, config.overwrite)
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


MAP_SIGNAL = "ABPMean"  # the Challenge 2009 records' signal name (MIMIC II numerics)
LABEL_COLUMNS: tuple[str, ...] = ("record", "group", "ahe_in_forecast_window", "t0_sample")


@dataclass(frozen=True)
class MapSynthConfig:
    """What `pulsecast synth --kind map` makes: `patients` MAP trends of `minutes` minutes, T0 at
    `minutes - 60` (`pipelines.sources.map_trends`)."""

    out: Path
    patients: int = 24
    minutes: int = MAP_MINUTES
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.patients <= 999_999:
            raise SynthError(f"patients must be between 1 and 999999, got {self.patients}")
        check_minutes(self.minutes)
        if self.seed < 0:
            raise SynthError(f"seed must be >= 0, got {self.seed}")

    @property
    def t0(self) -> int:
        return self.minutes - FORECAST_MIN


def write_map_record(spec: MapPatientSpec, series: np.ndarray, t0: int, folder: Path) -> Path:
    """One numerics record as MIMIC II writes it (the Challenge 2009's header, T0 in a comment)."""
    import wfdb

    wfdb.wrsamp(spec.record_name, fs=NUMERICS_FS_HZ, units=["mmHg"], sig_name=[MAP_SIGNAL],
                d_signal=_digital(series, MAP_GAIN)[:, None], fmt=["16"], adc_gain=[MAP_GAIN],
                baseline=[0],
                comments=[f"T0 at minute {t0} (sample {t0}); minutes {t0}-{t0 + FORECAST_MIN - 1}"
                          " are the forecast window", f"pulsecast synthetic group {spec.group}"],
                write_dir=str(folder))
    return folder / spec.record_name


def write_map_cohort(config: MapSynthConfig) -> list[Path]:
    """Generate and write the MAP cohort to `config.out` (the layout in the module docstring);
    returns each record's path. `labels.csv`'s `ahe_in_forecast_window` is
    `models.events.AHE`'s verdict on minutes `t0..t0+59` as written (0 = no reading). Staged and
    renamed into place; an existing non-empty `out` is replaced only with `overwrite`."""
    from pipelines.dataset.contract import staged_dir

    out = Path(config.out)
    _check_out(out, config.overwrite)
    specs = [make_map_spec(i, config.seed, config.minutes) for i in range(config.patients)]
    labels = []
    with staged_dir(out) as stage:
        for spec in specs:
            series = make_map_series(spec, config.seed, config.minutes)
            write_map_record(spec, series, config.t0, stage)
            labels.append(f"{spec.record_name},{spec.group},"
                          f"{int(ahe_label(series, config.t0))},{config.t0}")
        (stage / "RECORDS").write_text("".join(f"{s.record_name}\n" for s in specs))
        (stage / "labels.csv").write_text("\n".join([",".join(LABEL_COLUMNS), *labels]) + "\n")
        meta = {"generator": "pulsecast.synth.map", "seed": config.seed,
                "minutes": config.minutes, "t0_sample": config.t0, "signal": MAP_SIGNAL,
                "units": "mmHg", "fs": NUMERICS_FS_HZ, "gain": MAP_GAIN,
                "patients": [asdict(s) | {"record_name": s.record_name} for s in specs]}
        (stage / "cohort.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        stage.chmod(0o755)  # mkdtemp makes it 0700
    return [out / s.record_name for s in specs]
