"""Per-record assembly for ingest: a parsed header -> float32 pieces `(time, channels)` at `fs`.

The steps `pipelines.ingest.cohort.ingest_record` takes for one record, in order:

1. `plan_channels`: from the header alone (no samples read), which index each requested channel has
   in each readable segment; a channel no readable segment has, or one that would need more than
   `MAX_UPSAMPLE` upsampling, skips the record (`SkipRecord`, the reason in the message).
2. `group_runs`: segments with data, grouped into runs whose gaps are at most `max_gap_s`.
3. `read_run`: each segment of a run read once (only the planned channels); samples that are no
   reading or artefacts (numerics' 0, outside `valid_range`: `pipelines.ingest.validity`) set to
   NaN and counted; resampled to `fs` (`models.conditioning`) and written straight into one
   NaN-filled float32 array for the run.
4. `find_pieces`: a run split at all-NaN stretches longer than `max_gap_s`; `assemble_pieces` keeps
   the pieces of at least `min_duration_s` and names the others. With `valid_range`, a record with
   a channel holding no valid value at all is skipped first, the counts in the reason.

Only `read_run` touches disk (through `pipelines.ingest.records`); the rest is pure.
"""

from __future__ import annotations

import numpy as np

from models.conditioning import fill_short_gaps, resample_channel
from pipelines.ingest.channels import match_channels
from pipelines.ingest.records import RecordHeader
from pipelines.ingest.samples import read_segment
from pipelines.ingest.validity import Readings, mark_invalid, no_valid_value

MAX_UPSAMPLE = 10.0  # a channel may be upsampled at most this much (125 Hz -> 1250 Hz is fine)

Plan = dict[int, dict[str, int]]  # segment position -> requested channel -> index in the segment
Piece = tuple[float, np.ndarray]  # (start_s from the record's start, float32 (time, channels))
# per segment and channel read: (channel, native rate Hz, samples read, no reading, artefact)
Counts = list[tuple[str, float, int, int, int]]


class SkipRecord(ValueError):
    """This record (or piece) is not ingested, for the reason in the message."""


def plan_channels(header: RecordHeader, channels: tuple[str, ...], fs: float) -> Plan:
    """Per readable segment (by position), requested channel -> index in that segment.

    Segments that carry none of `channels` are left out. Raises `SkipRecord` naming the channels
    no readable segment has, or rates that cannot be served at `fs` Hz.
    """
    readable = [i for i, s in enumerate(header.segments) if s.readable]
    if not readable:
        raise SkipRecord(f"no readable segment (all {len(header.segments)} are null or missing)")
    plan = {i: match_channels(channels, list(header.segments[i].channels)) for i in readable}
    missing = [c for c in channels if not any(c in m for m in plan.values())]
    if missing:
        has = ", ".join(dict.fromkeys(c for i in readable for c in header.segments[i].channels))
        raise SkipRecord(f"lacks channels {', '.join(missing)} (has {has})")
    for i, matched in plan.items():
        seg = header.segments[i]
        for want, idx in matched.items():
            if fs / seg.rate(idx) > MAX_UPSAMPLE:
                raise SkipRecord(
                    f"channel {want} at {seg.rate(idx):.6g} Hz cannot be resampled to "
                    f"{fs:g} Hz (more than {MAX_UPSAMPLE:g}x upsampling)"
                )
    return {i: m for i, m in plan.items() if m}


def group_runs(header: RecordHeader, data: list[int], max_gap_frames: float) -> list[list[int]]:
    """Group data segment positions into runs whose gaps are at most `max_gap_frames`."""
    runs: list[list[int]] = []
    for i in data:
        if runs:
            prev = header.segments[runs[-1][-1]]
            gap = header.segments[i].start - (prev.start + prev.n_frames)
            if gap <= max_gap_frames:
                runs[-1].append(i)
                continue
        runs.append([i])
    return runs


