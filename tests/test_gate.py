"""The promotion gate: a pure decision on two evaluations of the same windows."""

from __future__ import annotations

import math

import pytest

from pipelines.release.gate import GateError, GateThresholds, decide, relative_change


def evaluation(held_out: float, old_test: float, n_windows: int = 100) -> dict:
    return {
        "held_out": {"model": {"mae": held_out}, "n_windows": n_windows, "n_patients": 3},
        "old_test": {"model": {"mae": old_test}, "n_windows": 60, "n_patients": 2},
    }


def test_a_challenger_better_by_the_default_2_percent_is_promoted():
    d = decide(evaluation(1.0, 1.0), evaluation(0.97, 0.99))
    assert d.promote
    assert d.improvement == pytest.approx(0.03)
    assert d.old_test_change == pytest.approx(-0.01)
    assert "3.00% better" in d.reasons[0]


def test_a_challenger_better_by_less_than_2_percent_is_refused_with_the_numbers():
    d = decide(evaluation(1.0, 1.0), evaluation(0.99, 0.99))
    assert not d.promote
    assert d.reasons == ("held-out MAE 0.99 vs champion 1: improvement +1.00% < required 2.00%",)


def test_an_improvement_of_exactly_the_threshold_is_enough():
    d = decide(evaluation(1.0, 1.0), evaluation(0.5, 1.0), GateThresholds(min_improvement=0.5))
    assert d.promote


def test_a_challenger_that_forgets_the_old_test_patients_is_refused():
    d = decide(evaluation(1.0, 1.0), evaluation(0.8, 1.05))
    assert not d.promote
    assert len(d.reasons) == 1
    assert "old test patients' MAE 1.05 vs champion 1: +5.00% worse > tolerance 2.00%" in \
        d.reasons[0]


def test_the_tolerance_is_a_setting():
    d = decide(evaluation(1.0, 1.0), evaluation(0.8, 1.05),
               GateThresholds(old_test_tolerance=0.1))
    assert d.promote


def test_a_zero_min_improvement_still_refuses_a_worse_challenger():
    d = decide(evaluation(1.0, 1.0), evaluation(1.2, 1.0), GateThresholds(min_improvement=0.0))
    assert not d.promote


def test_a_non_finite_challenger_mae_is_refused_and_serializes_as_null():
    d = decide(evaluation(1.0, 1.0), evaluation(math.nan, 1.0))
    assert not d.promote
    assert "not finite" in d.reasons[0]
    assert d.to_dict()["challenger_mae"] is None
    d = decide(evaluation(1.0, 1.0), evaluation(None, 1.0))  # NaN metrics travel as null
    assert not d.promote


def test_evaluations_on_different_windows_cannot_be_compared():
    with pytest.raises(GateError, match="same held_out windows: n_windows 100 vs 99"):
        decide(evaluation(1.0, 1.0), evaluation(0.5, 0.5, n_windows=99))


def test_a_missing_part_is_named():
    with pytest.raises(GateError, match="'old_test'"):
        decide({"held_out": evaluation(1.0, 1.0)["held_out"]}, evaluation(1.0, 1.0))


@pytest.mark.parametrize("kwargs", [{"min_improvement": -0.1}, {"old_test_tolerance": math.inf}])
def test_thresholds_must_be_finite_and_non_negative(kwargs):
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        GateThresholds(**kwargs)


def test_relative_change_handles_a_zero_champion():
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0.0, 1.0) == math.inf
    assert relative_change(2.0, 1.0) == -0.5
    assert math.isnan(relative_change(math.nan, 1.0))


def test_the_decision_dict_is_json_ready():
    import json

    d = decide(evaluation(1.0, 1.0), evaluation(0.9, 1.0))
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["promote"] is True
    assert out["thresholds"] == {"min_improvement": 0.02, "old_test_tolerance": 0.02,
                                 "auroc_tolerance": 0.02}


def _with_warning(e: dict, auroc: float | None, kind: str = "t0") -> dict:
    e["held_out"]["events"] = {"event": "ahe", kind: {"model": {"auroc": auroc},
                                                      "map_alone": {"auroc": 0.8}}}
    return e


def test_a_better_forecast_with_a_worse_warning_is_refused_naming_the_aurocs():
    d = decide(_with_warning(evaluation(1.0, 1.0), 0.90),
               _with_warning(evaluation(0.9, 0.9), 0.85))
    assert not d.promote
    assert d.reasons == ("held-out warning AUROC (t0 cases) 0.850 vs champion 0.900: 0.050 "
                         "lower > tolerance 0.020",)


def test_a_warning_within_the_auroc_tolerance_does_not_block_a_better_forecast():
    d = decide(_with_warning(evaluation(1.0, 1.0), 0.90),
               _with_warning(evaluation(0.9, 0.9), 0.89))
    assert d.promote


def test_the_warning_is_weighed_on_monitoring_cases_when_neither_has_t0_cases():
    d = decide(_with_warning(evaluation(1.0, 1.0), 0.80, "monitoring"),
               _with_warning(evaluation(0.9, 0.9), 0.70, "monitoring"),
               GateThresholds(auroc_tolerance=0.05))
    assert not d.promote and "monitoring cases" in d.reasons[0]


def test_without_a_warning_on_either_side_only_the_forecast_counts():
    d = decide(_with_warning(evaluation(1.0, 1.0), None), evaluation(0.9, 0.9))
    assert d.promote
