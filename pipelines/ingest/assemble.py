"""Per-record assembly for ingest: a parsed header -> float32 pieces `(time, channels)` at `fs`.

The steps `pipelines.ingest.per_record.ingest_record` takes for one record, in order:

1. `plan_channels`: from the header alone (no samples read), which index each requested channel has
   in each readable segment; a channel no readable segment has, or one that would need more than
   `MAX_UPSAMPLE` upsampling, skips the record (`SkipRecord`, the reason in the message).
2. `group_runs`: segments with data, grouped into runs whose gaps are at most `max_gap_s`.
3. `read_run`: each segment of a run read once (only the planned channels); samples that are no
   reading or artefacts (numerics' 0, outside `valid_range`: `pipelines.ingest.validity`) set to
   NaN and counted; resampled to `fs` (`models.conditioning`) and written straight into one
   NaN-filled float32 array for the run, with each channel's ADC limits.
4. `split_pieces`: a run split at all-NaN stretches longer than `max_gap_s`; pieces of at least
   `min_duration_s` are kept, the others named. With `valid_range`, a record with a channel
   holding no valid value at all is skipped first, the counts in the reason.
5. With the bad-input rule (`rules`: waveforms, `skip_unusable_channels`): a channel absent or
   flat over the kept pieces skips the record (`channel_absent_or_flat`, today's words); then
   `cut_still` sets every still stretch of at least `min_still_s` (a channel holding one value, or
   at its ADC limits: `pipelines.ingest.stretches.find_still`) to NaN, and the pieces are split
   again: a long still stretch is a gap like any other. A record is skipped only when a requested
   channel keeps no usable stretch of at least `min_duration_s` ("II: no usable stretch of at
   least 10 s: 31.2 h stuck at 0 mV, 4.2 min in pieces shorter than 10 s").
6. `Coverage`: where each channel's time went (kept, stuck, clipped, gap, short, skipped),
   reported per record and in total by `pipelines.ingest.cohort`.

Only `read_run` touches disk (through `pipelines.ingest.records`); the rest is pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.conditioning import fill_short_gaps
from models.resampling import resample_channel
from pipelines.ingest.channels import match_channels
from pipelines.ingest.quality import RecordRules, channel_absent_or_flat
from pipelines.ingest.records import RecordHeader
from pipelines.ingest.samples import adc_limits, read_segment
from pipelines.ingest.stretches import find_still, limits_that_hold, still_range
from pipelines.ingest.validity import Readings, mark_invalid, no_valid_value

MAX_UPSAMPLE = 10.0  # a channel may be upsampled at most this much (125 Hz -> 1250 Hz is fine)

Plan = dict[int, dict[str, int]]  # segment position -> requested channel -> index in the segment
Piece = tuple[float, np.ndarray]  # (start_s from the record's start, float32 (time, channels))
# per segment and channel read: (channel, native rate Hz, samples read, no reading, artefact)
Counts = list[tuple[str, float, int, int, int]]
Limits = tuple[tuple[float, float], ...]  # one channel's ADC limits, physical (low, high) pairs
NO_SAMPLES = "no samples of the requested channels"  # every requested channel NaN throughout


@dataclass(frozen=True)
class Run:
    """A run of segments read at `fs`: `signal` float32 `(time, channels)`, NaN for gaps, starting
    `start_s` after the record's start; `limits`, per channel, the ADC limits of its segments."""

    start_s: float
    signal: np.ndarray
    limits: tuple[Limits, ...]


