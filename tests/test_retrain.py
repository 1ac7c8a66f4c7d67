"""`pulsecast retrain` and `pulsecast rollback` end to end on a small synthetic cohort.

Version 1 of model `tiny` is trained once per module (1 epoch) on patients A-F = p000001-4
(train), p000009 (test), p000012 (val); the new records are G-H = p000005 (train) and p000013
(test), so the held-out set grows. Each test works on its own copy of the store and the dataset.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from live_server import LiveServer
from recipes import tiny_recipe

from pipelines.cli import main

pytestmark = pytest.mark.slow

OLD, NEW = (1, 2, 3, 4, 9, 12), (5, 13)
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> SimpleNamespace:
    from pipelines.sources.synth import SynthConfig, write_cohort

    root = tmp_path_factory.mktemp("retrain")
    cohort = root / "cohort"
    write_cohort(SynthConfig(out=cohort, patients=max(OLD + NEW), minutes=2, seed=0))
    for name, ids in (("old", OLD), ("new", NEW)):
        for i in ids:
            shutil.copytree(cohort / f"p{i:06d}", root / name / f"p{i:06d}")
    recipe = root / "tiny.toml"
    recipe.write_text(tiny_recipe(root / "old", root / "ds", epochs=1))
    assert main(["train", "--config", str(recipe), "--model-store", str(root / "store"),
                 "--run-dir", str(root / "run")]) == 0
    return SimpleNamespace(root=root, recipe=recipe)


@pytest.fixture
def world(base, tmp_path, monkeypatch) -> SimpleNamespace:
    """A private copy of the store (version 1) and its dataset; runs/ goes under tmp_path."""
    shutil.copytree(base.root / "store", tmp_path / "store")
    shutil.copytree(base.root / "ds", tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    return SimpleNamespace(store=tmp_path / "store", ds=tmp_path / "ds", new=base.root / "new",
                           root=tmp_path, recipe=base.recipe)


def retrain(world, *extra: str) -> list[str]:
    return ["retrain", "--model-name", "tiny", "--records-dir", str(world.new), "--model-store",
            str(world.store), "--dataset", str(world.ds), "--json", *extra]


def last_json(capsys) -> dict:
    """The one JSON document a `--json` run printed (stdout holds nothing else)."""
    return json.loads(capsys.readouterr().out)


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every entry under the roots' parents that belongs to them (staging folders included)."""
    out = {}
    for root in roots:
        for p in sorted(root.parent.iterdir()):
            if p.name == root.name or p.name.startswith(f".{root.name}."):
                for f in sorted([p, *p.rglob("*")]):
                    out[str(f)] = f.read_bytes() if f.is_file() else b"<dir>"
    return out


def versions(world) -> list[str]:
    return sorted((p.name for p in (world.store / "tiny").iterdir()), key=str)


def test_a_better_challenger_becomes_version_2_and_a_rerun_changes_nothing(world, capsys):
    from pipelines.dataset.contract import load_dataset

    assert main(retrain(world, "--epochs", "4")) == 0
    out = last_json(capsys)
    assert out["status"] == "published" and out["version"] == 2 and out["champion_version"] == 1
    meta = json.loads((world.store / "tiny" / "2" / "assets.extra" / "pulsecast.json").read_text())
    assert meta["parent_version"] == 1
    assert meta["retrain"]["new_patients"] == ["p000005", "p000013"]
    assert meta["retrain"]["warm_start"] is True
    decision = meta["retrain"]["decision"]
    assert decision["promote"] and decision["improvement"] >= 0.02
    assert decision["challenger_mae"] == pytest.approx(meta["metrics"]["model"]["mae"])
    assert decision["n_patients"] == 2  # old test p000009 and new test p000013
    assert (world.store / "tiny" / "2" / "assets.extra" / "model.keras").exists()
    ds = load_dataset(world.ds)
    assert ds.patients("test") == ["p000009", "p000013"] and "p000005" in ds.patients("train")
    run_dir = Path(out["run_dir"])
    assert run_dir.parent == Path("runs") / "tiny" and run_dir.name.startswith("retrain-")
    for name in ("retrain.json", "retrain.md", "drift.json", "drift.md",
                 "evaluation/champion-old_test/evaluation.json"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "retrain.json").read_text())["status"] == "published"

    before = snapshot(world.store, world.ds)
    assert main(retrain(world, "--epochs", "4")) == 0
    out = last_json(capsys)
    assert out["status"] == "nothing_new" and out["version"] is None
    assert snapshot(world.store, world.ds) == before
    assert len(list((world.root / "runs" / "tiny").iterdir())) == 1  # no run, no report

    assert main(["models", "--model-store", str(world.store), "--model-name", "tiny"]) == 0
    table = capsys.readouterr().out.splitlines()
    # version 2 was scored on the grown test set: a block of its own, not ranked beside 1
    assert table[0] == ("tiny: 2 version(s) on 2 test set(s); MAE and skill compare versions "
                        "within one test set only")
    assert table[1].startswith("  test set 1: ") and "of split test of " in table[1]
    assert table[2].split()[-1] == "lineage" and table[3].split()[0] == "1"
    assert table[4].startswith("  test set 2: ") and f"of split test of {world.ds}" in table[4]
    assert table[6].split()[0] == "2" and table[6].split()[-3:] == ["retrain", "of", "1"]


