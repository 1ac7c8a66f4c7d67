"""Metrics on tiny hand-made arrays, the patient bootstrap of skill, and the evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.evaluation.metrics import (
    bootstrap_skill_ci,
    compute_evaluation,
    interval_coverage,
    mae,
    mae_per_step,
    pinball_loss,
    rmse,
    skill,
)
from pipelines.evaluation.report import ForecastExamples, render_markdown, write_report

# Two windows, horizon 2, one target. Errors: [[1, -3], [0, 2]].
Y = np.array([[[1.0], [2.0]], [[3.0], [4.0]]])
Y_HAT = np.array([[[2.0], [-1.0]], [[3.0], [6.0]]])


def test_mae_rmse_and_per_step_error_on_a_tiny_example() -> None:
    assert mae(Y, Y_HAT) == pytest.approx(6.0 / 4)
    assert rmse(Y, Y_HAT) == pytest.approx(np.sqrt((1 + 9 + 0 + 4) / 4))
    np.testing.assert_allclose(mae_per_step(Y, Y_HAT), [0.5, 2.5])


def test_metrics_skip_unknown_truth_but_not_missing_forecasts() -> None:
    y = Y.copy()
    y[1, 1, 0] = np.nan
    assert mae(y, Y_HAT) == pytest.approx(4.0 / 3)
    np.testing.assert_allclose(mae_per_step(y, Y_HAT), [0.5, 3.0])

    y_hat = Y_HAT.copy()
    y_hat[0, 0, 0] = np.nan
    assert np.isnan(mae(Y, y_hat))


def test_mae_rejects_mismatched_shapes_naming_both() -> None:
    message = r"y_hat shape \(2, 2\) does not match y shape \(2, 2, 1\)"
    with pytest.raises(ValueError, match=message):
        mae(Y, np.zeros((2, 2)))


def test_pinball_loss_per_quantile() -> None:
    y = np.array([[[10.0]]])
    q_hat = np.array([[[[8.0, 10.0, 13.0]]]])  # errors y - q: 2, 0, -3

    loss = pinball_loss(y, q_hat, [0.1, 0.5, 0.9])

    np.testing.assert_allclose(loss, [0.1 * 2, 0.0, 0.1 * 3])


def test_interval_coverage_counts_truths_inside_the_closed_interval() -> None:
    y = np.array([[[1.0], [2.0], [3.0], [4.0]]])
    lo = np.array([[[0.0], [2.0], [3.5], [0.0]]])
    hi = np.array([[[2.0], [2.5], [5.0], [3.9]]])

    assert interval_coverage(y, lo, hi) == pytest.approx(0.5)


def test_skill_is_one_minus_the_mae_ratio_and_needs_a_positive_baseline() -> None:
    assert skill(0.5, 2.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="baseline MAE > 0, got 0.0"):
        skill(1.0, 0.0)


def _cohort(seed: int = 0) -> tuple[np.ndarray, ...]:
    """20 patients x 10 windows; the model's errors are about half the baseline's."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i:02d}" for i in range(20)], 10)
    y = rng.normal(size=(200, 4, 1))
    scale = rng.uniform(0.5, 2.0, size=20).repeat(10)[:, None, None]  # patient difficulty
    y_model = y + 0.5 * scale * rng.normal(size=y.shape)
    y_base = y + 1.0 * scale * rng.normal(size=y.shape)
    return y, y_model, y_base, patients


def test_bootstrap_skill_ci_is_deterministic_by_seed_and_contains_the_estimate() -> None:
    y, y_model, y_base, patients = _cohort()

    first = bootstrap_skill_ci(y, y_model, y_base, patients, n_boot=500, seed=7)
    again = bootstrap_skill_ci(y, y_model, y_base, patients, n_boot=500, seed=7)
    other = bootstrap_skill_ci(y, y_model, y_base, patients, n_boot=500, seed=8)

    point = skill(mae(y, y_model), mae(y, y_base))
    assert first == again
    assert first != other
    assert first[0] < point < first[1]


def test_bootstrap_resamples_patients_so_one_patient_gives_a_zero_width_interval() -> None:
    y, y_model, y_base, _ = _cohort()
    lo, hi = bootstrap_skill_ci(y, y_model, y_base, ["only"] * len(y), n_boot=50)
    assert lo == pytest.approx(hi)
    assert lo == pytest.approx(skill(mae(y, y_model), mae(y, y_base)))


