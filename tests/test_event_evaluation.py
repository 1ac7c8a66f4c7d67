"""The AHE warning and hour-ahead MAP trends, judged on hand-made records and hand-made cases."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.dataset.contract import Dataset, load_dataset
from pipelines.evaluation.event_cases import (
    MapRecord,
    build_early_cases,
    build_monitoring_cases,
    build_t0_cases,
    monitoring_cuts,
    read_map_records,
)
from pipelines.evaluation.event_report import write_event_report
from pipelines.evaluation.event_scores import (
    calibration_bins,
    choose_threshold,
    fit_map_alone,
    rank_auroc,
    score_warning,
)
from pipelines.evaluation.events import EventSettings, evaluate_events

FAST = EventSettings(n_boot=50)


def _flat(n: int = 420, level: float = 80.0) -> np.ndarray:
    return np.full(n, level)


def _record(pid: str, minutes: np.ndarray, t0: int | None = 360,
            label: bool | None = None) -> MapRecord:
    return MapRecord(patient_id=pid, minutes=minutes, t0=t0, label=label)


def _cohort(n: int, seed: int, n_minutes: int = 420, t0: int = 360) -> list[MapRecord]:
    """Random-walk MAP around 80 mmHg; every other patient drifts into an AHE after T0, the
    drift starting half an hour before, so the pressure at T0 carries a warning."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = 80.0 + np.cumsum(rng.normal(0.0, 0.5, n_minutes)) * 0.3
        event = i % 2 == 0
        if event:
            drop = np.clip(np.arange(n_minutes) - (t0 - 30), 0, None) * 0.5
            m = m - np.minimum(drop, 35.0)
        out.append(_record(f"p{seed}-{i:02d}", m, t0=t0, label=event))
    return out


def numpy_forecaster(x: np.ndarray) -> dict[str, np.ndarray]:
    """Persistence with a +-10 mmHg band, and a probability that falls with the current MAP."""
    last = x[:, -1:, :]  # (n, 1, 1)
    forecast = np.repeat(last, 60, axis=1)  # (n, 60, 1)
    quantiles = np.stack([forecast - 10.0, forecast, forecast + 10.0], axis=-1)
    current = x[:, -5:, 0].mean(axis=1)
    return {"forecast": forecast, "quantiles": quantiles,
            "ahe_probability": (1.0 / (1.0 + np.exp((current - 65.0) / 3.0)))[:, None]}


# --- cases ------------------------------------------------------------------------------------


def test_t0_and_early_cases_are_cut_at_t0_and_60_120_180_minutes_before_it() -> None:
    minutes = np.arange(420, dtype=np.float64) + 70.0  # the value tells the minute
    rec = _record("a", minutes, t0=360, label=True)

    t0 = build_t0_cases([rec], input_steps=120)
    early = build_early_cases([rec], input_steps=120)

    assert t0.cut_min.tolist() == [360]
    np.testing.assert_array_equal(t0.x[0], minutes[240:360])
    np.testing.assert_array_equal(t0.truth[0], minutes[360:420])
    assert early.cut_min.tolist() == [300, 240, 180]
    assert early.before_t0_min.tolist() == [60.0, 120.0, 180.0]
    np.testing.assert_array_equal(early.x[2], minutes[60:180])
    np.testing.assert_array_equal(early.truth[0], minutes[300:360])


def test_the_t0_case_takes_the_group_label_and_early_cases_the_rule_on_what_happened() -> None:
    minutes = _flat()
    minutes[250:290] = 50.0  # an AHE between 120 and 60 minutes before T0, none after T0
    rec = _record("a", minutes, t0=360, label=True)  # the group says: AHE after T0

    t0 = build_t0_cases([rec], input_steps=120)
    early = build_early_cases([rec], input_steps=60)

    assert t0.label.tolist() == [True]
    assert dict(zip(early.before_t0_min.tolist(), early.label.tolist(), strict=True)) == {
        60.0: False, 120.0: True, 180.0: False}


