"""Patient-level train/val/test assignment by a stable hash of `patient_id`: pure, no I/O.

`u = int(sha256(patient_id)[:16 hex]) / 2**64` is uniform in [0, 1) and identical on every machine
and every run (Python's `hash()` is salted per process, so it is never used). A patient goes to
`train` when `u < f_train`, to `val` when `u < f_train + f_val`, else to `test` (`assign_split`,
the per-patient rule). All records of a patient share one split.

A small cohort can leave a split empty by chance (8 patients: all in train about one time in
twenty), and then nothing can be validated or tested. `cohort_splits` is the cohort-level rule
ingest uses: the hash rule, then, when a split whose fraction is above 0 is empty and the cohort
has a patient for each such split, the patient nearest that split's interval (by `u`) moves to it
from the largest split, until none is empty. It is a pure function of the set of patient ids: the
same cohort gets the same splits in any order, on any machine, and a cohort with no empty split
(any cohort of a hundred patients, in practice) keeps exactly the hash rule. `check_cohort_splits`
is the refusal `pulsecast train` gives before fitting when a split is still empty.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)


def validate_fractions(fractions: tuple[float, ...]) -> tuple[float, float, float]:
    """Return `fractions` as a 3-tuple of floats, or raise ValueError naming the bad value."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3:
        raise ValueError(f"split fractions must be 3 values (train, val, test), got {fractions}")
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"split fractions must be finite and >= 0, got {fractions}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    return fractions  # type: ignore[return-value]


def patient_unit(patient_id: str) -> float:
    """A stable pseudo-random number in [0, 1) for `patient_id` (sha256 of its UTF-8 bytes)."""
    digest = hashlib.sha256(patient_id.encode("utf-8")).hexdigest()
    return int(digest[:16], 16) / 2.0**64


def assign_split(
    patient_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> str:
    """`train`, `val` or `test` for `patient_id`; the same answer on every run."""
    f_train, f_val, _ = validate_fractions(fractions)
    u = patient_unit(patient_id)
    if u < f_train:
        return "train"
    if u < f_train + f_val:
        return "val"
    return "test"


def assign_splits(
    patient_ids: Iterable[str], fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> dict[str, str]:
    """Map each distinct patient id to its split."""
    return {pid: assign_split(pid, fractions) for pid in sorted(set(patient_ids))}


class SplitError(ValueError):
    """A cohort whose splits cannot serve training and evaluation; the message has the counts."""


def split_bounds(
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> dict[str, tuple[float, float]]:
    """Each split's interval `[lo, hi)` of the patient unit `u`."""
    f_train, f_val, _ = validate_fractions(fractions)
    return {"train": (0.0, f_train), "val": (f_train, f_train + f_val),
            "test": (f_train + f_val, 1.0)}


def _distance(u: float, bounds: tuple[float, float]) -> float:
    """How far `u` lies outside `[lo, hi)` (0 inside)."""
    lo, hi = bounds
    return lo - u if u < lo else max(0.0, u - hi)


def cohort_splits(
    patient_ids: Iterable[str], fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> dict[str, str]:
    """Map each distinct patient id to its split, with no empty split when the cohort allows.

    The hash rule (`assign_split`) first. Then, while a split whose fraction is above 0 has no
    patient and the cohort has at least one patient per such split, the patient of the largest
    split (ties: train, val, test) whose `u` lies nearest that empty split's interval moves to
    it (ties: the smaller `u`, then the id). Each move takes one patient from a split of two or
    more, so at most two moves happen and only patients at a boundary move.
    """
    fractions = validate_fractions(fractions)
    split_of = assign_splits(patient_ids, fractions)
    wanted = [s for s, f in zip(SPLIT_NAMES, fractions, strict=True) if f > 0]
    if len(split_of) < len(wanted):
        return split_of
    bounds = split_bounds(fractions)
    unit = {pid: patient_unit(pid) for pid in split_of}
    for empty in wanted:
        members = {s: sorted(p for p, sp in split_of.items() if sp == s) for s in SPLIT_NAMES}
        if members[empty]:
            continue
        donor = max(SPLIT_NAMES, key=lambda s: (len(members[s]), -SPLIT_NAMES.index(s)))
        mover = min(members[donor], key=lambda p: (_distance(unit[p], bounds[empty]), unit[p], p))
        split_of[mover] = empty
    return split_of


def split_counts(split_of: Mapping[str, str]) -> dict[str, int]:
    """Patients per split, every split named (0 when empty), from `{patient_id: split}`."""
    counts = dict.fromkeys(SPLIT_NAMES, 0)
    for split in split_of.values():
        counts[split] += 1
    return counts


def _counts_text(counts: Mapping[str, int]) -> str:
    return " ".join(f"{s}={counts.get(s, 0)}" for s in SPLIT_NAMES)


def check_cohort_splits(patients: Mapping[str, int], windows: Mapping[str, int] | None = None,
                        where: str = "the dataset") -> None:
    """Refuse (SplitError) a cohort with a split that has no patient, or (given `windows`, the
    usable windows per split) no window; the message names the counts and the fix."""
    n = sum(patients.get(s, 0) for s in SPLIT_NAMES)
    if any(patients.get(s, 0) == 0 for s in SPLIT_NAMES):
        if n < len(SPLIT_NAMES):
            fix = (f"ingest more patients (>= {len(SPLIT_NAMES)}; with no patient ids in the "
                   "records, each record counts as its own patient)")
        else:
            fix = ("ingest it again with this pulsecast: `pulsecast ingest` gives every split a "
                   "patient when the cohort has 3 or more and every split fraction is above 0")
        raise SplitError(
            f"{where} needs at least one patient in each of train/val/test, got "
            f"{_counts_text(patients)} ({n} patients): {fix}")
    if windows is not None and any(windows.get(s, 0) == 0 for s in SPLIT_NAMES):
        empty = [s for s in SPLIT_NAMES if windows.get(s, 0) == 0]
        raise SplitError(
            f"{where} has no windows in split {', '.join(map(repr, empty))}: got windows "
            f"{_counts_text(windows)} from patients {_counts_text(patients)}; every record of "
            "that split is shorter than one window, touches a gap or holds still: ingest more "
            "patients, or shorten [window] input_steps/horizon")
