"""Scoring a published version on records it never saw: the ridge_ar baseline never saw them either.

Two small synthetic cohorts (different seeds, so different patients) are ingested: `trained_on`
plays the version's training dataset, `unseen` the records it is scored on with `--split all`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from recipes import tiny_recipe

from pipelines.config import EvalConfig
from pipelines.dataset.contract import load_dataset
from pipelines.evaluation.evaluate import (
    fit_baselines,
    load_eval_windows,
    ridge_from_metadata,
    ridge_to_metadata,
)
from pipelines.evaluation.evaluate_version import version_ridge
from pipelines.windows.spec import WindowSpec

SPEC = WindowSpec(input_steps=128, horizon=16, stride=32, inputs=("II",), targets=("II",))
CFG = EvalConfig(ridge_lags=16, max_windows=400, n_boot=20)


def _cohort(root: Path, seed: int, patients: int) -> Path:
    from pipelines.ingest.cohort import ingest
    from pipelines.ingest.config import IngestConfig
    from pipelines.sources.synth import SynthConfig, write_cohort

    raw = root / f"raw{seed}"
    write_cohort(SynthConfig(out=raw, patients=patients, minutes=1, seed=seed))
    ds = root / f"ds{seed}"
    ingest(IngestConfig(raw_dir=raw, dataset_dir=ds, channels=("II",), fs=125.0))
    return ds


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate_version")
    # seed 0 with 12 patients puts p000009 in the test split (as in test_train)
    return _cohort(root, 0, 12), _cohort(root, 1, 6)


def _predictions(ridge, ds: Path) -> np.ndarray:
    windows = load_eval_windows(load_dataset(ds), SPEC, "all", CFG.max_windows)
    return ridge.predict(windows.x)


def test_stored_ridge_coefficients_round_trip_through_json(datasets):
    trained_on, _ = datasets
    ridge = fit_baselines(load_dataset(trained_on), SPEC, CFG)
    back = ridge_from_metadata(json.loads(json.dumps(ridge_to_metadata(ridge))))
    assert back.target_idx == ridge.target_idx and back.horizon == 16 and back.n_lags == 16
    np.testing.assert_allclose(_predictions(back, trained_on), _predictions(ridge, trained_on),
                               rtol=1e-4, atol=1e-4)


def test_malformed_stored_coefficients_are_refused_with_their_shape():
    bad = {"target_idx": [0], "n_lags": 4, "horizon": 2, "coef": [[0.0] * 3] * 2,
           "intercept": [0.0, 0.0]}
    with pytest.raises(ValueError, match=r"coef \(2, 3\) .* expected \(2, 4\)"):
        ridge_from_metadata(bad)


def test_a_version_with_stored_coefficients_uses_them_whatever_the_scored_dataset(datasets):
    trained_on, unseen = datasets
    ridge = fit_baselines(load_dataset(trained_on), SPEC, CFG)
    meta = {"dataset": "/nowhere/gone", "ridge_ar": ridge_to_metadata(ridge)}
    got = version_ridge(meta, SPEC, CFG, unseen)
    np.testing.assert_allclose(got.coef, ridge.coef, rtol=1e-6, atol=1e-6)


def test_without_stored_coefficients_ridge_is_refitted_on_the_training_dataset(datasets):
    trained_on, unseen = datasets
    got = version_ridge({"dataset": str(trained_on)}, SPEC, CFG, unseen)
    expected = fit_baselines(load_dataset(trained_on), SPEC, CFG)
    in_sample = fit_baselines(load_dataset(unseen), SPEC, CFG)
    np.testing.assert_allclose(got.coef, expected.coef)
    assert not np.allclose(got.coef, in_sample.coef)


def test_scoring_on_the_training_dataset_itself_keeps_the_usual_fit(datasets):
    trained_on, _ = datasets
    assert version_ridge({"dataset": str(trained_on)}, SPEC, CFG, trained_on) is None


def test_a_training_dataset_gone_from_disk_falls_back_with_a_warning(datasets, tmp_path, caplog):
    trained_on, unseen = datasets
    gone = tmp_path / "moved"
    shutil.copytree(trained_on, gone)
    shutil.rmtree(gone)
    with caplog.at_level(logging.WARNING, logger="pipelines.evaluation.evaluate_version"):
        assert version_ridge({"dataset": str(gone)}, SPEC, CFG, unseen) is None
    assert "not on disk" in caplog.text and str(gone) in caplog.text




@pytest.mark.slow
def test_evaluate_on_unseen_records_scores_ridge_fitted_at_publish_time(datasets, tmp_path,
                                                                        capsys):
    from pipelines.cli import main

    trained_on, unseen = datasets
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe("unused", trained_on, channels=("II",), units=4, epochs=1,
                                  ridge_lags=16, max_windows=400, n_boot=20))
    store = tmp_path / "store"
    assert main(["train", "--config", str(recipe), "--model-store", str(store),
                 "--run-dir", str(tmp_path / "run")]) == 0
    meta = json.loads((store / "tiny" / "1" / "assets.extra" / "pulsecast.json").read_text())
    stored = ridge_from_metadata(meta["ridge_ar"])
    assert stored.horizon == 16 and stored.n_lags == 16

    capsys.readouterr()
    assert main(["evaluate", "--model-name", "tiny", "--model-store", str(store), "--dataset",
                 str(unseen), "--split", "all", "--json", "--out", str(tmp_path / "ev")]) == 0
    result = json.loads(capsys.readouterr().out)
    windows = load_eval_windows(load_dataset(unseen), SPEC, "all", CFG.max_windows)
    mae = float(np.mean(np.abs(stored.predict(windows.x) - windows.y)))
    assert result["baselines"]["ridge_ar"]["mae"] == pytest.approx(mae, rel=1e-3)
    assert {"model", "baselines", "best_baseline", "skill_mae_vs_best_baseline", "skill_ci95",
            "n_windows", "n_patients", "version", "split"} <= set(result)

    # The recipe keeps every window (no max_still_fraction); --max-still-fraction overrides it.
    cal = _calibrated(unseen, tmp_path / "cal", 1)
    counts = {}
    for rule in ((), ("--max-still-fraction", "0.5")):
        assert main(["evaluate", "--model-name", "tiny", "--model-store", str(store),
                     "--dataset", str(cal), "--split", "all", "--json", *rule,
                     "--out", str(tmp_path / f"ev{len(rule)}")]) == 0
        out = json.loads(capsys.readouterr().out)
        counts[rule] = (out["n_patients"], out["n_windows_excluded"])
    (patients_all, none_out), (patients_kept, left_out) = counts.values()
    assert none_out == 0 and left_out > 0
    assert patients_kept == patients_all - 1  # the calibrated record's patient is gone
    assert main(["evaluate", "--model-name", "tiny", "--model-store", str(store), "--dataset",
                 str(cal), "--max-still-fraction", "2", "--out", str(tmp_path / "bad")]) != 0
    assert not (tmp_path / "bad").exists()  # refused before any report was written


def _calibrated(unseen: Path, out: Path, n_records: int | None) -> Path:
    """A copy of `unseen` whose first `n_records` records (all: None) hold a calibration square
    wave (two levels, four samples each) instead of their signal."""
    shutil.copytree(unseen, out)
    ds = load_dataset(out)
    ids = list(ds.manifest["record_id"])[:n_records]
    for rid in ids:
        path = out / "signals" / f"{rid}.npy"
        sig = np.load(path)
        square = np.where((np.arange(len(sig)) // 4) % 2 == 0, 1.0, -1.0).astype(sig.dtype)
        sig[:] = square[:, None]
        np.save(path, sig)
    return out


def test_flat_or_stepped_windows_are_left_out_and_counted(datasets, tmp_path):
    from pipelines.evaluation.evaluate import evaluate_forecaster
    from pipelines.evaluation.report import render_markdown

    _, unseen = datasets
    ds = load_dataset(_calibrated(unseen, tmp_path / "cal", 1))
    square_patient = ds.manifest["patient_id"].iloc[0]
    moving = dataclasses.replace(SPEC, max_still_fraction=0.5)
    every = load_eval_windows(ds, SPEC, "all", 10**6)  # no subsampling: the counts add up
    kept = load_eval_windows(ds, moving, "all", 10**6)
    assert every.n_excluded == 0 and kept.n_excluded > 0
    assert len(kept.x) + kept.n_excluded == len(every.x)
    assert square_patient in set(every.patient_ids)
    assert square_patient not in set(kept.patient_ids)

    def persistence(x):
        return {"forecast": np.repeat(x[:, -1:, :], SPEC.horizon, axis=1)}

    result, _ = evaluate_forecaster(persistence, ds, moving, CFG, split="all")
    assert result.n_windows == min(len(kept.x), CFG.max_windows)
    assert result.n_patients == len(set(every.patient_ids)) - 1
    assert result.to_dict()["n_windows_excluded"] == kept.n_excluded
    assert result.to_dict()["max_still_fraction"] == 0.5
    assert f"{kept.n_excluded} more left out as flat or stepped" in render_markdown(result)


def test_a_split_with_only_flat_or_stepped_windows_says_so(datasets, tmp_path):
    from pipelines.windows.spec import NoWindowsError

    _, unseen = datasets
    ds = load_dataset(_calibrated(unseen, tmp_path / "cal", None))
    moving = dataclasses.replace(SPEC, max_still_fraction=0.5)
    with pytest.raises(NoWindowsError, match=r"holds still on more than max_still_fraction=0.5"):
        load_eval_windows(ds, moving, "all", CFG.max_windows)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_max_still_fraction_outside_zero_one_is_refused_by_name(bad):
    from pipelines.config import ConfigError, WindowConfig

    with pytest.raises(ConfigError, match=rf"max_still_fraction must be in \(0, 1\], got {bad}"):
        WindowConfig(max_still_fraction=bad)
    with pytest.raises(ValueError, match=rf"must be a number in \(0, 1\], got {bad}"):
        dataclasses.replace(SPEC, max_still_fraction=bad)


@pytest.mark.slow
def test_evaluate_prints_what_it_left_out_and_scores_records_groups_and_cycle_median(
        datasets, tmp_path, capsys):
    from pipelines.cli import main

    trained_on, unseen = datasets
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe("unused", trained_on, channels=("II",), units=4, epochs=1,
                                  ridge_lags=16, max_windows=100, n_boot=20))
    store = tmp_path / "store"
    assert main(["train", "--config", str(recipe), "--model-store", str(store),
                 "--run-dir", str(tmp_path / "run")]) == 0
    trained = json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())
    assert "cycle_median" in trained["baselines"] and trained["records"]
    assert (tmp_path / "run" / "evaluation" / "records.png").exists()

    ds = load_dataset(unseen)
    names = [Path(p).name for p in ds.manifest["source_path"]]
    groups = tmp_path / "ALARMS"
    groups.write_text("".join(f"{n},{'Asystole' if k % 2 else 'Tachycardia'},{k % 2}\n"
                              for k, n in enumerate(names)))
    capsys.readouterr()
    assert main(["evaluate", "--model-name", "tiny", "--model-store", str(store), "--dataset",
                 str(unseen), "--split", "all", "--json", "--groups", str(groups),
                 "--out", str(tmp_path / "ev")]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # --json: the document alone; the account on stderr
    lines = captured.err.strip().splitlines()

    left = result["left_out"]
    assert (f"windows of split 'all': {left['n_windows_fit']} fit in {len(names)} records, 100 "
            "scored; left out:") in lines
    assert any(line.startswith("  subsampled evenly to max_windows=100: ") for line in lines)
    assert left["n_windows_fit"] == left["gaps"] + left["still"] + left["subsampled"] + 100
    assert result["baselines"]["cycle_median"]["mae"] > 0
    assert result["best_baseline"] in ("persistence", "last_cycle", "ridge_ar")
    lo, hi = result["skill_vs_cycle_median_ci95"]
    assert lo <= result["skill_vs_cycle_median"] <= hi
    assert result["n_records"] == len(result["records"]) == len(names)
    assert set(result["groups"]) == {"alarm", "alarm_label"}
    assert set(result["groups"]["alarm_label"]) == {"true", "false"}
    assert result["groups_source"] == str(groups)
    for name in ("evaluation.json", "evaluation.md", "records.png", "forecast_examples.png"):
        assert (tmp_path / "ev" / name).exists(), name

    bad = tmp_path / "bad_groups"
    bad.write_text("a,Asystole,maybe\n")
    assert main(["evaluate", "--model-name", "tiny", "--model-store", str(store), "--dataset",
                 str(unseen), "--groups", str(bad), "--out", str(tmp_path / "bad")]) != 0
    assert not (tmp_path / "bad").exists()  # refused before anything was scored
