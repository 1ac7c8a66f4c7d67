"""The tiny recipe the training, retraining and TBPTT tests share: lead II and ABP at 125 Hz in,
1 s of 128 samples, lead II 16 samples ahead out, a small recurrent model, a few epochs."""

from __future__ import annotations

TINY = """
name = "{name}"
[data]
raw = "{raw}"
dataset = "{dataset}"
channels = ["II", "ABP"]
fs = 125
[window]
input_steps = 128
horizon = 16
stride = 32
inputs = ["II", "ABP"]
targets = ["II"]
[model]
arch = "{arch}"
units = [8]
[train]
epochs = {epochs}
batch_size = 64
patience = 0
{train_extra}
[evaluate]
max_windows = {max_windows}
n_boot = 50
"""


def tiny_recipe(raw: object, dataset: object, *, name: str = "tiny", arch: str = "lstm",
                epochs: int = 2, train_extra: str = "", max_windows: int = 500) -> str:
    """The TOML text of the tiny recipe; `train_extra` is added to its [train] table."""
    return TINY.format(name=name, raw=raw, dataset=dataset, arch=arch, epochs=epochs,
                       train_extra=train_extra, max_windows=max_windows)