def test_a_record_without_a_label_gets_the_rule_on_the_hour_after_t0() -> None:
    minutes = _flat()
    minutes[370:405] = 55.0

    cases = build_t0_cases([_record("a", minutes, t0=360, label=None)], input_steps=120)

    assert cases.label.tolist() == [True]


def test_a_cut_point_inside_an_ongoing_ahe_is_left_out_and_counted() -> None:
    minutes = _flat()
    minutes[150:215] = 50.0  # low from minute 150 to 214: ongoing at the cuts 180 and 210
    rec = _record("a", minutes, t0=360)

    early = build_early_cases([rec], input_steps=120)  # 180 before T0 = minute 180: ongoing
    monitoring = build_monitoring_cases([rec], input_steps=120)  # 180 and 210 ongoing

    assert early.cut_min.tolist() == [300, 240]
    assert early.left_out == {"ongoing_event": 1}
    assert monitoring.cut_min.tolist() == [120, 150, 240, 270, 300, 330, 360]
    assert monitoring.left_out == {"ongoing_event": 2}
    assert monitoring.label.tolist() == [True, True, False, False, False, False, False]


def test_monitoring_cuts_run_every_30_minutes_from_the_first_full_history_to_the_last_full_hour(
) -> None:
    assert monitoring_cuts(660, input_steps=120, horizon_min=60, every_min=30).tolist() == list(
        range(120, 601, 30))
    assert monitoring_cuts(170, input_steps=120, horizon_min=60, every_min=30).tolist() == []


def test_short_gaps_are_filled_and_a_window_still_holding_a_gap_is_left_out_and_counted() -> None:
    minutes = _flat()
    minutes[300:310] = np.nan  # 10 minutes: filled (up to 15 are)
    minutes[100:120] = np.nan  # 20 minutes: stays a gap
    rec = _record("a", minutes, t0=360)

    early = build_early_cases([rec], input_steps=120)

    assert early.cut_min.tolist() == [300, 240]  # 180 reads minutes 60-179, the gap among them
    assert early.left_out == {"gap_in_input": 1}
    assert not np.isnan(early.truth[0]).any()  # minutes 300-309 filled in the truth too
    assert early.n_patients == 1


def test_too_short_a_history_or_future_is_left_out_and_counted() -> None:
    cases = build_early_cases([_record("a", _flat(300), t0=240)], input_steps=120)

    assert cases.cut_min.tolist() == [180, 120]
    assert cases.left_out == {"short_history": 1}
    assert build_t0_cases([_record("b", _flat(300), t0=270)], 120).left_out == {
        "short_future": 1}


def test_cases_refuse_an_input_window_shorter_than_the_rule_naming_it() -> None:
    with pytest.raises(ValueError, match="input_steps must be an integer >= 30 minutes .*got 20"):
        build_t0_cases([_record("a", _flat())], input_steps=20)


# --- the warning's figures --------------------------------------------------------------------


def test_auroc_accuracy_and_brier_on_hand_made_cases_equal_hand_computed_values() -> None:
    label = np.array([True, True, False, False, False])
    p = np.array([0.9, 0.4, 0.6, 0.2, 0.1])

    w = score_warning(label, p, p, p >= 0.5, np.array(list("abcde")), "p >= 0.5", n_boot=200)

    assert w.auroc == pytest.approx(5 / 6)  # 5 of the 6 (event, no event) pairs ranked right
    assert (w.n_correct, w.n_cases) == (3, 5)
    assert w.accuracy == pytest.approx(0.6)
    assert w.sensitivity == pytest.approx(0.5)
    assert w.specificity == pytest.approx(2 / 3)
    assert w.brier == pytest.approx((0.01 + 0.36 + 0.36 + 0.04 + 0.01) / 5)
    assert w.to_dict()["correct"] == "3/5 correct"
    lo, hi = w.auroc_ci95
    assert 0.0 <= lo <= w.auroc <= hi <= 1.0
    assert w.n_boot_one_class > 0  # with 5 patients some resamples hold one class only


def test_rank_auroc_equals_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(3)
    label = rng.random(200) < 0.3
    score = rng.integers(0, 8, 200).astype(float)  # many ties

    assert rank_auroc(label, score) == pytest.approx(roc_auc_score(label, score), abs=1e-12)


