"""Windows cut on the fly from memory-mapped signals: index semantics, gaps, batches, Keras."""

from __future__ import annotations

import json
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.dataset.contract import MANIFEST_COLUMNS, Dataset, load_dataset
from pipelines.windows.batcher import WindowBatcher
from pipelines.windows.index import WindowIndex
from pipelines.windows.spec import NoWindowsError, WindowSpec, window_starts
from pipelines.windows.views import window_view

CHANNELS = ("II", "ABP", "RESP")


def write_dataset(
    root: Path, signals: dict[str, np.ndarray], splits: dict[str, str] | None = None
) -> Dataset:
    """A dataset folder by hand (manifest, signals, dataset.json), 125 Hz, channels CHANNELS."""
    (root / "signals").mkdir(parents=True)
    rows = []
    for record_id, signal in signals.items():
        np.save(root / "signals" / f"{record_id}.npy", signal.astype(np.float32))
        rows.append(
            {
                "record_id": record_id,
                "patient_id": f"p-{record_id}",
                "source_path": f"raw/{record_id}",
                "channels": ",".join(CHANNELS),
                "units": "mV,mmHg,Ohm",
                "fs": 125.0,
                "n_samples": len(signal),
                "start_time": "",
                "sha256": "0" * 64,
                "split": (splits or {}).get(record_id, "train"),
                "quality": "",
                "nan_fraction": float(np.isnan(signal).mean()),
            }
        )
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_parquet(root / "manifest.parquet")
    config = {"channels": list(CHANNELS), "units": ["mV", "mmHg", "Ohm"], "fs": 125.0}
    (root / "dataset.json").write_text(json.dumps(config))
    return load_dataset(root)


def ramp(n: int, record: int = 0) -> np.ndarray:
    """(n, 3) signal whose value says where it came from: record*1000 + row + channel/10."""
    rows = np.arange(n, dtype=np.float64)[:, None]
    return record * 1000 + rows + np.array([0.0, 0.1, 0.2])


def spec(**kw) -> WindowSpec:
    base = dict(input_steps=3, horizon=2, stride=1, inputs=("II",), targets=("II",))
    return WindowSpec(**(base | kw))


@pytest.fixture
def small(tmp_path: Path) -> Dataset:
    return write_dataset(tmp_path / "ds", {"a": ramp(20, 1), "b": ramp(15, 2), "c": ramp(4, 3)})


# --- window math -------------------------------------------------------------------------------


def test_window_starts_are_stride_apart_and_the_last_window_ends_inside_the_signal() -> None:
    assert window_starts(10, spec(stride=2)).tolist() == [0, 2, 4]
    assert window_starts(10, spec()).tolist() == [0, 1, 2, 3, 4, 5]
    assert window_starts(5, spec()).tolist() == [0]


def test_a_signal_shorter_than_one_window_has_no_starts() -> None:
    assert window_starts(4, spec()).tolist() == []


