"""bench/accuracy.py: its table rows, the `--cohort` mode, and a run without ../shared."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from recipes import tiny_recipe

BENCH = Path(__file__).resolve().parents[1] / "bench" / "accuracy.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluation(**extra) -> dict:
    return {"best_baseline": "last_cycle", "n_patients": 3, "n_windows": 90,
            "model": {"mae": 0.5}, "skill_mae_vs_best_baseline": 0.5, "skill_ci95": [0.4, 0.6],
            "baselines": {"last_cycle": {"mae": 1.0}, "cycle_median": {"mae": 0.6}}, **extra}


def test_a_row_has_the_cycle_median_figures_and_counts_the_records_the_model_wins():
    bench = _bench()
    records = [{"skill": 0.3}, {"skill": -0.1}, {"skill": None}]

    row = bench.skill_row("cohort test records", _evaluation(
        records=records, n_records=3, skill_vs_cycle_median=1 / 6,
        skill_vs_cycle_median_ci95=[0.1, 0.2]))
    old = bench.skill_row("synthetic test patients", _evaluation())  # an evaluation before them

    assert row["cycle_median_mae"] == 0.6 and row["skill_vs_cycle_median"] == 1 / 6
    assert row["skill_vs_cycle_median_ci95"] == [0.1, 0.2]
    assert (row["records_beating_best"], row["n_records"]) == (1, 3)
    assert old["skill_vs_cycle_median"] is None and old["n_records"] == 0
    bench.print_table([{"recipe": "ecg", "rows": [row, old]}])  # None prints as "-"


def test_a_cohort_dataset_without_the_recipes_channel_is_refused_naming_both(tmp_path):
    bench = _bench()
    (tmp_path / "dataset.json").write_text(json.dumps({"channels": ["II"], "fs": 125.0}))

    with pytest.raises(SystemExit, match=r"is a dataset of \['II'\] at 125.0 Hz; recipe abp "
                                         r"needs ABP at 125 Hz"):
        bench.cohort_dataset("abp", tmp_path / "work", tmp_path)
    assert bench.cohort_dataset("ecg", tmp_path / "work", tmp_path) == tmp_path


@pytest.mark.slow
def test_the_bench_trains_on_a_cohort_folder_and_runs_without_shared_records(tmp_path):
    from pipelines.sources.synth import SynthConfig, write_cohort

    raw = tmp_path / "cohort"
    write_cohort(SynthConfig(out=raw, patients=12, minutes=1, seed=0))
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "ecg.toml").write_text(tiny_recipe("unused", "unused", name="ecg",
                                                  channels=("II",), units=4, epochs=1,
                                                  ridge_lags=16, max_windows=200, n_boot=20))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--work", str(tmp_path / "work"), "--recipes", "ecg",
         "--config-dir", str(configs), "--cohort", str(raw), "--physionet",
         str(tmp_path / "no_shared")],
        capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads(done.stdout.strip().splitlines()[-1])
    (result,) = summary["results"]
    assert summary["cohort"] == str(raw.resolve())
    assert [r["where"] for r in result["rows"]] == ["cohort test records"]
    assert result["rows"][0]["cycle_median_mae"] > 0
    assert "is absent" in result["note"]
    assert "cyc.med" in done.stdout
