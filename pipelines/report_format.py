"""What a user reads of a number: its unit and only the digits it has, in text and in `--json`.

One convention for every command and report (imported by `pipelines.commands.*` and by
`pipelines.evaluation.report`):

Text
    A figure is shown with its unit and 3 significant digits: `format_figure(0.20431, "mV")` is
    `0.204 mV`. A fraction (skill = 1 - MAE model / MAE baseline, coverage) is shown in percent
    with one decimal: `format_percent(0.0712)` is `7.1 %`. An interval is rounded to the decimals
    of the figure it belongs to, so it never shows digits the figure has not:
    `format_estimate(0.0712, (-0.0488, 0.2011), FRACTION)` is `7.1 % (95 % CI -4.9 to 20.1 %)`.
    A figure from a group of fewer than 2 patients (or records) has no interval: the bootstrap
    over one patient cannot give one, so none is shown (`has_interval`, `no_interval_note`). An
    unknown value (None, NaN) is `n/a`. The evaluation report (`evaluation.md`) is a table for
    researchers: errors with 4 significant digits under a header naming their unit, skills as
    fractions with 3 decimals and their intervals at the same 3 (`0.071`, `[-0.049, 0.201]`,
    as `docs/accuracy.md` quotes them).

JSON (`--json`)
    One document on stdout, on one line, and nothing else (`json_document`; logs and progress go
    to stderr). NaN and infinity become null. Figures keep the precision they were computed with
    (programs read them). A `"figure_units"` object beside them, in the same JSON object or the
    nearest enclosing one, maps each figure's key to its unit wherever that key appears below
    it: `{"model": {"mae": 0.2043}, "skill_mae_vs_best_baseline": 0.071, "figure_units":
    {"mae": "mV", "skill_mae_vs_best_baseline": "fraction", ...}}`. (Not `"units"`: in pulsecast's
    vocabulary that is one unit per channel or target, as in `pulsecast.json` and
    `evaluation.json`.) Counts (`n_windows`, `n_records`, ...) and version numbers carry no unit:
    their names say what they count. Unit names: physical units as the WFDB header writes them
    (`mV`, `mmHg`), `s`, `Hz`, `samples`, and `fraction` (a dimensionless ratio, 0.071 = 7.1 %).
    An error pooled over targets with different units (MAE over lead II and ABP) has the unit
    `mixed units: mV, mmHg`; an unknown unit is null.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

FRACTION = "fraction"  # a dimensionless ratio: shown in percent in text
PERCENT = "%"
DIGITS = 3  # significant digits of a figure shown in text
PERCENT_DECIMALS = 1
NA = "n/a"

# The figures of an evaluation (`pipelines.evaluation.metrics.Evaluation.to_dict()`) that are
# fractions or have a fixed unit; every other figure there is in the targets' unit.
_EVALUATION_FIXED = {
    "skill": FRACTION, "skill_mae_vs_best_baseline": FRACTION, "skill_ci95": FRACTION,
    "skill_vs_cycle_median": FRACTION, "skill_vs_cycle_median_ci95": FRACTION,
    "max_still_fraction": FRACTION, "coverage": FRACTION, "nominal": FRACTION,
    "fs": "Hz", "span": "samples",
}
_EVALUATION_IN_TARGET_UNIT = ("mae", "rmse", "mae_per_step", "pinball")


def pooled_unit(units: Iterable[str | None]) -> str | None:
    """The unit of a figure pooled over targets: their one unit, `mixed units: a, b` for several
    (as the report's axes say it), None when no target has a known unit."""
    known = list(dict.fromkeys(u for u in units if u))
    if not known:
        return None
    return known[0] if len(known) == 1 else "mixed units: " + ", ".join(known)


def read_target_unit(version_dir: str | Path) -> str | None:
    """The unit of a published version's errors (`pooled_unit` of its `target_units` in
    `pulsecast.json`); None when it has no metadata or no units."""
    from models.metadata import read_metadata

    try:
        meta = read_metadata(Path(version_dir))
    except (OSError, ValueError):
        return None
    return pooled_unit(meta.target_units) if meta is not None else None


def evaluation_units(target_unit: str | None) -> dict[str, str | None]:
    """The `"figure_units"` of an evaluation document whose errors are in `target_unit`."""
    return {**dict.fromkeys(_EVALUATION_IN_TARGET_UNIT, target_unit), **_EVALUATION_FIXED}


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def decimals_for(value: float | None, digits: int = DIGITS) -> int:
    """Decimals that show `value` with `digits` significant digits (0 for large values)."""
    if not _known(value) or value == 0:
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def format_number(value: float | None, decimals: int) -> str:
    """`value` with `decimals` decimals; `n/a` when unknown; never `-0.0`."""
    if not _known(value):
        return NA
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _with_unit(text: str, unit: str | None) -> str:
    if text == NA or not unit:
        return text
    return f"{text} {unit}"


def format_figure(value: float | None, unit: str | None, digits: int = DIGITS) -> str:
    """`0.20431, "mV"` -> `0.204 mV`; a fraction in percent (`0.0712, "fraction"` -> `7.1 %`)."""
    if unit == FRACTION:
        return format_percent(value)
    return _with_unit(format_number(value, decimals_for(value, digits)), unit)


def format_percent(fraction: float | None, decimals: int = PERCENT_DECIMALS,
                   signed: bool = False) -> str:
    """A fraction in percent: `0.0712` -> `7.1 %` (`+7.1 %` with `signed`)."""
    if not _known(fraction):
        return NA
    text = format_number(100 * fraction, decimals)
    if signed and not text.startswith("-"):
        text = "+" + text
    return f"{text} {PERCENT}"


def format_interval(lo: float | None, hi: float | None, unit: str | None = None,
                    decimals: int | None = None) -> str:
    """`[lo, hi] unit`, both ends with `decimals` decimals (default: 3 significant digits of the
    larger end); a fraction in percent. `n/a` when either end is unknown."""
    if not (_known(lo) and _known(hi)):
        return NA
    if unit == FRACTION:
        lo, hi, unit = 100 * lo, 100 * hi, PERCENT
        decimals = PERCENT_DECIMALS if decimals is None else decimals
    if decimals is None:
        decimals = decimals_for(max(abs(lo), abs(hi)))
    return _with_unit(f"[{format_number(lo, decimals)}, {format_number(hi, decimals)}]", unit)


def format_estimate(value: float | None, interval: Sequence[float | None] | None,
                    unit: str | None, digits: int = DIGITS, level: str = "95 % CI") -> str:
    """A figure and its interval at the figure's precision: `7.1 % (95 % CI -4.9 to 20.1 %)`,
    `0.204 mV (95 % CI 0.198 to 0.211 mV)`. Without an interval (None, unknown ends, a group
    of one patient) the figure alone."""
    shown = format_figure(value, unit, digits)
    if shown == NA or not interval or not all(_known(v) for v in interval):
        return shown
    lo, hi = interval
    if unit == FRACTION:
        ends = [format_number(100 * v, PERCENT_DECIMALS) for v in (lo, hi)]
        return f"{shown} ({level} {ends[0]} to {ends[1]} {PERCENT})"
    decimals = decimals_for(value, digits)
    ends = [format_number(v, decimals) for v in (lo, hi)]
    return f"{shown} ({level} {ends[0]} to {_with_unit(ends[1], unit)})"


def has_interval(n_patients: int | None, n_records: int | None = None) -> bool:
    """Whether a bootstrap interval over patients means anything: at least 2 patients and 2
    records (a count that is not known is not held against it)."""
    return all(n >= 2 for n in (n_patients, n_records) if n is not None)


def no_interval_note(n_patients: int | None) -> str:
    """` (no interval: 1 patient)` where a skill has no interval, else ""."""
    return "" if has_interval(n_patients) else f" (no interval: {plural(n_patients, 'patient')})"


def plural(n: int | None, noun: str) -> str:
    """`1 patient`, `3 patients`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_INTERVAL_KEYS = ("skill_ci95", "skill_vs_cycle_median_ci95")


def without_lone_intervals(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an evaluation document (`Evaluation.to_dict()`) whose intervals over fewer than
    2 patients or records (the whole, or a group) are null: one patient has no interval."""

    def strip(part: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(part)
        if not has_interval(out.get("n_patients"), out.get("n_records")):
            out.update({k: None for k in _INTERVAL_KEYS if k in out})
        return out

    doc = strip(evaluation)
    if isinstance(doc.get("groups"), Mapping):
        doc["groups"] = {grouping: {name: strip(g) for name, g in groups.items()}
                         for grouping, groups in doc["groups"].items()}
    return doc


def _finite(value: Any) -> Any:
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # a numpy scalar
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_document(doc: Mapping[str, Any]) -> str:
    """`doc` as one line of strict JSON (NaN and infinity as null; paths and other objects as
    strings)."""
    return json.dumps(_finite(doc), allow_nan=False, default=str)


_json_stream: TextIO | None = None  # where `print_json` writes while `stdout_for_json_only` runs


@contextlib.contextmanager
def stdout_for_json_only() -> Iterator[None]:
    """A `--json` run: `print_json` writes to stdout as it is now; anything else written to
    stdout meanwhile (a progress bar, a stray print) goes to stderr, with the logs."""
    global _json_stream
    previous, _json_stream = _json_stream, sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stream = previous


def print_json(doc: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """Print `doc` as the one JSON document of a `--json` run (on stdout; under
    `stdout_for_json_only`, the stdout it started with)."""
    print(json_document(doc), file=stream or _json_stream or sys.stdout, flush=True)
