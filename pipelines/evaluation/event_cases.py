"""Warning and trend cases cut from per-minute MAP records: where a forecast origin is placed.

A *case* is one cut point of one record: the `input_steps` minutes before it (what the served
model gets), the `horizon_min` minutes after it (the truth) and the label (an acute hypotensive
episode in that hour). Three sets, each a `Cases`:

- `build_t0_cases`: one per record, cut at its T0; the label is the record's group label
  (PhysioNet/CinC Challenge 2009: H1/H2 an AHE in the hour after T0, C1/C2 none), or the rule
  (`models.events.AHE`) applied to the hour after T0 where a record has no label.
- `build_early_cases`: 60, 120 and 180 minutes before T0, labelled by the rule on what happened.
- `build_monitoring_cases`: every 30 minutes, from the first cut with `input_steps` of history to
  the last with a full hour after, labelled by the rule (continuous monitoring).

Every set leaves out a cut point inside an ongoing AHE (the warning would only repeat what the
monitor shows) and counts it. Gaps are handled as the served model gets them: runs without a
reading of at most `fill_gap_min` minutes with a reading on both sides are interpolated
(`models.conditioning.fill_short_gaps`, ingest's rule); a case whose input window still has a
minute without a reading is left out and counted. Labels are computed on the record as given (a
minute without a reading counts as not low), never on interpolated values.

`read_map_records` is the one edge: it reads a pipelines `Dataset` (signals, and
`Dataset.labels` when the dataset has them) into `MapRecord`s. Everything else is pure numpy.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.conditioning import fill_short_gaps
from models.events import AHE, EventRule

log = logging.getLogger(__name__)

EVENT_GROUPS = frozenset({"H1", "H2"})  # Challenge 2009 groups with an AHE in the hour after T0
# Why a cut point is not a case, by key; the report prints the words.
LEFT_OUT_REASONS: dict[str, str] = {
    "ongoing_event": "inside an ongoing AHE at the cut point (not a warning case)",
    "gap_in_input": "a minute without a reading in the input window after filling short gaps",
    "short_history": "fewer minutes before the cut point than the model's input window",
    "short_future": "less than the forecast hour after the cut point",
}


@dataclass(frozen=True)
class MapRecord:
    """One patient's per-minute mean arterial pressure.

    `minutes` is `(n,)` mmHg, one value a minute, NaN = no reading. `t0` is the minute index of
    the challenge's forecast origin (None: the record has no T0 case and no early cut points).
    `label` is the truth at T0 (the group label), None to apply the rule to the hour after T0.
    """

    patient_id: str
    minutes: np.ndarray
    t0: int | None
    label: bool | None = None
    record_id: str = ""  # defaults to patient_id
    group: str | None = None  # e.g. "H1", "C2"

    def __post_init__(self) -> None:
        m = np.asarray(self.minutes, dtype=np.float64)
        if m.ndim != 1:
            raise ValueError(f"minutes of record {self.name!r} must be 1-D, got shape {m.shape}")
        if self.t0 is not None and not 0 <= self.t0 <= len(m):
            raise ValueError(f"t0 of record {self.name!r} must be in [0, {len(m)}], got {self.t0}")
        object.__setattr__(self, "minutes", m)

    @property
    def name(self) -> str:
        return self.record_id or self.patient_id


@dataclass(frozen=True, eq=False)  # arrays: compare fields, not objects
class Cases:
    """Cut points of one kind, as arrays with one row per case (`n` rows).

    `x` `(n, input_steps)` mmHg with short gaps filled (what the model gets); `truth`
    `(n, horizon_min)` mmHg, NaN = no reading; `cut_min` the cut's minute index in its record;
    `before_t0_min` how many minutes before the record's T0 the cut lies (NaN for a record
    without a T0); `left_out` counts the cut points left out by `LEFT_OUT_REASONS` key.
    """

    kind: str
    patient_ids: np.ndarray  # (n,) str
    record_ids: np.ndarray  # (n,) str
    cut_min: np.ndarray  # (n,) int
    before_t0_min: np.ndarray  # (n,) float, minutes; NaN: no T0
    x: np.ndarray  # (n, input_steps)
    truth: np.ndarray  # (n, horizon_min)
    label: np.ndarray  # (n,) bool
    left_out: Mapping[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.label)

    @property
    def n_patients(self) -> int:
        return len(set(self.patient_ids.tolist()))

    def mean_last(self, minutes: int = 5) -> np.ndarray:
        """The mean of the last `minutes` minutes of each input window, mmHg `(n,)`."""
        return self.x[:, -minutes:].mean(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_cases": self.n, "n_patients": self.n_patients,
                "n_events": int(self.label.sum()), "left_out": dict(self.left_out)}


def filled_minutes(minutes: np.ndarray, fill_gap_min: int) -> np.ndarray:
    """A copy of `minutes` `(n,)` with runs without a reading of at most `fill_gap_min` minutes
    and a reading on both sides interpolated linearly (ingest's rule); longer runs stay NaN."""
    out = np.array(minutes, dtype=np.float64)[:, None]
    fill_short_gaps(out, int(fill_gap_min))
    return out[:, 0]


def _cut_records(
    kind: str,
    records: Iterable[MapRecord],
    cuts_of: Callable[[MapRecord], Iterable[tuple[int, bool | None]]],  # None: by the rule
    input_steps: int,
    rule: EventRule,
    fill_gap_min: int,
) -> Cases:
    if int(input_steps) != input_steps or input_steps < rule.window_min:
        raise ValueError(f"input_steps must be an integer >= {rule.window_min} minutes (the "
                         f"{rule.name} rule's window), got {input_steps!r}")
    rows: dict[str, list] = {k: [] for k in ("pid", "rid", "cut", "t0", "x", "y", "label")}
    left: Counter[str] = Counter()
    horizon = rule.horizon_min
    for rec in records:
        filled = filled_minutes(rec.minutes, fill_gap_min)
        n = len(rec.minutes)
        for cut, given in cuts_of(rec):
            if cut < input_steps:
                left["short_history"] += 1
                continue
            if cut + horizon > n:
                left["short_future"] += 1
                continue
            if rule.ongoing(rec.minutes[:cut]):
                left["ongoing_event"] += 1
                continue
            x = filled[cut - input_steps : cut]
            if np.isnan(x).any():
                left["gap_in_input"] += 1
                continue
            future = rec.minutes[cut : cut + horizon]
            rows["pid"].append(rec.patient_id)
            rows["rid"].append(rec.name)
            rows["cut"].append(cut)
            rows["t0"].append(rec.t0 - cut if rec.t0 is not None else np.nan)
            rows["x"].append(x)
            rows["y"].append(filled[cut : cut + horizon])
            rows["label"].append(bool(rule.label(future)) if given is None else bool(given))
    return Cases(
        kind=kind,
        patient_ids=np.array(rows["pid"], dtype=str),
        record_ids=np.array(rows["rid"], dtype=str),
        cut_min=np.array(rows["cut"], dtype=np.int64),
        before_t0_min=np.array(rows["t0"], dtype=np.float64),
        x=np.array(rows["x"], dtype=np.float64).reshape(-1, int(input_steps)),
        truth=np.array(rows["y"], dtype=np.float64).reshape(-1, horizon),
        label=np.array(rows["label"], dtype=bool),
        left_out={k: left[k] for k in LEFT_OUT_REASONS if left[k]},
    )


def build_t0_cases(records: Iterable[MapRecord], input_steps: int, *, rule: EventRule = AHE,
                   fill_gap_min: int = 15) -> Cases:
    """One case per record with a T0, cut at T0, labelled by the record's label (the rule on the
    hour after T0 where it has none)."""
    return _cut_records("t0", records, lambda r: [] if r.t0 is None else [(r.t0, r.label)],
                        input_steps, rule, fill_gap_min)


def build_early_cases(records: Iterable[MapRecord], input_steps: int, *,
                      before_t0_min: Sequence[int] = (60, 120, 180), rule: EventRule = AHE,
                      fill_gap_min: int = 15) -> Cases:
    """Cases `before_t0_min` minutes before each record's T0, labelled by the rule."""
    bad = [b for b in before_t0_min if int(b) != b or b < 1]
    if bad:
        raise ValueError(f"before_t0_min must be whole minutes >= 1, got {bad[0]!r}")
    return _cut_records(
        "early", records,
        lambda r: [] if r.t0 is None else [(r.t0 - int(b), None) for b in before_t0_min],
        input_steps, rule, fill_gap_min)


def monitoring_cuts(n_minutes: int, input_steps: int, horizon_min: int,
                    every_min: int) -> np.ndarray:
    """Cut minutes of continuous monitoring: `input_steps`, `input_steps + every_min`, ... up to
    the last with `horizon_min` minutes after it (`n_minutes - horizon_min`)."""
    if int(every_min) != every_min or every_min < 1:
        raise ValueError(f"every_min must be a whole number of minutes >= 1, got {every_min!r}")
    return np.arange(input_steps, n_minutes - horizon_min + 1, every_min, dtype=np.int64)


def build_monitoring_cases(records: Iterable[MapRecord], input_steps: int, *,
                           every_min: int = 30, rule: EventRule = AHE,
                           fill_gap_min: int = 15) -> Cases:
    """Continuous monitoring: a cut every `every_min` minutes (`monitoring_cuts`), each labelled
    by the rule; each case stands for `every_min` minutes of monitoring."""
    return _cut_records(
        "monitoring", records,
        lambda r: [(int(c), None) for c in monitoring_cuts(len(r.minutes), input_steps,
                                                           rule.horizon_min, every_min)],
        input_steps, rule, fill_gap_min)


def _label_rows(labels: Any) -> dict[str, Mapping[str, Any]]:
    """`Dataset.labels` (a DataFrame with `record`, `group`, `ahe_in_forecast_window`,
    `t0_sample`) as {record: row}; {} when there are none."""
    if labels is None or len(labels) == 0:
        return {}
    return {str(row["record"]): row for row in labels.to_dict("records")}


def _truth_at_t0(row: Mapping[str, Any]) -> bool | None:
    group = row.get("group")
    if isinstance(group, str) and group:
        return group in EVENT_GROUPS
    flag = row.get("ahe_in_forecast_window")
    return None if flag is None or flag != flag else bool(flag)  # flag != flag: NaN


def read_map_records(dataset: Any, split: str | None = None, channel: str | None = None,
                     horizon_min: int = AHE.horizon_min) -> list[MapRecord]:
    """The records of `split` of a pipelines `Dataset` as `MapRecord`s (signals read from disk).

    `channel` defaults to the dataset's only channel. T0 and the label come from `Dataset.labels`
    (matched by record id, or by the WFDB record name of a record's source when that record is
    its source's only piece); a record without a label row gets T0 = its last `horizon_min`
    minutes and the rule for a label. The dataset must hold one value a minute.
    """
    if abs(dataset.fs * 60.0 - 1.0) > 1e-6:
        raise ValueError(f"MAP records must hold one value a minute (fs 1/60 Hz), dataset "
                         f"{dataset.root} has fs {dataset.fs:g} Hz")
    if channel is None:
        if len(dataset.channels) != 1:
            raise ValueError(f"name the MAP channel: dataset {dataset.root} has channels "
                             f"{list(dataset.channels)}")
        channel = dataset.channels[0]
    col = dataset.channel_index([channel])[0]
    labels = _label_rows(getattr(dataset, "labels", None))
    manifest = dataset.manifest
    if split not in (None, "all"):
        manifest = manifest[manifest["split"] == split]
    pieces = Counter(dataset.manifest["source_path"].astype(str))
    out = []
    for row in manifest.to_dict("records"):
        rid, source = str(row["record_id"]), str(row["source_path"])
        minutes = np.asarray(dataset.signal(rid)[:, col], dtype=np.float64)
        stem = source.rsplit("/", 1)[-1].removesuffix(".hea")
        label_row = labels.get(rid) or (labels.get(stem) if pieces[source] == 1 else None)
        if label_row is None:
            t0, label, group = max(len(minutes) - horizon_min, 0), None, None
        else:
            t0, label = int(label_row["t0_sample"]), _truth_at_t0(label_row)
            group = label_row.get("group")
        if labels and label_row is None:
            log.info("record %s has no label row: T0 at its last hour, label by the rule", rid)
        out.append(MapRecord(patient_id=str(row["patient_id"]), minutes=minutes, t0=t0,
                             label=label, record_id=rid, group=group))
    return out
