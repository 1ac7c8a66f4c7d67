"""`[train] max_val_windows`: the validation windows scored after every epoch, capped evenly."""

from __future__ import annotations

import numpy as np
from test_windows import ramp, write_dataset

from pipelines.config import TrainConfig
from pipelines.training.fit import make_batchers
from pipelines.windows.batcher import WindowBatcher
from pipelines.windows.spec import WindowSpec

SPEC = WindowSpec(input_steps=3, horizon=2, stride=1, inputs=("II",), targets=("II",))


def _dataset(tmp_path):
    return write_dataset(tmp_path / "ds", {"t": ramp(60, 1), "a": ramp(40, 2), "b": ramp(40, 3)},
                         {"a": "val", "b": "val"})


def test_max_val_windows_keeps_an_even_share_of_every_validation_record(tmp_path) -> None:
    dataset = _dataset(tmp_path)
    every = WindowBatcher(dataset, SPEC, "val", shuffle=False)
    _, val = make_batchers(dataset, SPEC, TrainConfig(batch_size=4, max_val_windows=8))
    assert (every.n_windows, val.n_windows, len(val)) == (72, 8, 2)
    rows = val.index.windows
    assert np.bincount(rows[:, 0]).tolist() == [4, 4]  # both records, equal shares
    assert (rows[0] == every.index.windows[0]).all() and (rows[-1] == every.index.windows[-1]).all()
    x, y = val.materialize()
    assert x.shape == (8, 3, 1) and y.shape == (8, 2, 1)
    # the same windows every epoch: validation stays comparable from one epoch to the next
    first = np.concatenate([val[i][0] for i in range(len(val))])
    val.on_epoch_end()
    np.testing.assert_array_equal(first, np.concatenate([val[i][0] for i in range(len(val))]))


def test_no_cap_or_a_cap_above_the_count_scores_every_validation_window(tmp_path) -> None:
    dataset = _dataset(tmp_path)
    for cap in (0, 72, 1000):
        _, val = make_batchers(dataset, SPEC, TrainConfig(batch_size=4, max_val_windows=cap))
        assert val.n_windows == 72, cap