def test_a_perfect_warning_scores_auroc_1_and_lies_on_the_calibration_diagonal() -> None:
    label = np.array([True, False, True, False, False, True])

    w = score_warning(label, label.astype(float), label.astype(float), label,
                      np.array(list("abcdef")), "perfect", n_boot=100)
    cal = calibration_bins(label, label.astype(float), n_bins=10)

    assert w.auroc == 1.0
    assert w.auroc_ci95 == (1.0, 1.0)
    assert (w.accuracy, w.brier) == (1.0, 0.0)
    used = np.array(cal.count) > 0
    np.testing.assert_allclose(np.array(cal.mean_predicted)[used], np.array(cal.observed)[used])
    assert cal.count == (3, 0, 0, 0, 0, 0, 0, 0, 0, 3)


def test_calibration_bins_count_and_average_each_bin() -> None:
    cal = calibration_bins(np.array([0, 1, 1, 0]), np.array([0.05, 0.15, 0.95, 1.0]), n_bins=2)

    assert cal.count == (2, 2)
    np.testing.assert_allclose(cal.mean_predicted, [0.1, 0.975])
    np.testing.assert_allclose(cal.observed, [0.5, 0.5])


def test_false_alarms_per_patient_hour_on_a_hand_made_monitoring_series() -> None:
    # two patients, four cut points each, a cut point every 30 minutes: 4 monitored hours
    patients = np.array(["a"] * 4 + ["b"] * 4)
    label = np.array([0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    alarm = np.array([1, 0, 1, 0, 1, 1, 0, 0], dtype=bool)

    w = score_warning(label, alarm.astype(float), alarm.astype(float), alarm, patients,
                      "alarm", n_boot=20, every_min=30)

    assert w.monitored_h == 4.0
    assert w.n_false_alarms == 3
    assert w.false_alarms_per_patient_hour == pytest.approx(0.75)


def test_choose_threshold_takes_the_most_correct_answers_or_youden_between_two_values() -> None:
    label = np.array([False, False, False, True, False, True, True])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9])

    # alarm at >= 0.4: 6/7 correct, sensitivity 1, specificity 3/4 (J 0.75); at >= 0.7: 6/7
    # correct too, sensitivity 2/3, specificity 1 (J 0.67): accuracy ties go toward 0.5
    assert choose_threshold(label, p) == pytest.approx(0.6)
    assert choose_threshold(label, p, "youden") == pytest.approx(0.35)


def test_choose_threshold_refuses_cases_of_one_class_naming_the_counts() -> None:
    with pytest.raises(ValueError, match="got 0 with and 3 without"):
        choose_threshold(np.zeros(3, dtype=bool), np.array([0.1, 0.2, 0.3]))


def test_map_alone_alarms_at_low_pressure_and_its_probability_falls_as_pressure_rises() -> None:
    m = np.array([55.0, 58.0, 62.0, 70.0, 75.0, 85.0, 90.0, 100.0])
    label = m < 65.0

    fit = fit_map_alone(label, m, np.array(list("abcdefgh")))

    assert 62.0 < fit.threshold_mmhg < 70.0
    assert fit.alarm(np.array([60.0, 80.0])).tolist() == [True, False]
    assert fit.alarm(np.array([fit.threshold_mmhg - 0.01])).tolist() == [True]
    assert fit.alarm_rule.startswith("mean of the last 5 min <= ")
    p = fit.probability(np.array([50.0, 80.0, 110.0]))
    assert p[0] > p[1] > p[2]


# --- the entry point --------------------------------------------------------------------------


def test_map_alone_is_fitted_on_training_records_only() -> None:
    train, held_out = _cohort(10, seed=1), _cohort(6, seed=2)
    changed = list(held_out)
    changed[1] = dataclasses.replace(changed[1], minutes=np.full(420, 62.0))  # a very odd case
    moved = list(train)
    moved[0] = dataclasses.replace(moved[0], minutes=moved[0].minutes - 12.0)

    a = evaluate_events(held_out, numpy_forecaster, 0.5, train, 120, settings=FAST)
    b = evaluate_events(changed, numpy_forecaster, 0.5, train, 120, settings=FAST)
    c = evaluate_events(held_out, numpy_forecaster, 0.5, moved, 120, settings=FAST)

    assert a.map_alone == b.map_alone
    assert b.scored["t0"].map_mmhg[1] == 62.0  # the changed case was scored
    assert a.scored["t0"].map_mmhg[1] != 62.0
    assert c.map_alone != a.map_alone  # a training record does move it


