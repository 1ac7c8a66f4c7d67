"""Patient-level train/val/test assignment by a stable hash of `patient_id`: pure, no I/O.

`u = int(sha256(patient_id)[:16 hex]) / 2**64` is uniform in [0, 1) and identical on every machine
and every run (Python's `hash()` is salted per process, so it is never used). A patient goes to
`train` when `u < f_train`, to `val` when `u < f_train + f_val`, else to `test`. All records of a
patient share one split, and a new patient lands in the same split whatever else is ingested.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

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