def test_window_starts_drop_windows_touching_an_invalid_sample() -> None:
    valid = np.ones(10, dtype=bool)
    valid[5] = False
    # windows cover [s, s+5): those containing row 5 are s = 1..5
    assert window_starts(10, spec(), valid).tolist() == [0]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"stride": 0}, "stride must be >= 1, got 0"),
        ({"input_steps": -3}, "input_steps must be >= 1, got -3"),
        ({"horizon": 2.5}, "horizon must be an int, got 2.5"),
        ({"inputs": ()}, "inputs must be a non-empty tuple of channel names, got ()"),
        ({"targets": "II"}, "targets must be a non-empty tuple of channel names, got 'II'"),
        ({"inputs": ("II", "II")}, "inputs must not repeat a channel, got ('II', 'II')"),
        ({"gap_policy": "fill"}, "gap_policy must be one of ('skip', 'mask'), got 'fill'"),
    ],
)
def test_a_bad_window_spec_is_rejected_naming_the_value(kw: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        spec(**kw)
    assert str(err.value) == message


def test_window_spec_lists_become_tuples_so_specs_compare_and_hash() -> None:
    s = spec(inputs=["II", "ABP"])
    assert s.inputs == ("II", "ABP") and hash(s) == hash(spec(inputs=("II", "ABP")))
    assert spec(gap_policy="mask", inputs=("II", "ABP")).n_features == 4


# --- index ---------------------------------------------------------------------------------------


def test_the_index_lists_record_position_and_start_and_no_window_crosses_records(
    small: Dataset,
) -> None:
    index = WindowIndex.from_dataset(small, spec(stride=5), split="train")
    assert index.record_ids == ("a", "b", "c")
    assert index.windows.tolist() == [[0, 0], [0, 5], [0, 10], [0, 15], [1, 0], [1, 5], [1, 10]]


def test_explicit_record_ids_override_the_split(small: Dataset) -> None:
    index = WindowIndex.from_dataset(small, spec(stride=5), record_ids=["b"])
    assert index.record_ids == ("b",) and index.windows.tolist() == [[0, 0], [0, 5], [0, 10]]


def test_no_windows_raises_naming_split_spec_and_record_count(small: Dataset) -> None:
    with pytest.raises(NoWindowsError) as err:
        WindowIndex.from_dataset(small, spec(input_steps=30), split="train")
    msg = str(err.value)
    assert "split 'train'" in msg and "3 records" in msg and "input_steps=30" in msg
    with pytest.raises(NoWindowsError, match="split 'val' \\(0 records"):
        WindowIndex.from_dataset(small, spec(), split="val")


def test_every_window_touching_a_gap_raises_no_windows(tmp_path: Path) -> None:
    signal = ramp(10)
    signal[::4, 0] = np.nan
    ds = write_dataset(tmp_path / "ds", {"a": signal})
    with pytest.raises(NoWindowsError, match="touches a gap"):
        WindowIndex.from_dataset(ds, spec())


def test_a_gap_in_an_unused_channel_does_not_drop_windows(tmp_path: Path) -> None:
    signal = ramp(10)
    signal[4, 2] = np.nan  # RESP, used by nobody
    ds = write_dataset(tmp_path / "ds", {"a": signal})
    assert WindowIndex.from_dataset(ds, spec()).windows[:, 1].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_gap_in_a_target_only_channel_drops_only_windows_whose_target_covers_it(
    tmp_path: Path,
) -> None:
    signal = ramp(10)
    signal[4, 1] = np.nan  # ABP is a target, not an input
    ds = write_dataset(tmp_path / "ds", {"a": signal})
    s = spec(inputs=("II",), targets=("ABP",))
    # targets cover rows [s+3, s+5): row 4 is in the target of s = 0 (rows 3,4) and s = 1 (4,5);
    # s = 2..4 have row 4 in their input, where ABP is not read.
    assert WindowIndex.from_dataset(ds, s).windows[:, 1].tolist() == [2, 3, 4, 5]


def test_a_gap_in_an_input_only_channel_drops_only_windows_whose_input_covers_it(
    tmp_path: Path,
) -> None:
    signal = ramp(10)
    signal[4, 1] = np.nan
    ds = write_dataset(tmp_path / "ds", {"a": signal})
    s = spec(inputs=("ABP",), targets=("II",))
    # inputs cover rows [s, s+3): row 4 is in the input of s = 2, 3, 4
    assert WindowIndex.from_dataset(ds, s).windows[:, 1].tolist() == [0, 1, 5]


def test_mask_policy_keeps_windows_with_gaps(tmp_path: Path) -> None:
    signal = ramp(10)
    signal[4, 0] = np.nan
    ds = write_dataset(tmp_path / "ds", {"a": signal})
    assert len(WindowIndex.from_dataset(ds, spec(gap_policy="mask"))) == 6


# --- batches -------------------------------------------------------------------------------------


def expected_x_y(ds: Dataset, s: WindowSpec, windows: np.ndarray, ids) -> tuple:
    inputs, targets = ds.channel_index(s.inputs), ds.channel_index(s.targets)
    xs, ys = [], []
    for pos, start in windows:
        sig = np.asarray(ds.signal(ids[pos]))
        xs.append(sig[start : start + s.input_steps][:, inputs])
        ys.append(sig[start + s.input_steps : start + s.span][:, targets])
    return np.stack(xs), np.stack(ys)


@pytest.mark.parametrize(
    ("inputs", "targets"),
    [
        (("II",), ("II",)),
        (("ABP", "II"), ("RESP",)),  # reversed order: a strided view
        (("II", "RESP", "ABP"), ("RESP", "II")),  # uneven: picked while gathering
    ],
)
def test_batches_hold_exactly_the_input_and_target_slices_in_the_asked_channel_order(
    small: Dataset, inputs: tuple, targets: tuple
) -> None:
    s = spec(input_steps=4, horizon=3, stride=2, inputs=inputs, targets=targets)
    batcher = WindowBatcher(small, s, batch_size=3, shuffle=True, seed=7)
    for i in range(len(batcher)):
        x, y = batcher[i]
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert x.flags.c_contiguous and y.flags.c_contiguous
        assert x.shape[1:] == (4, len(inputs)) and y.shape[1:] == (3, len(targets))
        ex, ey = expected_x_y(small, s, batcher.batch_windows(i), batcher.record_ids)
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


def test_materialize_returns_every_window_in_index_order(small: Dataset) -> None:
    s = spec(stride=4, inputs=("II", "ABP"))
    batcher = WindowBatcher(small, s, batch_size=2)
    x, y = batcher.materialize()
    assert x.shape == (batcher.n_windows, 3, 2) and y.shape == (batcher.n_windows, 2, 1)
    ex, ey = expected_x_y(small, s, batcher.index.windows, batcher.record_ids)
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)