def test_map_alone_is_fitted_on_labelled_t0_cases_by_accuracy_as_the_model_threshold_is() -> None:
    train = _cohort(10, seed=12)
    unlabelled = [dataclasses.replace(r, label=None) for r in train]

    with_labels = evaluate_events(_cohort(4, seed=13), numpy_forecaster, 0.5, train, 120,
                                  settings=FAST).map_alone
    without = evaluate_events(_cohort(4, seed=13), numpy_forecaster, 0.5, unlabelled, 120,
                              settings=FAST).map_alone
    chosen = evaluate_events(_cohort(4, seed=13), numpy_forecaster, 0.5, train, 120,
                             settings=dataclasses.replace(FAST, map_alone_cases=("monitoring",),
                                                          map_alone_criterion="youden"))

    assert (with_labels.fitted_on, with_labels.criterion, with_labels.n_train_cases) == (
        ("t0",), "accuracy", 10)
    assert (without.fitted_on, without.criterion) == (("t0", "early", "monitoring"), "youden")
    assert without.n_train_cases > 10 * 8  # T0, 3 early and 9 monitoring cuts, once each
    assert (chosen.map_alone.fitted_on, chosen.map_alone.criterion) == (("monitoring",),
                                                                        "youden")


def test_event_settings_refuse_an_unknown_kind_of_case_naming_it() -> None:
    with pytest.raises(ValueError, match=r"map_alone_cases must be .* got \['t1'\]"):
        EventSettings(map_alone_cases=("t1",))


def test_evaluate_events_scores_a_numpy_forecaster_against_the_baselines_on_the_same_cases(
) -> None:
    result = evaluate_events(_cohort(8, seed=4), numpy_forecaster, 0.5, _cohort(10, seed=5),
                             120, settings=FAST, model_version="3")

    trends = result.trends
    assert set(trends.baselines) == {"last_value", "mean_last_5_min", "ridge_ar"}
    assert trends.model.mae == pytest.approx(trends.baselines["last_value"].mae)
    assert len(trends.model.mae_per_step) == 60
    assert trends.n_windows == 24  # 8 records, 3 early cut points each
    t0 = result.warnings["t0"]
    assert set(t0) == {"model", "map_alone"}
    assert t0["model"].n_cases == t0["map_alone"].n_cases == 8
    assert result.warnings["monitoring"]["model"].false_alarms_per_patient_hour is not None
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert d["trends"]["forecasters"]["model"]["mae_mmhg_by_minute_ahead"][0] >= 0.0
    assert d["warnings"]["t0"]["model"]["correct"].endswith("/8 correct")
    assert d["map_alone"]["alarm_threshold_mmhg"] == result.map_alone.threshold_mmhg


def test_a_forecaster_without_a_probability_is_judged_on_trends_and_map_alone_only() -> None:
    def trend_only(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"forecast": numpy_forecaster(x)["forecast"]}

    result = evaluate_events(_cohort(4, seed=6), trend_only, 0.5, _cohort(6, seed=7), 120,
                             settings=FAST)

    assert set(result.warnings["t0"]) == {"map_alone"}
    assert result.trends is not None


def test_a_forecast_of_the_wrong_shape_is_refused_naming_the_shape() -> None:
    def short(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"forecast": np.zeros((len(x), 30, 1))}

    with pytest.raises(ValueError, match=r"'forecast' must be \(4, 60, 1\) .* got \(4, 30, 1\)"):
        evaluate_events(_cohort(4, seed=8), short, 0.5, _cohort(6, seed=9), 120, settings=FAST)


def test_a_threshold_outside_0_1_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="threshold must be a probability in \\[0, 1\\], got 1.5"):
        evaluate_events(_cohort(2, seed=8), numpy_forecaster, 1.5, _cohort(4, seed=9), 120)