def test_evaluation_picks_the_best_baseline_and_has_the_json_shape() -> None:
    y, y_model, y_base, patients = _cohort()
    worse = y_base * 2.0

    result = compute_evaluation(
        y, y_model, {"persistence": worse, "ridge_ar": y_base}, patients, n_boot=200
    )
    d = json.loads(json.dumps(result.to_dict()))

    assert d["best_baseline"] == "ridge_ar"
    assert d["model"]["mae"] == pytest.approx(mae(y, y_model))
    assert len(d["model"]["mae_per_step"]) == 4
    assert set(d["baselines"]) == {"persistence", "ridge_ar"}
    assert set(d["baselines"]["ridge_ar"]) == {"mae", "rmse", "mae_per_step"}
    assert d["skill_mae_vs_best_baseline"] == pytest.approx(1 - mae(y, y_model) / mae(y, y_base))
    lo, hi = d["skill_ci95"]
    assert lo < d["skill_mae_vs_best_baseline"] < hi
    assert (d["n_windows"], d["n_patients"]) == (200, 20)


def test_evaluation_with_quantiles_reports_pinball_and_coverage() -> None:
    y, y_model, y_base, patients = _cohort()
    q_hat = np.stack([y - 1.0, y_model, y + 1.0], axis=-1)

    d = compute_evaluation(
        y, y_model, {"persistence": y_base}, patients, quantiles=[0.1, 0.5, 0.9], q_hat=q_hat
    ).to_dict()

    assert d["model"]["interval"]["coverage"] == pytest.approx(1.0)
    assert d["model"]["interval"]["nominal"] == pytest.approx(0.8)
    assert set(d["model"]["pinball"]) == {"0.1", "0.5", "0.9"}


def test_markdown_contains_the_numbers() -> None:
    y, y_model, y_base, patients = _cohort()
    result = compute_evaluation(y, y_model, {"persistence": y_base}, patients, n_boot=100)

    md = render_markdown(result)

    assert f"{result.model.mae:.4g}" in md
    assert f"{result.baselines['persistence'].rmse:.4g}" in md
    # a skill and its interval at the same 3 decimals (pipelines.report_format)
    assert f"**{result.skill_mae_vs_best_baseline:.3f}**" in md
    assert f"95% CI [{result.skill_ci95[0]:.3f}, {result.skill_ci95[1]:.3f}]" in md
    assert "200 windows from 20 patients" in md


def test_write_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    y, y_model, y_base, patients = _cohort()
    result = compute_evaluation(y, y_model, {"persistence": y_base}, patients, n_boot=50)
    x = np.random.default_rng(0).normal(size=(3, 16, 2))
    examples = ForecastExamples(
        x=x,
        y=y[:3],
        y_hat=y_model[:3],
        target_idx=(1,),
        baselines={"persistence": y_base[:3]},
        target_names=("ABP",),
        fs=125.0,
    )

    written = write_report(result, tmp_path / "report", examples)

    out = tmp_path / "report"
    assert sorted(p.name for p in out.iterdir()) == [
        "error_by_step.png",
        "evaluation.json",
        "evaluation.md",
        "forecast_examples.png",
    ]
    assert json.loads((out / "evaluation.json").read_text()) == result.to_dict()
    assert (out / "evaluation.md").read_text() == render_markdown(result)
    assert (out / "error_by_step.png").read_bytes()[:4] == b"\x89PNG"
    assert set(written) == {p.name for p in out.iterdir()}


def test_skill_is_against_the_best_classic_baseline_and_cycle_median_gets_its_own() -> None:
    y, y_model, y_base, patients = _cohort()
    cycle = y + 0.6 * (y_model - y)  # better than every classic baseline: still not the reference

    result = compute_evaluation(y, y_model, {"persistence": y_base * 2.0, "ridge_ar": y_base,
                                             "cycle_median": cycle}, patients, n_boot=200)
    d = json.loads(json.dumps(result.to_dict()))

    assert d["best_baseline"] == "ridge_ar"
    assert d["skill_baselines"] == ["persistence", "ridge_ar"]
    assert d["baselines"]["cycle_median"]["mae"] == pytest.approx(mae(y, cycle))
    assert d["skill_vs_cycle_median"] == pytest.approx(1 - mae(y, y_model) / mae(y, cycle))
    lo, hi = d["skill_vs_cycle_median_ci95"]
    assert lo < d["skill_vs_cycle_median"] < hi < 0  # the model is worse than the cycle median
    assert "Skill against cycle_median" in render_markdown(result)