def test_every_window_is_seen_exactly_once_per_epoch(small: Dataset) -> None:
    batcher = WindowBatcher(small, spec(), batch_size=4, shuffle=True, seed=3)
    for _ in range(3):
        seen = np.concatenate([batcher.batch_windows(i) for i in range(len(batcher))])
        assert sorted(map(tuple, seen.tolist())) == sorted(
            map(tuple, batcher.index.windows.tolist())
        )
        batcher.on_epoch_end()


def test_shuffling_is_a_function_of_seed_and_epoch(small: Dataset) -> None:
    def epochs(seed: int, n: int) -> list[list]:
        batcher = WindowBatcher(small, spec(), batch_size=4, seed=seed)
        out = []
        for _ in range(n):
            out.append(np.concatenate([batcher.batch_windows(i) for i in range(len(batcher))]))
            batcher.on_epoch_end()
        return [e.tolist() for e in out]

    first, again = epochs(seed=1, n=3), epochs(seed=1, n=3)
    assert first == again
    assert first[0] != first[1] != first[2]
    assert epochs(seed=2, n=1)[0] != first[0]


def test_without_shuffle_batches_follow_the_index(small: Dataset) -> None:
    batcher = WindowBatcher(small, spec(), batch_size=4, shuffle=False)
    assert batcher.batch_windows(0).tolist() == batcher.index.windows[:4].tolist()
    batcher.on_epoch_end()
    assert batcher.batch_windows(0).tolist() == batcher.index.windows[:4].tolist()


def test_the_last_partial_batch_is_kept_or_dropped(small: Dataset) -> None:
    kept = WindowBatcher(small, spec(), batch_size=4)  # 27 windows
    dropped = WindowBatcher(small, spec(), batch_size=4, drop_remainder=True)
    assert kept.n_windows == 27 and len(kept) == 7 and len(kept[-1][0]) == 3
    assert len(dropped) == 6 and len(dropped[5][0]) == 4
    with pytest.raises(IndexError, match="batch index must be in \\[-6, 6\\), got 6"):
        dropped[6]


def test_a_bad_batch_size_is_rejected_naming_the_value(small: Dataset) -> None:
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        WindowBatcher(small, spec(), batch_size=0)


