"""Which windows of a split were not scored, and why: the accounting a researcher reads first.

Every window that fits in a split's records at the spec's stride is either scored or left out
for exactly one reason, in this order:

- `too_short`: the record is shorter than one window (`input_steps + horizon` samples): no window
  fits at all (counted in records, not windows);
- `gaps`: the window touches a gap (NaN) in an input or target channel (gap policy "skip");
- `still`: its target holds still on more than `max_still_fraction` of its steps (a flat line, a
  calibration square wave);
- `subsampled`: left out by the even subsampling to `[evaluate] max_windows`.

So `n_windows_fit = gaps + still + subsampled + n_scored`. Records the ingest skipped (a flat or
absent channel, too short, unreadable) never reached the dataset; `dataset.json` lists them and
they are reported beside (`skipped_at_ingest`, for the whole dataset, not the split).

`read_left_out` reads the records' signals (memory-mapped) to find the gaps; `describe_left_out`
turns the JSON form into the lines `pulsecast evaluate` prints, `summarize_left_out` into one
line for logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipelines.dataset.contract import Dataset
from pipelines.windows.spec import WindowSpec, clean_starts, window_starts

_SCAN_ROWS = 1 << 20  # rows read at a time when scanning a signal for gaps (bounds RAM)
_NAMED = 8  # record ids named per reason in the printed summary


@dataclass(frozen=True)
class LeftOut:
    """Counts of the windows of one split that were not scored, by reason (module docstring)."""

    split: str
    n_records: int
    n_windows_fit: int
    span: int  # samples of one window
    too_short: tuple[str, ...]  # record ids
    gaps: int
    still: int
    max_still_fraction: float
    subsampled: int
    max_windows: int
    n_scored: int
    by_record: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # non-zero only
    skipped_at_ingest: tuple[tuple[str, str], ...] = ()  # (record, reason), whole dataset

    def to_dict(self) -> dict:
        return {
            "split": self.split, "n_records": self.n_records,
            "n_windows_fit": self.n_windows_fit, "span": self.span,
            "too_short": {"records": len(self.too_short), "record_ids": list(self.too_short)},
            "gaps": self.gaps, "still": self.still, "max_still_fraction": self.max_still_fraction,
            "subsampled": self.subsampled, "max_windows": self.max_windows,
            "n_scored": self.n_scored,
            "by_record": {r: dict(c) for r, c in self.by_record.items()},
            "skipped_at_ingest": [{"record": r, "reason": why}
                                  for r, why in self.skipped_at_ingest],
        }


def _observed(signal: np.ndarray, cols: Sequence[int]) -> np.ndarray:
    """Bool per row: no NaN in `cols`, read in chunks so RAM stays bounded."""
    out = np.empty(len(signal), dtype=bool)
    for a in range(0, len(signal), _SCAN_ROWS):
        chunk = np.asarray(signal[a : a + _SCAN_ROWS])[:, list(cols)]
        out[a : a + len(chunk)] = ~np.isnan(chunk).any(axis=1)
    return out


def read_left_out(dataset: Dataset, spec: WindowSpec, split: str, record_ids: Sequence[str],
                  kept: Mapping[str, int], n_scored: int, max_windows: int) -> LeftOut:
    """Account for every window of `record_ids` (the split's records, in order).

    `kept` maps a record id to its windows that survived gaps and the still rule (the window
    index's); records missing from it kept none. Reads each signal once to count gap windows.
    """
    inputs, targets = dataset.channel_index(spec.inputs), dataset.channel_index(spec.targets)
    too_short: list[str] = []
    n_fit = n_gaps = n_still = 0
    by_record: dict[str, dict[str, int]] = {}
    for rid in record_ids:
        signal = dataset.signal(rid)
        starts = window_starts(len(signal), spec)
        if not len(starts):
            too_short.append(rid)
            continue
        clean = len(starts)
        if spec.gap_policy == "skip":
            clean = len(clean_starts(starts, spec, _observed(signal, inputs),
                                     _observed(signal, targets)))
        gaps, still = len(starts) - clean, clean - int(kept.get(rid, 0))
        n_fit, n_gaps, n_still = n_fit + len(starts), n_gaps + gaps, n_still + still
        counts = {k: v for k, v in (("gaps", gaps), ("still", still)) if v}
        if counts:
            by_record[rid] = counts
    n_usable = n_fit - n_gaps - n_still
    skipped = tuple((str(s.get("record", "")), str(s.get("reason", "")))
                    for s in dataset.config.get("skipped", []) or [])
    return LeftOut(split=split, n_records=len(record_ids), n_windows_fit=n_fit, span=spec.span,
                   too_short=tuple(too_short), gaps=n_gaps, still=n_still,
                   max_still_fraction=spec.max_still_fraction,
                   subsampled=max(n_usable - n_scored, 0), max_windows=max_windows,
                   n_scored=n_scored, by_record=by_record, skipped_at_ingest=skipped)


def _worst(by_record: Mapping[str, Mapping[str, int]], reason: str) -> str:
    ranked = sorted(((c.get(reason, 0), r) for r, c in by_record.items() if c.get(reason)),
                    reverse=True)
    named = ", ".join(f"{r} {n}" for n, r in ranked[:_NAMED])
    more = f", {len(ranked) - _NAMED} more records" if len(ranked) > _NAMED else ""
    return f" ({named}{more})" if named else ""


def describe_left_out(left: Mapping) -> list[str]:
    """The printed summary of `LeftOut.to_dict()`: one line per reason, counts and worst records."""
    short = left["too_short"]
    ids = short["record_ids"]
    named = ", ".join(ids[:_NAMED]) + (f", {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")
    lines = [
        f"windows of split {left['split']!r}: {left['n_windows_fit']} fit in "
        f"{left['n_records']} records, {left['n_scored']} scored; left out:",
        f"  records too short for one window ({left['span']} samples): {short['records']}"
        + (f" ({named})" if ids else ""),
        f"  windows touching a gap (NaN): {left['gaps']}" + _worst(left["by_record"], "gaps"),
        f"  still windows (target still on > {left['max_still_fraction']:g} of its steps: flat "
        f"line, calibration): {left['still']}" + _worst(left["by_record"], "still"),
        f"  subsampled evenly to max_windows={left['max_windows']}: {left['subsampled']}",
    ]
    skipped = left.get("skipped_at_ingest") or []
    if skipped:
        reasons: dict[str, int] = {}
        for s in skipped:
            reasons[_reason_kind(s["reason"])] = reasons.get(_reason_kind(s["reason"]), 0) + 1
        kinds = "; ".join(f"{k}: {n}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        lines.append(f"  (records skipped at ingest, whole dataset: {len(skipped)}: {kinds})")
    return lines


def summarize_left_out(left: Mapping) -> str:
    """`describe_left_out` in one line (for logs)."""
    return (f"split {left['split']!r}: {left['n_scored']} of {left['n_windows_fit']} windows "
            f"scored ({left['n_records']} records); left out: {left['too_short']['records']} "
            f"records too short, {left['gaps']} windows touching a gap, {left['still']} still, "
            f"{left['subsampled']} subsampled (max_windows={left['max_windows']})")


def _reason_kind(reason: str) -> str:
    """A reason without its numbers and names, so alike reasons count together."""
    head = re.sub(r"[\d.]+", "N", re.split(r"[(:;]", reason)[0]).strip()
    return head[:60] or "unknown"
