"""bench/train.py runs end to end at a tiny size and ends with its one-line JSON summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train.py"
KEYS = {"pulsecast_windows_per_s", "keras_numpy_windows_per_s", "torch_windows_per_s",
        "ratio_vs_best_peer", "device", "backend"}


@pytest.mark.slow
def test_training_bench_ends_with_a_json_line_holding_every_figure():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--windows", "512", "--epochs", "2"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert KEYS <= set(summary)
    assert summary["pulsecast_windows_per_s"] > 0
    assert summary["keras_numpy_windows_per_s"] > 0
    assert summary["windows"] == 512


THREADS = BENCH.with_name("train_threads.py")


@pytest.mark.slow
def test_thread_bench_runs_each_variant_in_its_own_process_and_ends_with_ratios():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(THREADS), "--windows", "512", "--epochs", "1",
         "--only", "intra1_inter2"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["windows_per_s"]) == {"default", "intra1_inter2"}  # default added
    assert all(v > 0 for v in summary["windows_per_s"].values())
    assert summary["ratio_vs_default"]["default"] == 1.0


def test_thread_bench_names_an_unknown_variant():
    done = subprocess.run([sys.executable, str(THREADS), "--only", "intra9"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "intra9" in done.stderr and "intra1_inter2" in done.stderr