def test_a_worse_challenger_is_rejected_and_nothing_changes(world, capsys):
    bad = world.root / "bad.toml"
    bad.write_text(tiny_recipe("unused", "unused", epochs=1,
                                 train_extra='learning_rate = 50.0\nschedule = "constant"'))
    before = snapshot(world.store, world.ds)
    assert main(retrain(world, "--config", str(bad), "--from-scratch",
                        "--out", "rejected")) == 0
    out = last_json(capsys)
    assert out["status"] == "rejected" and out["version"] is None
    assert out["records_added"] is False and out["new_records"]
    assert snapshot(world.store, world.ds) == before
    report = json.loads((world.root / "rejected" / "retrain.json").read_text())
    assert report["decision"]["promote"] is False and not report["dataset_written"]
    assert any("improvement" in r for r in report["decision"]["reasons"])
    assert (world.root / "rejected" / "retrain.md").read_text().startswith(
        "# Retrain of tiny: rejected")


def test_a_dry_run_publishes_nothing_and_keeps_the_dataset(world, capsys):
    before = snapshot(world.store, world.ds)
    assert main(retrain(world, "--epochs", "4", "--dry-run", "--min-improvement", "0")) == 0
    assert last_json(capsys)["status"] == "would_publish"
    assert snapshot(world.store, world.ds) == before


def test_an_interrupted_retrain_leaves_the_store_and_the_dataset_exactly_as_they_were(
        world, monkeypatch):
    import models.export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models.export, "export_savedmodel", interrupted)
    monkeypatch.setattr(models.export, "export_in_subprocess", interrupted)
    before = snapshot(world.store, world.ds)
    assert main(retrain(world, "--epochs", "2", "--min-improvement", "0")) == 130
    assert snapshot(world.store, world.ds) == before
    assert [p.name for p in (world.store / "tiny").iterdir()] == ["1"]  # no staging left


def test_a_config_that_changes_the_model_needs_from_scratch(world):
    other = world.root / "wide.toml"
    other.write_text(tiny_recipe("x", "x", epochs=1).replace(
        "units = [8]", "units = [16]"))
    before = snapshot(world.store, world.ds)
    assert main(retrain(world, "--config", str(other))) == 1
    assert snapshot(world.store, world.ds) == before


def test_a_grown_dataset_without_a_val_patient_is_refused_before_any_fit(world, caplog):
    # The old dataset's only val patient moved to train: the grown dataset (new patients go to
    # train and test) has none. Refused after the staged ingest, naming the counts, before a run
    # folder or a fit; nothing changes.
    import pandas as pd

    manifest = world.ds / "manifest.parquet"
    frame = pd.read_parquet(manifest)
    frame["split"] = frame["split"].replace("val", "train")
    frame.to_parquet(manifest)
    before = snapshot(world.store, world.ds)
    assert main(retrain(world, "--epochs", "1")) == 1
    assert "at least one patient in each of train/val/test" in caplog.text, caplog.text
    assert "train=6 val=0 test=2" in caplog.text, caplog.text
    assert f"dataset {world.ds} with the new records" in caplog.text, caplog.text
    assert snapshot(world.store, world.ds) == before
    assert not (world.root / "runs").exists()


def test_rollback_refuses_a_missing_version_and_the_latest(world):
    assert main(["rollback", "--model-name", "tiny", "--to", "7", "--model-store",
                 str(world.store)]) == 1
    assert main(["rollback", "--model-name", "tiny", "--to", "1", "--model-store",
                 str(world.store)]) == 1
    assert versions(world) == ["1"]


# --- the live server --------------------------------------------------------------------------


def wait_for_version(client, version: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get("/v1/models/tiny").json()["model_version_status"]
        if (version, "AVAILABLE") in {(s["version"], s["state"]) for s in status}:
            if client.get("/v1/models/tiny/metadata").json()["model_spec"]["version"] == version:
                return
        time.sleep(0.1)
    raise AssertionError(f"version {version} never became the served one: {status}")


def test_a_running_server_swaps_to_the_retrained_version_and_back_without_a_failed_request(
        world, capsys):
    httpx = pytest.importorskip("httpx")
    t = np.arange(128) / 125.0
    window = np.stack([np.sin(2 * np.pi * 1.2 * t), 90 + 10 * np.sin(t)], axis=1).tolist()
    body = {"instances": [window]}
    server = LiveServer(world.store)
    failures: list = []
    done = threading.Event()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            wait_for_version(client, "1")
            v1 = client.post("/v1/models/tiny:predict", json=body).json()["predictions"]

            def loop() -> None:
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    while not done.is_set():
                        r = c.post("/v1/models/tiny:predict", json=body)
                        if r.status_code != 200 or len(r.json()["predictions"][0]) != 16:
                            failures.append((r.status_code, r.text))

            thread = threading.Thread(target=loop)
            thread.start()
            try:
                assert main(retrain(world, "--epochs", "4")) == 0
                assert last_json(capsys)["version"] == 2
                wait_for_version(client, "2")
                v2 = client.post("/v1/models/tiny:predict", json=body).json()["predictions"]
                assert main(["rollback", "--model-name", "tiny", "--to", "1",
                             "--model-store", str(world.store), "--json"]) == 0
                assert last_json(capsys) == {
                    "model_name": "tiny", "from_version": 2, "to_version": 1,
                    "published_as": 3, "version_dir": str(world.store / "tiny" / "3")}
                wait_for_version(client, "3")
                v3 = client.post("/v1/models/tiny:predict", json=body).json()["predictions"]
            finally:
                done.set()
                thread.join(30)
    finally:
        server.stop()
    assert failures == []
    assert not np.allclose(v2, v1)
    # the rollback serves version 1's model; float32 tolerance: concurrent requests may share a
    # batch (automatic batching), which changes the summation order, not the model
    np.testing.assert_allclose(v3, v1, rtol=1e-5, atol=1e-6)
    meta = json.loads((world.store / "tiny" / "3" / "assets.extra" / "pulsecast.json").read_text())
    assert meta["rolled_back_from"] == 1 and meta["parent_version"] == 1 and "retrain" not in meta
