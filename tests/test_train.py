"""The batch training pipeline end to end on a small synthetic cohort, and its refusals.

The cohort (12 patients, 2 minutes each) is written once per module as real WFDB files; patient
ids p000009 (test) and p000012 (val) land in held-out splits by the stable hash.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from recipes import tiny_recipe

from pipelines.cli import main
from pipelines.config import ConfigError, parse_recipe
from pipelines.training.fit import TrainingError
from pipelines.training.train import train


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from pipelines.sources.synth import SynthConfig, write_cohort

    raw = tmp_path_factory.mktemp("cohort") / "raw"
    write_cohort(SynthConfig(out=raw, patients=12, minutes=2, seed=0))
    return raw


def write_recipe(tmp_path: Path, raw: Path, **replace: str) -> Path:
    text = tiny_recipe(raw, tmp_path / "ds")
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_train_ingests_fits_evaluates_and_publishes_a_verified_version(tmp_path, cohort, capsys):
    recipe = write_recipe(tmp_path, cohort)
    store = tmp_path / "store"
    code = main(["train", "--config", str(recipe), "--model-store", str(store),
                 "--out", str(tmp_path / "run"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)  # --json: one document, nothing else
    assert summary["version"] == 1 and summary["figure_units"]["mae"] == "mV"
    version = store / "tiny" / "1"
    meta = json.loads((version / "assets.extra" / "pulsecast.json").read_text())
    assert meta["channels"] == ["II", "ABP"] and meta["targets"] == ["II"]
    assert meta["input_steps"] == 128 and meta["horizon"] == 16 and meta["fs"] == 125
    assert meta["metrics"]["n_patients"] >= 1
    assert set(meta["metrics"]["baselines"]) >= {"persistence", "last_cycle", "ridge_ar"}
    assert (version / "saved_model.pb").exists()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    for name in ("history.csv", "checkpoints/last.keras", "evaluation/evaluation.json"):
        assert (tmp_path / "run" / name).exists(), name

    # a second training run publishes the next version, never overwriting the first
    assert main(["train", "--config", str(recipe), "--model-store", str(store),
                 "--run-dir", str(tmp_path / "run2"), "--epochs", "1"]) == 0
    assert sorted(p.name for p in (store / "tiny").iterdir()) == ["1", "2"]

    # evaluate the published version through its serving signature
    capsys.readouterr()
    assert main(["evaluate", "--model-name", "tiny", "--version", "1", "--model-store",
                 str(store), "--dataset", str(tmp_path / "ds"), "--json",
                 "--out", str(tmp_path / "eval")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"]["mae"] == pytest.approx(meta["metrics"]["model"]["mae"], rel=1e-4)
    assert {"skill_mae_vs_best_baseline", "n_windows", "n_patients"} <= set(result)

    assert main(["models", "--model-store", str(store), "--model-name", "tiny"]) == 0
    table = capsys.readouterr().out
    assert "1" in table and "2" in table


def test_an_unknown_config_key_stops_before_any_work(tmp_path, cohort):
    path = write_recipe(tmp_path, cohort, **{"epochs = 2": "epochs = 2\nepoch_count = 3"})
    assert main(["train", "--config", str(path), "--model-store", str(tmp_path / "s")]) == 1
    assert not (tmp_path / "ds").exists()


def test_a_horizon_longer_than_every_record_is_refused_with_the_split(tmp_path, cohort):
    from pipelines.config import load_recipe

    path = write_recipe(tmp_path, cohort, **{"horizon = 16": "horizon = 20000"})
    with pytest.raises(ValueError, match="no windows in split 'train'"):
        train(load_recipe(path), model_store=tmp_path / "s", run_dir=tmp_path / "run")
    assert not (tmp_path / "s").exists()


def test_too_few_windows_for_one_batch_names_both_numbers(tmp_path, cohort):
    from pipelines.config import load_recipe

    path = write_recipe(tmp_path, cohort, **{"batch_size = 64": "batch_size = 100000"})
    with pytest.raises(TrainingError, match=r"too few training windows for one batch: \d+ "
                                            r"windows < batch_size 100000"):
        train(load_recipe(path), model_store=tmp_path / "s", run_dir=tmp_path / "run")


def _first_patients(cohort: Path, n: int, raw: Path) -> Path:
    raw.mkdir()
    for p in sorted(p for p in cohort.iterdir() if p.is_dir())[:n]:
        shutil.copytree(p, raw / p.name)
    return raw


def test_a_two_patient_cohort_is_refused_before_any_run_folder_or_fit(tmp_path, cohort, caplog):
    from pipelines.config import load_recipe

    path = write_recipe(tmp_path, _first_patients(cohort, 2, tmp_path / "raw2"))
    with pytest.raises(TrainingError) as err:
        train(load_recipe(path), model_store=tmp_path / "s", run_dir=tmp_path / "run")
    assert str(err.value) == (
        f"dataset {tmp_path / 'ds'} needs at least one patient in each of train/val/test, got "
        "train=2 val=0 test=0 (2 patients): ingest more patients (>= 3; with no patient ids in "
        "the records, each record counts as its own patient)")
    assert not (tmp_path / "run").exists() and not (tmp_path / "s").exists()
    assert main(["train", "--config", str(path), "--model-store", str(tmp_path / "s"),
                 "--run-dir", str(tmp_path / "run")]) == 1
    assert "got train=2 val=0 test=0 (2 patients)" in caplog.text
    assert not (tmp_path / "run").exists()


def test_eight_patients_the_hash_puts_all_in_train_now_fill_every_split(tmp_path, cohort):
    from pipelines.config import load_recipe
    from pipelines.training.train import check_dataset_splits, ensure_dataset, window_spec

    recipe = load_recipe(write_recipe(tmp_path, _first_patients(cohort, 8, tmp_path / "raw8")))
    dataset = ensure_dataset(recipe)
    train_b, val_b, n_test = check_dataset_splits(dataset, window_spec(recipe), recipe)
    assert {s: len(dataset.patients(s)) for s in ("train", "val", "test")} == {
        "train": 6, "val": 1, "test": 1}
    assert train_b.n_windows > 0 and val_b.n_windows > 0 and n_test > 0


def test_a_test_split_without_windows_is_refused_before_any_run_folder(tmp_path, cohort):
    import numpy as np

    from pipelines.config import load_recipe
    from pipelines.dataset.contract import load_dataset
    from pipelines.training.train import ensure_dataset

    recipe = load_recipe(write_recipe(tmp_path, _first_patients(cohort, 3, tmp_path / "raw3")))
    dataset = ensure_dataset(recipe)
    for rid in dataset.records("test"):  # the test patient's signals become one long gap
        signal = np.load(dataset.signal_path(rid))
        np.save(dataset.signal_path(rid), np.full_like(signal, np.nan))
    assert load_dataset(tmp_path / "ds").records("test")
    with pytest.raises(TrainingError, match=r"has no windows in split 'test': got windows "
                                            r"train=\d+ val=\d+ test=0 from patients train=1 "
                                            r"val=1 test=1"):
        train(recipe, model_store=tmp_path / "s", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_truncated_bptt_refuses_an_arch_with_no_stateful_twin_before_any_work():
    raw = {"name": "x", "data": {"channels": ["II"]}, "model": {"arch": "seq2seq"},
           "window": {"inputs": ["II"], "targets": ["II"]}, "train": {"tbptt_steps": 50}}
    recipe = parse_recipe(raw)
    with pytest.raises(TrainingError, match="tbptt_steps = 50: arch 'seq2seq'"):
        train(recipe)


def test_the_mask_gap_policy_is_refused_before_any_work_naming_what_works(tmp_path):
    raw = {"name": "x", "data": {"channels": ["II"], "dataset": str(tmp_path / "ds")},
           "window": {"inputs": ["II"], "targets": ["II"], "gap_policy": "mask"}}
    with pytest.raises(TrainingError, match="gap_policy = 'mask' is not supported.*fill_gap_s"):
        train(parse_recipe(raw), run_dir=tmp_path / "run", model_store=tmp_path / "s")
    assert not (tmp_path / "ds").exists() and not (tmp_path / "run").exists()


def test_a_quantile_loss_without_quantiles_in_the_model_is_a_config_error():
    raw = {"name": "x", "data": {"channels": ["II"]},
           "window": {"inputs": ["II"], "targets": ["II"]}, "train": {"loss": "quantile"}}
    with pytest.raises(ConfigError, match="quantiles"):
        parse_recipe(raw)
