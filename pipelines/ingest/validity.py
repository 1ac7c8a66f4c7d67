"""Which samples are readings: numerics' 0, `valid_range`, and the count of what was set aside.

A sample read from a record's files is a reading unless it is

- *no reading*: NaN in the file (the format's "no sample" value), a 0 in a numerics record (MIMIC
  writes 0 for "missing"), or, with `valid_range = (low, high)`, a value at or below `low` (a
  pressure of 0 or below is a flushed or zeroed line, not a pressure);
- an *artefact*: with `valid_range`, a value above `high` (a flush or a transducer spike).

Both become NaN before resampling and gap handling, so a few minutes of either are a gap inside a
row (interpolated up to `fill_gap_s`, a split only beyond `max_gap_s`). `Readings` counts both per
record and channel, in seconds at the channel's own rate (a numerics minute is 60 s); ingest puts
the counts in its report and `dataset.json` (`invalid_readings`). Pure numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def mark_invalid(x: np.ndarray, numerics: bool = False,
                 valid_range: tuple[float, float] | None = None) -> tuple[int, int]:
    """Set every sample of `x` (1-D float, physical units; changed in place) that is no reading or
    an artefact to NaN; return how many of each were found `(no_reading, artefact)`."""
    no_reading = np.isnan(x)
    if numerics:
        no_reading |= x == 0
    n_artefact = 0
    if valid_range is not None:
        low, high = valid_range
        no_reading |= x <= low  # NaN compares False: counted once, by isnan above
        artefact = x > high
        n_artefact = int(np.count_nonzero(artefact))
        if n_artefact:
            x[artefact] = np.nan
    n_no_reading = int(np.count_nonzero(no_reading))
    if n_no_reading:
        x[no_reading] = np.nan
    return n_no_reading, n_artefact


@dataclass(frozen=True)
class Readings:
    """What one record's files held, per requested channel (in the dataset's channel order), in
    seconds at each channel's own rate: every sample read, and those set aside as no reading or
    as artefact (`mark_invalid`)."""

    channels: tuple[str, ...]
    read_s: tuple[float, ...]
    no_reading_s: tuple[float, ...]
    artefact_s: tuple[float, ...]

    @classmethod
    def tally(cls, channels: tuple[str, ...],
              counts: list[tuple[str, float, int, int, int]]) -> Readings:
        """Sum `(channel, rate_hz, n_read, n_no_reading, n_artefact)` per segment into seconds."""
        total = {c: np.zeros(3) for c in channels}
        for channel, rate_hz, *n in counts:
            total[channel] += np.asarray(n, dtype=np.float64) / rate_hz
        read, no_reading, artefact = (tuple(float(total[c][k]) for c in channels)
                                      for k in range(3))
        return cls(tuple(channels), read, no_reading, artefact)

    @property
    def valid_s(self) -> tuple[float, ...]:
        """Seconds of readings kept, per channel."""
        return tuple(max(r - n - a, 0.0) for r, n, a in
                     zip(self.read_s, self.no_reading_s, self.artefact_s, strict=True))

    @property
    def any_set_aside(self) -> bool:
        return any(self.no_reading_s) or any(self.artefact_s)

    def to_json(self, record: str) -> list[dict]:
        """One entry per channel with something set aside (none when the record is clean)."""
        return [{"record": record, "channel": c, "no_reading_s": n, "artefact_s": a}
                for c, n, a in zip(self.channels, self.no_reading_s, self.artefact_s, strict=True)
                if n or a]


def no_valid_value(readings: Readings, valid_range: tuple[float, float] | None) -> str | None:
    """Why the record is skipped when a channel has no reading at all inside `valid_range`, e.g.
    "ABPMEAN has no valid value (11 min read: 11 min no reading at or below 10, 0 s artefact
    above 300)"; None when every channel has one."""
    bits = []
    for c, read, valid, n, a in zip(readings.channels, readings.read_s, readings.valid_s,
                                    readings.no_reading_s, readings.artefact_s, strict=True):
        if valid <= 0:
            bounds = (f" at or below {valid_range[0]:g}", f" above {valid_range[1]:g}"
                      ) if valid_range else ("", "")
            bits.append(f"{c} has no valid value ({format_duration(read)} read: "
                        f"{format_duration(n)} no reading{bounds[0]}, "
                        f"{format_duration(a)} artefact{bounds[1]})")
    return "; ".join(bits) or None


def format_duration(seconds: float) -> str:
    """`240.0` -> "4 min", `12.5` -> "12.5 s", `0` -> "0": whole minutes as minutes (numerics),
    else seconds."""
    if seconds == 0:
        return "0"
    if seconds >= 60 and float(seconds / 60).is_integer():
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.3g} s" if seconds < 1000 else f"{seconds / 60:.1f} min"