def test_mask_policy_zeroes_gaps_and_appends_observed_channels_and_target_weights(
    tmp_path: Path,
) -> None:
    signal = ramp(8)
    signal[1, 0] = np.nan  # an input row of window 0
    signal[6, 1] = np.nan  # a target row (ABP) of window 2: rows [5, 7)
    ds = write_dataset(tmp_path / "ds", {"a": signal})
    s = spec(inputs=("II", "ABP"), targets=("II", "ABP"), gap_policy="mask")
    x, y, weight = WindowBatcher(ds, s, shuffle=False).materialize()
    assert x.shape == (4, 3, 4) and y.shape == (4, 2, 2) and weight.shape == (4, 2)
    assert not np.isnan(x).any() and not np.isnan(y).any()
    assert x[0, 1].tolist() == [0.0, np.float32(1.1), 0.0, 1.0]  # values, then observed flags
    assert x[0, 0, 2:].tolist() == [1.0, 1.0]
    assert y[2, 1].tolist() == [6.0, 0.0]
    assert weight.tolist() == [[1, 1], [1, 1], [1, 0], [0, 1]]


# --- memory --------------------------------------------------------------------------------------


def test_window_views_share_memory_with_the_memmapped_signal(small: Dataset) -> None:
    signal = small.signal("a")
    assert isinstance(signal, np.memmap)
    for cols in (None, [0], [1, 0], [0, 2]):
        view = window_view(signal, 3, 5, cols)
        assert np.shares_memory(view, signal)
    np.testing.assert_array_equal(window_view(signal, 3, 5, [2, 0])[4], signal[7:12][:, [2, 0]])
    with pytest.raises(ValueError, match="evenly spaced to stay a view, got \\[0, 2, 1\\]"):
        window_view(signal, 0, 5, [0, 2, 1])


def _peak_bytes(ds: Dataset, stride: int) -> tuple[int, int]:
    s = spec(input_steps=200, horizon=50, stride=stride, inputs=("II", "ABP"), targets=("II",))
    tracemalloc.start()
    batcher = WindowBatcher(ds, s, batch_size=64, seed=0)
    for i in range(3):
        batcher[i]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    index_bytes = batcher.index.windows.nbytes + batcher._order.nbytes
    return peak, index_bytes


def test_memory_does_not_grow_with_window_overlap(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", {"a": ramp(40_000), "b": ramp(40_000, 1)})
    peak_1, index_1 = _peak_bytes(ds, stride=1)
    peak_100, index_100 = _peak_bytes(ds, stride=100)
    materialized = 2 * (40_000 - 249) * 250 * 3 * 4  # every stride-1 window as float32
    assert peak_1 < materialized / 20
    # all the difference is index-sized (the index, the epoch order, their temporaries)
    assert peak_1 - peak_100 <= 3 * (index_1 - index_100)


def test_a_batcher_pickles_without_copying_the_signals(small: Dataset) -> None:
    batcher = WindowBatcher(small, spec(), batch_size=4, seed=5)
    batcher[0]  # opens the memmaps
    clone = pickle.loads(pickle.dumps(batcher))
    assert len(pickle.dumps(batcher)) < 20_000
    np.testing.assert_array_equal(clone[1][0], batcher[1][0])


def test_importing_windows_does_not_import_keras() -> None:
    import subprocess
    import sys

    code = "import sys, pipelines.windows.keras_data; print('keras' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


# --- keras ---------------------------------------------------------------------------------------


def test_window_dataset_is_a_keras_py_dataset_that_passes_worker_options(small: Dataset) -> None:
    import keras

    from pipelines.windows.keras_data import WindowDataset

    ds = WindowDataset(small, spec(), batch_size=4, workers=2, max_queue_size=3)
    assert isinstance(ds, keras.utils.PyDataset) and isinstance(ds, WindowBatcher)
    assert ds.workers == 2 and ds.max_queue_size == 3 and not ds.use_multiprocessing
    assert len(ds) == 7 and ds.n_windows == 27
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0][1], ds[0][1])