@dataclass(frozen=True)
class Coverage:
    """Where one record's time went, per requested channel (dataset order), in seconds at the
    dataset's rate `fs`: `kept_s` in its rows (finite values), and dropped: `stuck_s` (holding one
    value, or flat for the whole record), `clipped_s` (at an ADC limit), `short_s` (in pieces
    shorter than `min_duration_s`), `skipped_s` (usable, but the record was skipped for another
    channel) and `gap_s`, the rest of `duration_s` (the record's length, null and missing segments
    included): no reading, NaN in the files, values outside `valid_range`. For every channel the
    six add up to `duration_s`."""

    channels: tuple[str, ...]
    fs: float
    duration_s: float
    kept_s: tuple[float, ...]
    stuck_s: tuple[float, ...]
    clipped_s: tuple[float, ...]
    short_s: tuple[float, ...]
    skipped_s: tuple[float, ...]

    DROPPED = ("stuck_s", "clipped_s", "gap_s", "short_s", "skipped_s")  # the reasons, in order

    @property
    def gap_s(self) -> tuple[float, ...]:
        # rounded to 1 ns: the float noise of a difference of sums is no gap
        return tuple(max(round(self.duration_s - k - st - c - sh - sk, 9), 0.0)
                     for k, st, c, sh, sk in zip(self.kept_s, self.stuck_s, self.clipped_s,
                                                 self.short_s, self.skipped_s, strict=True))

    def dropped(self, j: int) -> dict[str, float]:
        """Channel `j`'s dropped seconds by reason (`DROPPED`)."""
        return {reason: getattr(self, reason)[j] for reason in self.DROPPED}

    def skip(self, flat: tuple[int, ...] = (), unusable: tuple[int, ...] = ()) -> Coverage:
        """The same time when the record is skipped: what was kept goes to `stuck_s` for the
        channels `flat` for the whole record, to `short_s` for those with no usable stretch, and
        to `skipped_s` for the others."""
        stuck, short, skipped = list(self.stuck_s), list(self.short_s), list(self.skipped_s)
        for j, kept in enumerate(self.kept_s):
            target = stuck if j in flat else short if j in unusable else skipped
            target[j] += kept
        return Coverage(self.channels, self.fs, self.duration_s, (0.0,) * len(self.channels),
                        tuple(stuck), self.clipped_s, tuple(short), tuple(skipped))

    def to_json(self, record: str) -> list[dict]:
        """One entry per channel that lost a sample at `fs` or more (none when all was kept)."""
        return [{"record": record, "channel": c, "duration_s": self.duration_s,
                 "kept_s": self.kept_s[j], **self.dropped(j)}
                for j, c in enumerate(self.channels)
                if self.duration_s - self.kept_s[j] >= 1 / self.fs]


class SkipRecord(ValueError):
    """This record (or piece) is not ingested, for the reason in the message; `coverage` says where
    its time went when its samples were read."""

    def __init__(self, reason: str, coverage: Coverage | None = None) -> None:
        super().__init__(reason)
        self.coverage = coverage


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
) -> tuple[Run, Counts]:
    """One run of segments at `fs` Hz (`Run`: float32 `(time, channels)`, NaN gaps, the ADC limits)
    and its `counts`: per segment and channel, how many samples were read and how many were set
    aside (`Counts`).

    With `numerics`, a 0 sample is "no value" (MIMIC numerics) and becomes NaN; with
    `valid_range`, so does a value at or below its low end or above its high end
    (`pipelines.ingest.validity.mark_invalid`).
    """
    ratio = fs / header.fs
    first, last = header.segments[run[0]], header.segments[run[-1]]
    n_out = int(round((last.start + last.n_frames - first.start) * ratio))
    out = np.full((n_out, len(channels)), np.nan, dtype=np.float32)
    counts: Counts = []
    limits: list[dict[tuple[float, float], None]] = [{} for _ in channels]
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
            j = channels.index(want)
            out[offset : offset + len(y), j] = y
            if seg.storage is not None and (pair := adc_limits(seg.storage, idx)) is not None:
                limits[j][pair] = None
    return Run(first.start / header.fs, out, tuple(tuple(m) for m in limits)), counts


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


def split_pieces(runs: list[Run], fs: float, max_gap_s: float, min_duration_s: float
                 ) -> tuple[list[Piece], list[Piece], list[str]]:
    """(kept, short, reasons): the pieces of `runs` (`find_pieces`) of at least `min_duration_s`,
    those shorter, and one reason per short piece. Pieces are views into the runs."""
    kept: list[Piece] = []
    short: list[Piece] = []
    reasons: list[str] = []
    for run in runs:
        for a, b in find_pieces(run.signal, fs, max_gap_s):
            duration_s, start_s = (b - a) / fs, run.start_s + a / fs
            if duration_s < min_duration_s:
                short.append((start_s, run.signal[a:b]))
                reasons.append(f"piece at +{start_s:.1f} s lasts {duration_s:.1f} s, "
                               f"shorter than min_duration_s {min_duration_s:g} s")
            else:
                kept.append((start_s, run.signal[a:b]))
    return kept, short, reasons


@dataclass(frozen=True)
class Cut:
    """What `cut_still` set to NaN, per channel: samples at `fs` stuck and clipped, the levels
    held (`(value, samples)`, most first) and the ADC limits sat at."""

    stuck: tuple[int, ...]
    clipped: tuple[int, ...]
    stuck_at: tuple[tuple[tuple[float, int], ...], ...]
    clipped_at: tuple[tuple[float, ...], ...]

    @property
    def any(self) -> bool:
        return any(self.stuck) or any(self.clipped)


