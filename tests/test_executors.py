"""Executors: order kept on every engine, bad choices named, and Ray ingest equal to local ingest.

The Ray tests skip when Ray (the `scale` extra) is absent; everything else runs without it,
including what happens when `--executor ray` is asked for but Ray is missing.
"""

from __future__ import annotations

import json
import operator
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.ingest.cohort import ingest
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.executors import ExecutorError, map_ordered, validate_executor

ITEMS = list(range(12))
EXPECTED = [10 * i for i in ITEMS]


def test_the_local_executor_keeps_the_order_in_process_and_in_a_pool() -> None:
    assert list(map_ordered(operator.mul, ITEMS, 10)) == EXPECTED
    assert list(map_ordered(operator.mul, ITEMS, 10, workers=3)) == EXPECTED


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("spark", None, 1), "executor must be one of ('local', 'ray'), got 'spark'"),
        (("local", None, 0), "workers must be an integer >= 1, got 0"),
        (("local", "auto", 1), "ray_address needs executor 'ray', got executor 'local'"),
        (("ray", "http://x", 1),
         "ray_address must be 'auto', 'host:port' or 'ray://host:port', got 'http://x'"),
    ],
)
def test_a_bad_executor_choice_is_named(args: tuple, message: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_executor(*args)
    assert str(err.value) == message


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "ray://head.cluster:10001"])
def test_ray_addresses_of_every_documented_form_are_accepted(address: str) -> None:
    validate_executor("ray", address, 1)


def test_the_ingest_config_checks_the_executor_and_records_it(tmp_path: Path) -> None:
    base = {"raw_dir": tmp_path, "dataset_dir": tmp_path / "ds", "channels": ("II",), "fs": 125}
    with pytest.raises(ValueError, match="executor must be one of"):
        IngestConfig(**base, executor="dask")
    with pytest.raises(ValueError, match="ray_address needs executor 'ray'"):
        IngestConfig(**base, ray_address="auto")
    config = IngestConfig(**base, executor="ray", ray_address="ray://head:10001")
    assert config.to_json()["executor"] == "ray"
    assert config.to_json()["ray_address"] == "ray://head:10001"


def test_without_ray_the_ray_executor_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'pulsecast\[scale\]'"):
        list(map_ordered(operator.mul, ITEMS, 10, executor="ray"))
    (tmp_path / "raw").mkdir()
    argv = ["ingest", "--raw", str(tmp_path / "raw"), "--dataset", str(tmp_path / "ds"),
            "--channels", "II", "--fs", "125", "--executor", "ray"]
    assert main(argv) == 1
    assert "executor 'ray' needs Ray" in caplog.text
    assert not (tmp_path / "ds").exists()


# --- Ray (the `scale` extra) -------------------------------------------------------------------

def _ray():
    return pytest.importorskip("ray", reason="Ray not installed (pip install 'pulsecast[scale]')")


def test_a_ray_the_executor_started_itself_is_shut_down_afterwards() -> None:
    ray = _ray()
    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    assert list(map_ordered(operator.mul, ITEMS, 10, executor="ray")) == EXPECTED
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    ray = _ray()
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_the_ray_executor_keeps_the_order_and_leaves_a_callers_ray_running(local_ray) -> None:
    assert list(map_ordered(operator.mul, ITEMS, 10, executor="ray")) == EXPECTED
    assert local_ray.is_initialized()


def test_a_failing_ray_task_is_reported_with_its_item(local_ray) -> None:
    results = map_ordered(operator.getitem, ["ab", "cd", "e"], 1, executor="ray")
    assert [next(results), next(results)] == ["b", "d"]
    with pytest.raises(ExecutorError, match="(?s)ray task for e failed: .*IndexError"):
        next(results)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.sources.synth import SynthConfig, write_cohort

    raw = tmp_path_factory.mktemp("cohort") / "raw"
    write_cohort(SynthConfig(out=raw, patients=4, minutes=2, seed=0))
    return raw


def test_ingest_on_ray_writes_the_same_dataset_as_the_local_run(
    local_ray, cohort: Path, tmp_path: Path
) -> None:
    from pipelines.dataset.contract import load_dataset

    def run(name: str, **kwargs) -> Path:
        config = IngestConfig(raw_dir=cohort, dataset_dir=tmp_path / name,
                              channels=("II", "ABP"), fs=125, **kwargs)
        report = ingest(config)
        assert report.written
        return report.dataset_dir

    local, on_ray = run("local"), run("ray", executor="ray")
    a, b = load_dataset(local).manifest, load_dataset(on_ray).manifest
    assert len(a) >= 4 and a.equals(b)
    for record_id in a["record_id"]:
        x = np.load(local / "signals" / f"{record_id}.npy")
        y = np.load(on_ray / "signals" / f"{record_id}.npy")
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x, y)
    meta_a, meta_b = (json.loads((d / "dataset.json").read_text()) for d in (local, on_ray))
    ignore = {"created", "executor", "dataset_dir"}
    assert {k: v for k, v in meta_a.items() if k not in ignore} == {
        k: v for k, v in meta_b.items() if k not in ignore}