def test_the_event_report_writes_json_markdown_the_cases_and_non_empty_pictures(
        tmp_path: Path) -> None:
    result = evaluate_events(_cohort(6, seed=10), numpy_forecaster, 0.5, _cohort(8, seed=11),
                             120, settings=FAST, model_version="2")

    written = write_event_report(result, tmp_path / "events")

    pngs = sorted(n for n in written if n.endswith(".png"))
    assert pngs == ["calibration_early.png", "calibration_monitoring.png", "calibration_t0.png",
                    "fan_t0_ahe.png", "fan_t0_no_ahe.png", "roc_early.png",
                    "roc_monitoring.png", "roc_t0.png", "trend_error.png"]
    for name in pngs:
        assert Path(written[name]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(written[name]).stat().st_size > 10_000
    md = Path(written["events.md"]).read_text()
    assert "MAP alone" in md and "/6 (" in md and "false alarms per patient-hour" in md
    table = pd.read_csv(written["event_cases.csv"])
    assert set(table["kind"]) == {"t0", "early", "monitoring"}
    assert json.loads(Path(written["events.json"]).read_text())["model_version"] == "2"


# --- records from a dataset -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _LabelledDataset(Dataset):
    """A dataset with the `labels` table that `Dataset.labels` carries (labels.csv)."""

    labels: pd.DataFrame | None = None


def _write_dataset(root: Path, signals: dict[str, np.ndarray]) -> Dataset:
    (root / "signals").mkdir(parents=True)
    rows = []
    for rid, minutes in signals.items():
        np.save(root / "signals" / f"{rid}.npy", minutes.astype(np.float32)[:, None])
        rows.append({"record_id": rid, "patient_id": rid, "source_path": f"raw/{rid}.hea",
                     "channels": "ABPMEAN", "units": "mmHg", "fs": 1 / 60,
                     "n_samples": len(minutes), "start_time": None, "sha256": "", "split": "test",
                     "quality": "", "nan_fraction": 0.0})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    (root / "dataset.json").write_text(json.dumps(
        {"channels": ["ABPMEAN"], "units": ["mmHg"], "fs": 1 / 60}))
    return load_dataset(root)


def test_read_map_records_takes_t0_and_the_group_label_from_the_dataset_labels(
        tmp_path: Path) -> None:
    plain = _write_dataset(tmp_path / "ds", {"th101n": _flat(660), "x1": _flat(300, 70.0)})
    labels = pd.DataFrame({"record": ["th101n"], "group": ["H1"],
                           "ahe_in_forecast_window": [1], "t0_sample": [600]})
    fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(Dataset)}
    fields["labels"] = labels
    ds = _LabelledDataset(**fields)

    records = {r.record_id: r for r in read_map_records(ds, split="test")}

    assert (records["th101n"].t0, records["th101n"].label, records["th101n"].group) == (
        600, True, "H1")
    assert (records["x1"].t0, records["x1"].label) == (240, None)  # last hour, by the rule
    assert records["x1"].minutes[0] == pytest.approx(70.0)
    assert [r.record_id for r in read_map_records(plain)] == ["th101n", "x1"]
    assert read_map_records(plain, split="train") == []


def test_read_map_records_refuses_a_dataset_not_sampled_once_a_minute(tmp_path: Path) -> None:
    ds = _write_dataset(tmp_path / "ds", {"a": _flat(10)})
    fast = dataclasses.replace(ds, fs=125.0)

    with pytest.raises(ValueError, match="one value a minute .* has fs 125 Hz"):
        read_map_records(fast)


def test_map_records_refuse_a_t0_outside_the_record_naming_it() -> None:
    with pytest.raises(ValueError, match=r"t0 of record 'a' must be in \[0, 10\], got 11"):
        MapRecord("a", np.zeros(10), t0=11)


def test_no_records_make_an_empty_set_of_cases() -> None:
    cases = build_t0_cases([], 120)

    assert (cases.n, cases.x.shape, cases.left_out) == (0, (0, 120), {})
