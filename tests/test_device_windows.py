"""Device-side windows gather exactly WindowBatcher's batches, in-step, on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.dataset.contract import MANIFEST_COLUMNS, Dataset, load_dataset
from pipelines.windows.batcher import WindowBatcher
from pipelines.windows.device import DeviceWindows
from pipelines.windows.spec import WindowSpec

CHANNELS = ("II", "ABP", "RESP")


def write_dataset(root: Path, signals: dict[str, np.ndarray]) -> Dataset:
    (root / "signals").mkdir(parents=True)
    rows = []
    for record_id, signal in signals.items():
        np.save(root / "signals" / f"{record_id}.npy", signal.astype(np.float32))
        rows.append({"record_id": record_id, "patient_id": f"p-{record_id}", "source_path": "",
                     "channels": ",".join(CHANNELS), "units": "mV,mmHg,Ohm", "fs": 125.0,
                     "n_samples": len(signal), "start_time": "", "sha256": "0" * 64,
                     "split": "train", "quality": "",
                     "nan_fraction": float(np.isnan(signal).mean())})
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_parquet(root / "manifest.parquet")
    config = {"channels": list(CHANNELS), "units": ["mV", "mmHg", "Ohm"], "fs": 125.0}
    (root / "dataset.json").write_text(json.dumps(config))
    return load_dataset(root)


def ramp(n: int, record: int) -> np.ndarray:
    """(n, 3): record*1000 + row + channel/10, so every value says where it came from."""
    return record * 1000 + np.arange(n, dtype=np.float64)[:, None] + np.array([0.0, 0.1, 0.2])


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    a = ramp(40, 1)
    a[17, 1] = np.nan  # a gap in ABP: "skip" drops the windows touching it where ABP is used
    return write_dataset(tmp_path / "ds", {"a": a, "b": ramp(31, 2), "c": ramp(4, 3)})


SPECS = [
    WindowSpec(5, 3, 1, ("II",), ("II",)),
    WindowSpec(5, 3, 2, ("RESP", "II"), ("ABP",)),  # unevenly ordered inputs, another target
    WindowSpec(4, 2, 1, ("II", "ABP", "RESP"), ("RESP", "II")),
]


@pytest.mark.parametrize("spec", SPECS, ids=["one", "swapped", "all"])
def test_device_gather_equals_the_batchers_windows_for_every_batch_of_two_epochs(dataset, spec):
    import keras

    batcher = WindowBatcher(dataset, spec, "train", batch_size=7, seed=3)
    dw = DeviceWindows(batcher)
    windows = dw.training_model(build_tiny_model(spec)).windows
    for _ in range(2):
        for i in range(len(batcher)):
            x_ref, y_ref = batcher[i]
            starts = dw.batch_starts(i)
            x_np, y_np = dw.gather_numpy(starts)
            x_dev = keras.ops.convert_to_numpy(windows(keras.ops.convert_to_tensor(starts)))
            y_dev = keras.ops.convert_to_numpy(windows.target(keras.ops.convert_to_tensor(starts)))
            np.testing.assert_array_equal(x_np, x_ref)
            np.testing.assert_array_equal(y_np, y_ref)
            np.testing.assert_array_equal(x_dev, x_ref)
            np.testing.assert_array_equal(y_dev, y_ref)
        batcher.on_epoch_end()


def test_the_start_dataset_follows_the_batcher_and_wraps_like_keyed(dataset):
    spec = SPECS[0]
    batcher = WindowBatcher(dataset, spec, "train", batch_size=4, seed=0, drop_remainder=True)
    dw = DeviceWindows(batcher)
    ds = dw.dataset(steps=len(batcher) - 1)
    assert len(ds) == len(batcher) - 1
    first = ds[0][0]
    assert first.dtype == np.int32
    np.testing.assert_array_equal(dw.gather_numpy(first)[0], batcher[0][0])
    ds.on_epoch_end()  # not enough batches left for a second epoch: reshuffle
    assert ds.cursor == 0 and batcher.epoch == 1


def test_mask_gap_policy_is_refused(dataset):
    batcher = WindowBatcher(dataset, WindowSpec(5, 3, 1, ("II",), ("II",), "mask"), "train")
    with pytest.raises(ValueError, match="skip"):
        DeviceWindows(batcher)


def build_tiny_model(spec: WindowSpec):
    import keras

    inp = keras.Input((spec.input_steps, len(spec.inputs)), name="signal")
    flat = keras.layers.Flatten()(inp)
    out = keras.layers.Reshape((spec.horizon, len(spec.targets)))(
        keras.layers.Dense(spec.horizon * len(spec.targets))(flat))
    return keras.Model(inp, {"forecast": out})


@pytest.mark.slow
def test_fit_on_device_windows_trains_the_wrapped_model_like_the_host_path(dataset):
    """One epoch through DeviceWindows equals one epoch through _keyed (same windows, same SGD)."""
    import keras

    from pipelines.training.fit import _keyed

    spec = SPECS[1]
    results = []
    for device in (False, True):
        keras.utils.set_random_seed(0)
        model = build_tiny_model(spec)
        batcher = WindowBatcher(dataset, spec, "train", batch_size=5, seed=1, drop_remainder=True)
        if device:
            dw = DeviceWindows(batcher)
            trainer, data = dw.training_model(model), dw.dataset()
        else:
            trainer, data = model, _keyed(batcher, ["forecast"])
        spe = 1 if keras.backend.backend() == "torch" else 2  # torch allows 1 only
        trainer.compile(optimizer=keras.optimizers.SGD(1e-5), loss={"forecast": "mse"},
                        steps_per_execution=spe)
        hist = trainer.fit(data, epochs=2, shuffle=False, verbose=0)
        results.append((hist.history["loss"], [w.copy() for w in model.get_weights()]))
    (loss_host, w_host), (loss_dev, w_dev) = results
    np.testing.assert_allclose(loss_dev, loss_host, rtol=1e-5)
    for a, b in zip(w_dev, w_host, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