def read_run(
    header: RecordHeader, run: list[int], plan: Plan, channels: tuple[str, ...], fs: float,
    numerics: bool = False, valid_range: tuple[float, float] | None = None,
) -> tuple[float, np.ndarray, Counts]:
    """(start_s, signal, counts) of one run of segments at `fs` Hz: float32 `(time, channels)`,
    NaN gaps; `counts` says, per segment and channel, how many samples were read and how many
    were set aside (`Counts`).

    With `numerics`, a 0 sample is "no value" (MIMIC numerics) and becomes NaN; with
    `valid_range`, so does a value at or below its low end or above its high end
    (`pipelines.ingest.validity.mark_invalid`).
    """
    ratio = fs / header.fs
    first, last = header.segments[run[0]], header.segments[run[-1]]
    n_out = int(round((last.start + last.n_frames - first.start) * ratio))
    out = np.full((n_out, len(channels)), np.nan, dtype=np.float32)
    counts: Counts = []
    for i in run:
        seg = header.segments[i]
        wanted = list(plan[i].items())
        arrays = read_segment(header.path.parent, seg, [idx for _, idx in wanted])
        offset = int(round((seg.start - first.start) * ratio))
        length = min(int(round(seg.n_frames * ratio)), n_out - offset)
        for (want, idx), x in zip(wanted, arrays, strict=True):
            # x is this read's own array: marked in place, no copy
            counts.append((want, seg.rate(idx), x.size, *mark_invalid(x, numerics, valid_range)))
            y = resample_channel(x, seg.rate(idx), fs)[:length]
            out[offset : offset + len(y), channels.index(want)] = y
    return first.start / header.fs, out, counts


def find_pieces(signal: np.ndarray, fs: float, max_gap_s: float) -> list[tuple[int, int]]:
    """`[start, stop)` spans of `signal` `(time, channels)` between all-NaN stretches longer than
    `max_gap_s` seconds (leading and trailing all-NaN rows dropped)."""
    # A row has data when any channel is not NaN; one column at a time is much faster than
    # reducing over the short channel axis.
    has_data = np.zeros(signal.shape[0], dtype=bool)
    for j in range(signal.shape[1]):
        has_data |= signal[:, j] == signal[:, j]  # False only at NaN
    idx = np.flatnonzero(has_data)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) - 1 > max_gap_s * fs)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    stops = np.concatenate((idx[breaks] + 1, [idx[-1] + 1]))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def assemble_pieces(
    header: RecordHeader, plan: Plan, channels: tuple[str, ...], fs: float, *,
    numerics: bool, max_gap_s: float, min_duration_s: float, fill_gap_s: float = 0.0,
    valid_range: tuple[float, float] | None = None,
) -> tuple[list[Piece], list[str], Readings]:
    """The record's kept pieces, one reason per piece shorter than `min_duration_s`, and what its
    files held per channel (`Readings`: seconds read, no reading, artefact).

    With `fill_gap_s`, each channel's gaps up to that long inside a piece are interpolated
    (`models.conditioning.fill_short_gaps`). Raises `SkipRecord` when no piece is kept (naming
    the short ones), or, with `valid_range`, when a channel has no valid value at all.
    """
    pieces: list[Piece] = []
    short: list[str] = []
    counts: Counts = []
    runs = []
    for run in group_runs(header, sorted(plan), max_gap_s * header.fs):
        start_s, signal, run_counts = read_run(header, run, plan, channels, fs, numerics,
                                               valid_range)
        runs.append((start_s, signal))
        counts += run_counts
    readings = Readings.tally(channels, counts)
    if valid_range is not None and (reason := no_valid_value(readings, valid_range)):
        raise SkipRecord(reason)
    for start_s, signal in runs:
        for a, b in find_pieces(signal, fs, max_gap_s):
            duration_s = (b - a) / fs
            piece_start_s = start_s + a / fs
            if duration_s < min_duration_s:
                short.append(f"piece at +{piece_start_s:.1f} s lasts {duration_s:.1f} s, "
                             f"shorter than min_duration_s {min_duration_s:g} s")
            else:
                piece = signal[a:b]
                fill_short_gaps(piece, int(fill_gap_s * fs))
                pieces.append((piece_start_s, piece))
    if not pieces:
        raise SkipRecord("; ".join(short) if short else "no samples of the requested channels")
    return pieces, short, readings
