"""Plausible ranges of physical units: the values any real signal in a unit can take.

A contract both sides import (pure, no I/O, no TensorFlow): the server's `:forecast` refuses a
channel holding a value outside its unit's range (`serve.http.forecast`), so a value no sensor
gives (`1e30`, a µV signal sent as mV, a pressure in Pa sent as mmHg) is a 400 naming it, not a
forecast from nonsense. The ranges are deliberately wide: they hold every real signal recorded
in the unit, artefacts included (a flushed arterial line, baseline wander, a pacing spike), and
refuse only what no patient and no monitor produces. Whether a value is right for one model is
the model's own `valid_range` (`models.metadata`), not this table's business.

Units are matched case-insensitively, spaces around them ignored (`MMHG`, ` mmHg` and `mmhg` are
one unit); a unit not in the table (`NU`, normalized units; ``; anything new) has no range and
every finite value passes. Both ends of a range are plausible values.
"""

from __future__ import annotations

# unit -> (low, high), inclusive, in that unit. Why each range is as wide as it is:
PLAUSIBLE: dict[str, tuple[float, float]] = {
    # Surface ECG (and EMG) in millivolts: a QRS is a few mV at most and recorders digitize a span
    # of about +-5 to +-10 mV (MIT-BIH, MIMIC). +-50 mV keeps any baseline wander or pacing spike
    # and refuses a signal in µV sent as mV (a 1 mV R wave arrives as 1000).
    "mV": (-50.0, 50.0),
    # EEG and other biopotentials in microvolts: the same +-50 mV span.
    "uV": (-50_000.0, 50_000.0),
    "µV": (-50_000.0, 50_000.0),  # the micro sign; the Greek mu (μV) matches it (casefold)
    # Invasive pressures (ABP, CVP, PAP, ICP) and their numerics (MAP) in mmHg: bedside monitors
    # measure from about -40 to about 360 mmHg and a flush reads at the top of that scale, a
    # negative venous or intrathoracic reading at the bottom. -100..400 holds all of it and
    # refuses a pressure in Pa sent as mmHg (a MAP of 90 mmHg is 12,000 Pa).
    "mmHg": (-100.0, 400.0),
    # Airway and oesophageal pressures: a maximal inspiratory effort reaches about -150 cmH2O, a
    # cough about +250 cmH2O; ventilators stay well inside both.
    "cmH2O": (-200.0, 300.0),
    # Saturations (SpO2, SaO2, SvO2): a share of 100, by definition.
    "%": (0.0, 100.0),
    # Rates per minute: heart rate (monitors count to about 300; a neonate's or a VT's stays
    # below it) and, in MIMIC's numerics, respiratory rate in the same unit. 0 is asystole or a
    # monitor's "no reading".
    "bpm": (0.0, 400.0),
    "/min": (0.0, 400.0),
    "1/min": (0.0, 400.0),
    # Temperature: a probe on a body (about 25 °C in deep hypothermia to 44 °C) or off it, in a
    # room or an incubator.
    "degC": (-10.0, 60.0),
    "°C": (-10.0, 60.0),
}

_BY_KEY = {unit.strip().casefold(): bounds for unit, bounds in PLAUSIBLE.items()}


def plausible_range(unit: str | None) -> tuple[float, float] | None:
    """`(low, high)` for `unit`, matched case-insensitively (`PLAUSIBLE`); None when the unit
    is unknown or empty, so its values are not checked."""
    if not unit:
        return None
    return _BY_KEY.get(unit.strip().casefold())