def test_keras_fit_trains_on_a_window_dataset_and_moves_it_through_epochs(tmp_path: Path) -> None:
    import keras

    from pipelines.windows.keras_data import WindowDataset

    data = write_dataset(tmp_path / "ds", {"a": ramp(40) / 40, "b": ramp(30, 1) / 40})
    s = spec(inputs=("II", "ABP"), targets=("II",))
    ds = WindowDataset(data, s, batch_size=8, seed=0)
    model = keras.Sequential(
        [
            keras.Input((3, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
            keras.layers.Reshape((2, 1)),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(ds, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    # Keras calls on_epoch_end once before the first epoch (EpochIterator.reset) and after each
    assert ds.epoch == 3


JAX_FIT = """
import json, sys
import keras
from pipelines.dataset.contract import load_dataset
from pipelines.windows.keras_data import WindowDataset
from pipelines.windows.spec import WindowSpec
spec = WindowSpec(3, 2, inputs=("II", "ABP"), targets=("II",), gap_policy="mask")
ds = WindowDataset(load_dataset(sys.argv[1]), spec, batch_size=8, workers=2)
model = keras.Sequential([keras.Input((3, 4)), keras.layers.Flatten(), keras.layers.Dense(2),
                          keras.layers.Reshape((2, 1))])
model.compile(optimizer="adam", loss="mse")
history = model.fit(ds, epochs=1, verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "loss": history.history["loss"]}))
"""


@pytest.mark.slow
def test_a_window_dataset_trains_on_the_jax_backend_with_no_tensorflow_input_pipeline(
    tmp_path: Path,
) -> None:
    pytest.importorskip("jax")
    import os
    import subprocess
    import sys

    signal = ramp(40) / 40
    signal[7, 1] = np.nan
    write_dataset(tmp_path / "ds", {"a": signal})
    env = os.environ | {"KERAS_BACKEND": "jax", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", JAX_FIT, str(tmp_path / "ds")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax" and np.isfinite(result["loss"]).all()


def test_still_windows_are_not_cut_and_are_counted() -> None:
    # Two channels: "ecg" moves throughout, "abp" is a pulse for 2000 samples and then a
    # calibration square wave (two levels, four samples each) for 2000 more.
    t = np.arange(4000) / 125.0
    ecg = np.sin(2 * np.pi * 1.1 * t)
    abp = 80 + 20 * np.sin(2 * np.pi * 1.3 * t)
    abp[2000:] = np.where((np.arange(2000) // 4) % 2 == 0, -24.0, -72.0)
    signal = np.column_stack([ecg, abp]).astype(np.float32)
    every = WindowSpec(input_steps=200, horizon=50, stride=10, inputs=("ecg", "abp"),
                       targets=("abp",))
    moving = WindowSpec(input_steps=200, horizon=50, stride=10, inputs=("ecg", "abp"),
                        targets=("abp",), max_still_fraction=0.5)
    all_idx = WindowIndex.from_signals([signal], every, [0, 1], [1])
    kept = WindowIndex.from_signals([signal], moving, [0, 1], [1])
    assert all_idx.n_still == 0 and kept.n_still > 0
    assert len(kept) + kept.n_still == len(all_idx)
    starts = kept.windows[:, 1]
    # a window is still when more than half of its 250-sample span lies in the square wave
    # (3 of every 4 of its steps hold a level): the last kept start is near 2000 - 250 + 170
    assert starts.min() == 0 and 1800 <= starts.max() < 2000
    # the rule reads the targets only: with ecg as the target nothing is still
    ecg_target = WindowSpec(input_steps=200, horizon=50, stride=10, inputs=("ecg", "abp"),
                            targets=("ecg",), max_still_fraction=0.5)
    assert WindowIndex.from_signals([signal], ecg_target, [0, 1], [0]).n_still == 0


@pytest.mark.parametrize("bad", [0, 1.01, True, "0.5"])
def test_max_still_fraction_of_a_window_spec_is_checked(bad) -> None:
    with pytest.raises(ValueError, match="max_still_fraction must be a number in"):
        WindowSpec(input_steps=4, horizon=2, inputs=("a",), targets=("a",),
                   max_still_fraction=bad)
