"""Check an exported SavedModel in a fresh CPU-only process: it must reproduce the Keras model.

`verify_savedmodel` loads a version folder with `tf.saved_model.load` in a child Python process
that sees no GPU (`CUDA_VISIBLE_DEVICES=-1`): a graph that needs cuDNN fails here rather than on
a CPU-only server, and nothing of the exporting process (registered layers, traced functions)
can hide a broken SavedModel. It calls `serving_default(signal=x)` and compares the outputs with
the Keras model's. `run_cpu_child` is that child-process runner, shared with
`models.export.export_in_subprocess`. Nothing is written; TensorFlow is imported only in the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from models.layout import FORECAST_KEY, INPUT_KEY, SIGNATURE_KEY

_PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ExportVerificationError(ValueError):
    """An exported SavedModel whose `serving_default` does not reproduce the Keras model."""


def _cpu_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def run_cpu_child(script: str, args: Sequence[str], timeout_s: float,
                  ) -> subprocess.CompletedProcess:
    """Run `python -c script *args` with no visible GPU; stdout/stderr captured, never raises
    on a non-zero exit (the caller reads `returncode` and `stderr`)."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=_cpu_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


_VERIFY_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, work = sys.argv[1], sys.argv[2]
    data = np.load(work + "/data.npz")
    loaded = tf.saved_model.load(path)
    report = {"signatures": sorted(loaded.signatures.keys())}
    fn = loaded.signatures.get(sys.argv[3])
    if fn is not None:
        inputs = fn.structured_input_signature[1]
        report["inputs"] = {k: [d for d in v.shape.as_list()] for k, v in inputs.items()}
        report["outputs"] = sorted(fn.structured_outputs)
        if list(inputs) == [sys.argv[4]]:
            got = fn(**{sys.argv[4]: tf.constant(data["x"], dtype=tf.float32)})
            np.savez(work + "/got.npz", **{k: v.numpy() for k, v in got.items()})
    json.dump(report, open(work + "/report.json", "w"))
    """
)


def verify_savedmodel(
    path: str | Path,
    x: np.ndarray,
    expected: np.ndarray | Mapping[str, np.ndarray],
    atol: float = 1e-5,
    rtol: float = 1e-5,
    timeout_s: float = 300.0,
    complete: bool = False,
) -> dict[str, float]:
    """Check, in a fresh CPU-only process, that the SavedModel reproduces the Keras model.

    Loads `path` with `tf.saved_model.load` in a child process (`CUDA_VISIBLE_DEVICES=-1`, so a
    graph needing cuDNN fails here, not on the server), calls `serving_default(signal=x)` and
    compares with `expected`: a dict {output name: array}, or one array for the `forecast` (or
    only) output. Passes when |got - expected| <= atol + rtol * |expected| everywhere.
    With `complete`, `expected` holds every output of the Keras model (the forecast, quantiles,
    event probabilities): the signature must have exactly those outputs, none missing, none
    extra. Returns {output name: max abs difference}; raises `ExportVerificationError` naming
    the output and the difference otherwise.
    """
    x = np.asarray(x, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="pulsecast-verify-") as work:
        np.savez(Path(work) / "data.npz", x=x)
        done = run_cpu_child(_VERIFY_CHILD, [str(path), work, SIGNATURE_KEY, INPUT_KEY], timeout_s)
        if done.returncode != 0:
            raise ExportVerificationError(
                f"loading {path} in a fresh CPU-only process failed (exit {done.returncode}):\n"
                f"{done.stderr[-3000:]}"
            )
        report = json.loads((Path(work) / "report.json").read_text())
        got_path = Path(work) / "got.npz"
        got = dict(np.load(got_path)) if got_path.exists() else {}
    if SIGNATURE_KEY not in report["signatures"]:
        raise ExportVerificationError(
            f"{path} has no {SIGNATURE_KEY!r} signature, only {report['signatures']}"
        )
    if list(report["inputs"]) != [INPUT_KEY]:
        raise ExportVerificationError(
            f"{SIGNATURE_KEY} inputs must be exactly [{INPUT_KEY!r}], got {list(report['inputs'])}"
        )
    if not isinstance(expected, Mapping):
        names = report["outputs"]
        key = FORECAST_KEY if FORECAST_KEY in names else (names[0] if len(names) == 1 else None)
        if key is None:
            raise ExportVerificationError(
                f"expected is one array but {SIGNATURE_KEY} has outputs {names}; pass a dict"
            )
        expected = {key: expected}
    if complete and sorted(expected) != sorted(report["outputs"]):
        raise ExportVerificationError(
            f"{SIGNATURE_KEY} of {path} has outputs {sorted(report['outputs'])}, the Keras model "
            f"{sorted(expected)}"
        )
    diffs: dict[str, float] = {}
    for name, want in expected.items():
        if name not in got:
            raise ExportVerificationError(
                f"{SIGNATURE_KEY} has no output {name!r}; outputs are {sorted(got)}"
            )
        want = np.asarray(want)
        if got[name].shape != want.shape:
            raise ExportVerificationError(
                f"output {name!r} has shape {got[name].shape}, expected {want.shape}"
            )
        diff = np.abs(got[name].astype(np.float64) - want)
        diffs[name] = float(diff.max()) if diff.size else 0.0
        if not np.all(diff <= atol + rtol * np.abs(want)):
            raise ExportVerificationError(
                f"output {name!r} of {path} differs from the Keras model by up to "
                f"{diffs[name]:.3g} (atol={atol}, rtol={rtol})"
            )
    return diffs
