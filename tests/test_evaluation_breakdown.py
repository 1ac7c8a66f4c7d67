"""Evaluation a researcher can check: per-group labels, and every left-out window accounted for.

One small synthetic cohort (6 patients, 1 minute each) is ingested once; tests copy its dataset
and damage the copies (a gap, a record cut short, a calibration square wave) to see each reason
counted.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import EvalConfig
from pipelines.dataset.contract import load_dataset
from pipelines.evaluation.evaluate import evaluate_forecaster, load_eval_windows
from pipelines.evaluation.groups import parse_group_lines, read_dataset_groups
from pipelines.evaluation.left_out import describe_left_out
from pipelines.windows.spec import NoWindowsError, WindowSpec

SPEC = WindowSpec(input_steps=256, horizon=32, stride=16, inputs=("II",), targets=("II",))
CFG = EvalConfig(ridge_lags=16, max_windows=10**6, n_boot=20)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    """(raw folder, dataset folder) of 6 synthetic patients."""
    from pipelines.ingest.cohort import ingest
    from pipelines.ingest.config import IngestConfig
    from pipelines.sources.synth import SynthConfig, write_cohort

    root = tmp_path_factory.mktemp("breakdown")
    raw, ds = root / "raw", root / "ds"
    write_cohort(SynthConfig(out=raw, patients=6, minutes=1, seed=3))
    ingest(IngestConfig(raw_dir=raw, dataset_dir=ds, channels=("II",), fs=125.0))
    return raw, ds


def _persistence(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"forecast": np.repeat(x[:, -1:, :], SPEC.horizon, axis=1)}


def _wfdb_names(ds: Path) -> list[str]:
    return [Path(p).name for p in load_dataset(ds).manifest["source_path"]]


def test_alarms_lines_give_alarm_type_and_truth_groupings() -> None:
    text = "a103l,Asystole,0\nt110s,Tachycardia,1\n\n# a comment\nv115l,Ventricular_Tachycardia,0\n"

    got = parse_group_lines(text)

    assert got == {"alarm": {"a103l": "Asystole", "t110s": "Tachycardia",
                             "v115l": "Ventricular_Tachycardia"},
                   "alarm_label": {"a103l": "false", "t110s": "true", "v115l": "false"}}
    assert parse_group_lines("record,group\nr1,sepsis\nr2,control\n") == {
        "group": {"r1": "sepsis", "r2": "control"}}


@pytest.mark.parametrize(("text", "message"), [
    ("a103l,Asystole,0\nt110s,Tachycardia,yes\n",
     "ALARMS line 2: alarm label must be 1 (true alarm) or 0 (false alarm), got 'yes'"),
    ("a103l,Asystole,0\nt110s,Tachycardia\n",
     "ALARMS line 2: expected 'record,alarm,label' or 'record,group', got 't110s,Tachycardia'"),
])
def test_a_malformed_groups_line_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_group_lines(text, source="ALARMS")


def test_the_alarms_file_of_the_raw_folder_labels_the_records_by_wfdb_name(cohort, tmp_path):
    raw, ds = cohort
    raw_copy = tmp_path / "raw"
    shutil.copytree(raw, raw_copy)
    ds_copy = tmp_path / "ds"
    shutil.copytree(ds, ds_copy)
    names = _wfdb_names(ds)
    (raw_copy / "ALARMS").write_text(f"{names[0]},Asystole,1\n{names[1]},Bradycardia,0\n")
    config = (ds_copy / "dataset.json").read_text().replace(str(raw), str(raw_copy))
    (ds_copy / "dataset.json").write_text(config)
    dataset = load_dataset(ds_copy)
    rid = list(dataset.manifest["record_id"])

    labels, source = read_dataset_groups(dataset)

    assert source == str(raw_copy / "ALARMS")
    assert labels == {"alarm": {rid[0]: "Asystole", rid[1]: "Bradycardia"},
                      "alarm_label": {rid[0]: "true", rid[1]: "false"}}
    result, _ = evaluate_forecaster(_persistence, dataset, SPEC, CFG, split="all")
    d = result.to_dict()
    assert set(d["groups"]["alarm"]) == {"Asystole", "Bradycardia"}
    assert d["groups"]["alarm"]["Asystole"]["n_records"] == 1
    assert d["groups_source"] == source
    assert [r["record_id"] for r in d["records"]] == rid


def test_without_labels_there_are_no_groups(cohort):
    _, ds = cohort
    assert read_dataset_groups(load_dataset(ds)) == ({}, None)


def _damaged(ds: Path, out: Path) -> tuple[Path, list[str]]:
    """A copy of `ds`: record 0 with a 1 s gap, record 1 cut to 200 samples, record 2 a
    calibration square wave (two levels, four samples each)."""
    shutil.copytree(ds, out)
    ids = list(load_dataset(out).manifest["record_id"])
    for k, rid in enumerate(ids[:3]):
        path = out / "signals" / f"{rid}.npy"
        sig = np.load(path)
        if k == 0:
            sig[1000:1125] = np.nan
        elif k == 1:
            sig = sig[:200]
        else:
            sig[:] = np.where((np.arange(len(sig)) // 4) % 2 == 0, 1.0, -1.0)[:, None]
        np.save(path, sig)
    return out, ids


def _gap_windows(signal: np.ndarray) -> int:
    """Windows (span 288, stride 16) holding a NaN, counted one by one."""
    return sum(bool(np.isnan(signal[s : s + 288]).any())
               for s in range(0, len(signal) - 288 + 1, 16))


def test_every_window_that_fits_is_scored_or_left_out_for_one_counted_reason(cohort, tmp_path):
    _, ds = cohort
    out, ids = _damaged(ds, tmp_path / "damaged")
    spec = dataclasses.replace(SPEC, max_still_fraction=0.5)
    dataset = load_dataset(out)

    w = load_eval_windows(dataset, spec, "all", 300, account=True)
    left = w.left_out.to_dict()

    assert left["too_short"] == {"records": 1, "record_ids": [ids[1]]}
    gaps = {rid: _gap_windows(np.asarray(dataset.signal(rid))[:, 0]) for rid in ids}
    assert left["gaps"] == sum(gaps.values())
    assert left["by_record"][ids[0]]["gaps"] == gaps[ids[0]] >= 26  # 26 meet the 1 s gap
    assert left["by_record"][ids[2]]["still"] == left["still"] == w.n_excluded > 0
    assert left["n_scored"] == len(w.x) == 300
    assert left["n_windows_fit"] == left["gaps"] + left["still"] + left["subsampled"] + 300
    lines = describe_left_out(left)
    assert lines[1] == (f"  records too short for one window (288 samples): 1 ({ids[1]})")
    assert lines[2].startswith(f"  windows touching a gap (NaN): {left['gaps']} (")
    assert f"{ids[0]} {gaps[ids[0]]}" in lines[2]  # records named with their count, worst first
    assert lines[4] == f"  subsampled evenly to max_windows=300: {left['subsampled']}"


def test_a_split_without_windows_says_why_each_record_gave_none(cohort, tmp_path):
    _, ds = cohort
    out = tmp_path / "short"
    shutil.copytree(ds, out)
    for path in (out / "signals").glob("*.npy"):
        np.save(path, np.load(path)[:100])

    with pytest.raises(NoWindowsError, match=r"records too short for one window \(288 samples\): "
                                             r"6 \("):
        load_eval_windows(load_dataset(out), SPEC, "all", 100, account=True)