def _levels(x: np.ndarray, mask: np.ndarray, levels: dict[float, int]) -> None:
    """Add each run of `mask` to `levels`: its first value of `x` (3 significant digits) ->
    samples."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        level = float(f"{float(x[a]):.3g}")
        levels[level] = levels.get(level, 0) + b - a


def cut_still(runs: list[Run], fs: float, rules: RecordRules) -> Cut:
    """Set every still stretch of `runs` (`pipelines.ingest.stretches.find_still`, at least
    `rules.min_still_s`) to NaN, in place; say what was cut.

    "One value" is judged against each channel's range over the whole record (its ADC limits left
    out), as `channel_problem` judges it; the limits are those of the channel's segments, less any
    the data lie beyond (a header describing another ADC).
    """
    n_channels = runs[0].signal.shape[1] if runs else 0
    stuck, clipped, stuck_at, clipped_at = [], [], [], []
    for j in range(n_channels):
        cols = [np.ascontiguousarray(run.signal[:, j]) for run in runs]
        limits = tuple(dict.fromkeys(pair for run in runs for pair in run.limits[j]))
        for col in cols:
            limits = limits_that_hold(col, limits)
        ranges = [r for col in cols if (r := still_range(col, limits)) is not None]
        value_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
        held: dict[float, int] = {}
        at: dict[float, int] = {}
        n_stuck = n_clipped = 0
        for run, col in zip(runs, cols, strict=True):
            still = find_still(col, fs, rules, value_range, limits)
            _levels(col, still.stuck, held)
            _levels(col, still.clipped, at)
            n_stuck += int(np.count_nonzero(still.stuck))
            n_clipped += int(np.count_nonzero(still.clipped))
            gone = still.stuck | still.clipped
            if gone.any():
                run.signal[gone, j] = np.nan
        stuck.append(n_stuck)
        clipped.append(n_clipped)
        stuck_at.append(tuple(sorted(held.items(), key=lambda kv: -kv[1])))
        clipped_at.append(tuple(sorted(at)))
    return Cut(tuple(stuck), tuple(clipped), tuple(stuck_at), tuple(clipped_at))


def measure(channels: tuple[str, ...], duration_s: float, fs: float, kept: list[Piece],
            short: list[Piece], cut: Cut | None = None) -> Coverage:
    """The `Coverage` of a record of `duration_s` seconds: finite samples of each channel in the
    `kept` and `short` pieces, and what `cut` set to NaN."""
    def seconds(pieces: list[Piece]) -> tuple[float, ...]:
        n = np.zeros(len(channels), dtype=np.int64)
        for _, piece in pieces:
            for j in range(len(channels)):
                n[j] += np.count_nonzero(piece[:, j] == piece[:, j])  # False only at NaN
        return tuple(float(v) / fs for v in n)

    zeros = (0.0,) * len(channels)
    stuck = tuple(n / fs for n in cut.stuck) if cut else zeros
    clipped = tuple(n / fs for n in cut.clipped) if cut else zeros
    return Coverage(channels, fs, duration_s, seconds(kept), stuck, clipped, seconds(short),
                    zeros)


def has_usable_stretch(kept: list[Piece], j: int, fs: float, max_gap_s: float,
                       min_duration_s: float) -> bool:
    """Whether channel `j` alone has a piece (`find_pieces`) of at least `min_duration_s`."""
    return any((b - a) / fs >= min_duration_s for _, piece in kept
               for a, b in find_pieces(piece[:, j : j + 1], fs, max_gap_s))


def format_span(seconds: float) -> str:
    """`40.5` -> "40.5 s", `288` -> "4.8 min", `112320` -> "31.2 h", `0` -> "0"."""
    if seconds <= 0:
        return "0"
    if seconds < 60:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min" if seconds < 3600 else f"{seconds / 3600:.3g} h"


def _num(value: float) -> str:
    return f"{value:.3g}"


def no_usable_stretch(name: str, unit: str, j: int, coverage: Coverage, cut: Cut,
                      min_duration_s: float) -> str:
    """Why channel `j` (`name`, in `unit`) has no usable stretch: its dropped time by reason."""
    u = f" {unit}" if unit else ""
    parts = []
    if coverage.stuck_s[j]:
        levels = cut.stuck_at[j]
        where = (f"at {_num(levels[0][0])}{u}" if len(levels) == 1 else
                 f"(most at {_num(levels[0][0])}{u})")
        parts.append(f"{format_span(coverage.stuck_s[j])} stuck {where}")
    if coverage.clipped_s[j]:
        at = cut.clipped_at[j]
        limit = "limit" if len(at) == 1 else "limits"
        parts.append(f"{format_span(coverage.clipped_s[j])} clipped at the ADC {limit} "
                     f"({' and '.join(_num(v) for v in at)}{u})")
    if coverage.short_s[j]:
        parts.append(f"{format_span(coverage.short_s[j])} in pieces shorter than "
                     f"{min_duration_s:g} s")
    if coverage.gap_s[j] >= 1 / coverage.fs:  # less is the rounding of a length to samples
        parts.append(f"{format_span(coverage.gap_s[j])} gap or no reading")
    return f"{name}: no usable stretch of at least {min_duration_s:g} s: {', '.join(parts)}"


@dataclass(frozen=True)
class Assembled:
    """A record's kept pieces, one reason per piece too short, what its files held (`Readings`)
    and where its time went (`Coverage`)."""

    pieces: list[Piece]
    short: list[str]
    readings: Readings
    coverage: Coverage


def assemble_pieces(
    header: RecordHeader, plan: Plan, channels: tuple[str, ...], fs: float, *,
    numerics: bool, max_gap_s: float, min_duration_s: float, fill_gap_s: float = 0.0,
    valid_range: tuple[float, float] | None = None, rules: RecordRules | None = None,
    units: tuple[str, ...] = (),
) -> Assembled:
    """The record's kept pieces and their accounts (`Assembled`), by the steps of the module
    docstring; `rules` (None: every sample as read) is the bad-input rule, `units` the channels'.

    With `fill_gap_s`, each channel's gaps up to that long inside a piece are interpolated
    (`models.conditioning.fill_short_gaps`) after the time is counted. Raises `SkipRecord`, with
    the record's `Coverage`, when no piece is kept (naming the short ones), when a channel is
    absent or flat for the whole record or keeps no usable stretch (with `rules`), or, with
    `valid_range`, when a channel has no valid value at all.
    """
    runs: list[Run] = []
    counts: Counts = []
    for segments in group_runs(header, sorted(plan), max_gap_s * header.fs):
        run, run_counts = read_run(header, segments, plan, channels, fs, numerics, valid_range)
        runs.append(run)
        counts += run_counts
    readings = Readings.tally(channels, counts)
    duration_s = header.n_frames / header.fs
    if valid_range is not None and (reason := no_valid_value(readings, valid_range)):
        raise SkipRecord(reason, measure(channels, duration_s, fs, [], []))
    pieces, short, reasons = split_pieces(runs, fs, max_gap_s, min_duration_s)
    if not pieces:
        raise SkipRecord("; ".join(reasons) or NO_SAMPLES,
                         measure(channels, duration_s, fs, [], short))
    cut = None
    if rules is not None:
        _check_whole_record(pieces, short, channels, units, duration_s, fs, rules)
        cut = cut_still(runs, fs, rules)
        if cut.any:
            pieces, short, reasons = split_pieces(runs, fs, max_gap_s, min_duration_s)
    coverage = measure(channels, duration_s, fs, pieces, short, cut)
    if cut is not None:
        unusable = tuple(j for j in range(len(channels))
                         if not has_usable_stretch(pieces, j, fs, max_gap_s, min_duration_s))
        if unusable:
            coverage = coverage.skip(unusable=unusable)
            raise SkipRecord("; ".join(
                no_usable_stretch(channels[j], units[j] if units else "", j, coverage, cut,
                                  min_duration_s) for j in unusable), coverage)
    for _, piece in pieces:
        fill_short_gaps(piece, int(fill_gap_s * fs))
    return Assembled(pieces, reasons, readings, coverage)


def _check_whole_record(pieces: list[Piece], short: list[Piece], channels: tuple[str, ...],
                        units: tuple[str, ...], duration_s: float, fs: float,
                        rules: RecordRules) -> None:
    """Raise `SkipRecord` naming every channel absent or flat over all kept `pieces`."""
    reasons, flat = [], []
    for j, name in enumerate(channels):
        x = (pieces[0][1][:, j] if len(pieces) == 1 else
             np.concatenate([p[:, j] for _, p in pieces]))
        problem = channel_absent_or_flat(x, name, units[j] if units else "", rules)
        if problem:
            reasons.append(problem)
            flat.append(j)
    if reasons:
        coverage = measure(channels, duration_s, fs, pieces, short).skip(flat=tuple(flat))
        raise SkipRecord("; ".join(reasons), coverage)