def test_without_cycle_median_its_keys_are_null_and_the_old_keys_unchanged() -> None:
    y, y_model, y_base, patients = _cohort()

    d = compute_evaluation(y, y_model, {"persistence": y_base}, patients, n_boot=50).to_dict()

    assert d["skill_vs_cycle_median"] is None and d["skill_vs_cycle_median_ci95"] is None
    assert (d["n_records"], d["records"], d["groups"], d["left_out"]) == (0, [], {}, None)
    assert d["best_baseline"] == "persistence"  # only one given: it is the reference


def test_scores_per_record_and_per_group_add_up_to_the_hand_computed_maes() -> None:
    from pipelines.evaluation.breakdown import score_groups, score_records

    # Three records (r2 is patient p1's second record), two windows each, horizon 1.
    y = np.zeros((6, 1, 1))
    model = np.array([1.0, 1.0, 2.0, 2.0, 4.0, 4.0])[:, None, None]
    base = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0])[:, None, None]
    cycle = np.array([1.0, 3.0, 4.0, 4.0, 4.0, 4.0])[:, None, None]
    records = np.array(["r0", "r0", "r1", "r1", "r2", "r2"])
    patients = np.array(["p0", "p0", "p1", "p1", "p1", "p1"])
    baselines = {"persistence": base, "cycle_median": cycle}

    scores = score_records(y, model, baselines, records, patients, "persistence")
    by_group = score_groups(y, model, baselines, records, patients,
                            {"alarm": {"r0": "Asystole", "r1": "Asystole", "r2": "Tachycardia"}},
                            "persistence", n_boot=50)

    assert [(s.record_id, s.patient_id, s.n_windows) for s in scores] == [
        ("r0", "p0", 2), ("r1", "p1", 2), ("r2", "p1", 2)]
    assert [s.mae for s in scores] == [1.0, 2.0, 4.0]
    assert [s.skill for s in scores] == [0.5, 0.0, -1.0]
    assert [s.skill_vs_cycle_median for s in scores] == [0.5, 0.5, 0.0]
    asystole = by_group["alarm"]["Asystole"]
    assert (asystole.n_records, asystole.n_patients, asystole.n_windows) == (2, 2, 4)
    assert asystole.mae == 1.5 and asystole.baselines["cycle_median"] == 3.0
    assert asystole.skill == pytest.approx(0.25) and asystole.skill_vs_cycle_median == 0.5
    lo, hi = by_group["alarm"]["Tachycardia"].skill_ci95  # one patient: a zero-width interval
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(-1.0)


def test_a_report_with_records_has_their_tables_and_the_records_png(tmp_path: Path) -> None:
    import dataclasses

    from pipelines.evaluation.breakdown import score_groups, score_records

    y, y_model, y_base, patients = _cohort()
    records = np.array([f"{p}-{i % 2}" for i, p in enumerate(patients)])
    baselines = {"persistence": y_base, "cycle_median": y_base * 0.9}
    result = compute_evaluation(y, y_model, baselines, patients, n_boot=50)
    labels = {"alarm_label": {r: ("true" if r.endswith("0") else "false") for r in records}}
    result = dataclasses.replace(
        result, fs=4.0, groups_source="ALARMS",
        records=score_records(y, y_model, baselines, records, patients, "persistence"),
        groups=score_groups(y, y_model, baselines, records, patients, labels, "persistence"))
    examples = ForecastExamples(x=np.zeros((2, 16, 1)), y=y[:2], y_hat=y_model[:2],
                                target_idx=(0,), baselines={k: b[:2] for k, b in baselines.items()},
                                fs=4.0, labels=("best record: p00-0\nskill 0.5", "worst"))

    written = write_report(result, tmp_path, examples)
    md = render_markdown(result)

    assert set(written) == {"evaluation.json", "evaluation.md", "error_by_step.png",
                            "forecast_examples.png", "records.png"}
    assert (tmp_path / "records.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Per record (40; skill against persistence)" in md
    assert "## Per alarm_label (labels from ALARMS)" in md
    assert "| forecaster | 0.25 s | 0.5 s | 1 s |" in md  # steps 1, 2, 4 of 4 at 4 Hz
    d = json.loads((tmp_path / "evaluation.json").read_text())
    assert d["n_records"] == 40 and set(d["groups"]["alarm_label"]) == {"true", "false"}
    assert set(d["records"][0]) == {"record_id", "patient_id", "n_windows", "mae", "baselines",
                                    "skill", "skill_vs_cycle_median"}
