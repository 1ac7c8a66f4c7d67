"""The promotion gate: should a retrained challenger replace the champion? Pure, no I/O.

Both models are scored by `pipelines.evaluation.evaluate.evaluate_forecaster` on the same
windows: the held-out patients of the grown dataset (`held_out`: the old test patients and the new
test patients) and, inside them, the old test patients alone (`old_test`). The challenger is
promoted only when

- its held-out MAE is lower than the champion's by at least `min_improvement`, relative
  (`(champion - challenger) / champion >= 0.02` by default), and
- its MAE on the old test patients is not higher than the champion's by more than
  `old_test_tolerance`, relative (`(challenger - champion) / champion <= 0.02` by default), so a
  model that wins on the new patients by forgetting the old ones is refused, and
- for a recipe that warns of an event (`events` in both held-out evaluations), its warning's
  AUROC on the held-out patients is not lower than the champion's by more than
  `auroc_tolerance` (0.02 by default, absolute): at the T0 cases when both have them, else under
  continuous monitoring. A better forecast bought with a worse warning is refused.

A non-finite MAE, or evaluations on different windows, are refusals with the reason, never a
promotion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass


class GateError(ValueError):
    """Evaluations that cannot be compared (different windows, missing metrics)."""


@dataclass(frozen=True)
class GateThresholds:
    """Relative thresholds: 0.02 = 2 % of the champion's MAE."""

    min_improvement: float = 0.02
    old_test_tolerance: float = 0.02
    auroc_tolerance: float = 0.02  # absolute: the warning's AUROC may drop this much at most

    def __post_init__(self) -> None:
        for name in ("min_improvement", "old_test_tolerance", "auroc_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value}")


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why; `to_dict()` goes into the report and the new metadata."""

    promote: bool
    reasons: tuple[str, ...]
    champion_mae: float
    challenger_mae: float
    improvement: float  # relative: (champion - challenger) / champion, > 0 = challenger better
    old_test_champion_mae: float
    old_test_challenger_mae: float
    old_test_change: float  # relative: (challenger - champion) / champion, > 0 = worse
    thresholds: GateThresholds
    n_windows: int
    n_patients: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in out.items()}


def relative_change(before: float, after: float) -> float:
    """`(after - before) / before`; +inf/-inf/0 when `before` is 0, NaN when either is."""
    if not (math.isfinite(before) and math.isfinite(after)):
        return math.nan
    if before == 0:
        return 0.0 if after == 0 else math.copysign(math.inf, after)
    return (after - before) / before


def _mae(evaluation: Mapping, which: str) -> float:
    try:
        value = evaluation["model"]["mae"]
    except (KeyError, TypeError) as err:
        raise GateError(f"{which} evaluation has no model.mae: {err}") from err
    return math.nan if value is None else float(value)


def _same_windows(champion: Mapping, challenger: Mapping, part: str) -> None:
    for key in ("n_windows", "n_patients"):
        if champion.get(key) != challenger.get(key):
            raise GateError(
                f"champion and challenger were not scored on the same {part} windows: {key} "
                f"{champion.get(key)} vs {challenger.get(key)}"
            )


def _warning_auroc(evaluation: Mapping) -> tuple[str, float] | None:
    """(case set, the model's warning AUROC) from an evaluation's `events` summary, T0 first."""
    events = evaluation.get("events") or {}
    for kind in ("t0", "monitoring"):
        auroc = (events.get(kind) or {}).get("model", {}).get("auroc")
        if auroc is not None and math.isfinite(auroc):
            return kind, float(auroc)
    return None


def _warning_reasons(champion: Mapping, challenger: Mapping,
                     thresholds: GateThresholds) -> list[str]:
    """A refusal when the challenger's warning AUROC falls short of the champion's by more than
    the tolerance (nothing to weigh when either evaluation has no warning)."""
    champ, chall = _warning_auroc(champion), _warning_auroc(challenger)
    if champ is None or chall is None or champ[0] != chall[0]:
        return []
    drop = champ[1] - chall[1]
    if drop > thresholds.auroc_tolerance:
        return [f"held-out warning AUROC ({champ[0]} cases) {chall[1]:.3f} vs champion "
                f"{champ[1]:.3f}: {drop:.3f} lower > tolerance {thresholds.auroc_tolerance:.3f}"]
    return []


def decide(
    champion: Mapping[str, Mapping],
    challenger: Mapping[str, Mapping],
    thresholds: GateThresholds | None = None,
) -> GateDecision:
    """Promote or not. `champion` and `challenger` map `held_out` and `old_test` to evaluation
    dicts (`Evaluation.to_dict()`: `model.mae`, `n_windows`, `n_patients`) on the same windows.
    """
    thresholds = thresholds or GateThresholds()
    for part in ("held_out", "old_test"):
        if part not in champion or part not in challenger:
            raise GateError(f"both evaluations need a {part!r} entry, got {sorted(champion)} "
                            f"and {sorted(challenger)}")
        _same_windows(champion[part], challenger[part], part)
    champ, chall = _mae(champion["held_out"], "champion"), _mae(challenger["held_out"],
                                                                "challenger")
    old_champ = _mae(champion["old_test"], "champion old_test")
    old_chall = _mae(challenger["old_test"], "challenger old_test")
    improvement = -relative_change(champ, chall)
    old_change = relative_change(old_champ, old_chall)
    reasons: list[str] = []
    if not math.isfinite(chall) or not math.isfinite(old_chall):
        reasons.append(f"challenger MAE is not finite (held-out {chall}, old test {old_chall})")
    if not math.isfinite(champ) or not math.isfinite(old_champ):
        reasons.append(f"champion MAE is not finite (held-out {champ}, old test {old_champ})")
    if not reasons:
        if improvement < thresholds.min_improvement:
            reasons.append(
                f"held-out MAE {chall:.4g} vs champion {champ:.4g}: improvement "
                f"{improvement:+.2%} < required {thresholds.min_improvement:.2%}"
            )
        if old_change > thresholds.old_test_tolerance:
            reasons.append(
                f"old test patients' MAE {old_chall:.4g} vs champion {old_champ:.4g}: "
                f"{old_change:+.2%} worse > tolerance {thresholds.old_test_tolerance:.2%}"
            )
    if not reasons:
        reasons += _warning_reasons(champion["held_out"], challenger["held_out"], thresholds)
    promote = not reasons
    if promote:
        reasons.append(
            f"held-out MAE {chall:.4g} vs champion {champ:.4g} ({improvement:+.2%} better, "
            f">= {thresholds.min_improvement:.2%}); old test patients {old_change:+.2%} "
            f"(tolerance {thresholds.old_test_tolerance:.2%})"
        )
    held = champion["held_out"]
    return GateDecision(
        promote=promote, reasons=tuple(reasons), champion_mae=champ, challenger_mae=chall,
        improvement=improvement, old_test_champion_mae=old_champ,
        old_test_challenger_mae=old_chall, old_test_change=old_change, thresholds=thresholds,
        n_windows=int(held.get("n_windows") or 0), n_patients=int(held.get("n_patients") or 0),
    )
