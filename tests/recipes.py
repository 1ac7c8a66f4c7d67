"""The tiny recipe the training, retraining, TBPTT, fault-injection and evaluation tests share:
lead II (and ABP) at 125 Hz in, 1 s of 128 samples, lead II 16 samples ahead out, a small
recurrent model, a few epochs."""

from __future__ import annotations

import json
from collections.abc import Sequence

TINY = """
name = "{name}"
[data]
raw = "{raw}"
dataset = "{dataset}"
channels = {channels}
fs = 125
[window]
input_steps = 128
horizon = 16
stride = 32
inputs = {channels}
targets = ["II"]
[model]
arch = "{arch}"
units = [{units}]
[train]
epochs = {epochs}
batch_size = {batch_size}
patience = 0
{train_extra}
[evaluate]
ridge_lags = {ridge_lags}
max_windows = {max_windows}
n_boot = {n_boot}
"""


def tiny_recipe(raw: object, dataset: object, *, name: str = "tiny", arch: str = "lstm",
                channels: Sequence[str] = ("II", "ABP"), units: int = 8, epochs: int = 2,
                batch_size: int = 64, train_extra: str = "", ridge_lags: int = 64,
                max_windows: int = 500, n_boot: int = 50) -> str:
    """The TOML text of the tiny recipe; `channels` are ingested and all fed in (lead II is the
    target); `train_extra` is added to its [train] table."""
    return TINY.format(name=name, raw=raw, dataset=dataset, channels=json.dumps(list(channels)),
                       arch=arch, units=units, epochs=epochs, batch_size=batch_size,
                       train_extra=train_extra, ridge_lags=ridge_lags, max_windows=max_windows,
                       n_boot=n_boot)
