"""Export a Keras forecaster as a TF-Serving-ready SavedModel, and verify it in a fresh process.

What `export_savedmodel` writes into a version folder (see `models.store` for the layout):

    saved_model.pb, variables/, fingerprint.pb
        `serving_default` (endpoint `serve`): one input `signal` float32 (None, input_steps,
        channels) in physical units; one output per model output, keyed by the model's output
        names (`forecast`, `quantiles` for probabilistic recipes, and one `(None, 1)`
        probability per event, e.g. `ahe_probability`), never `output_0`.
    assets.extra/pulsecast.json
        the caller's metadata (a `models.metadata.VersionMetadata`, or a plain mapping for
        partial documents) plus `exported_at` (UTC ISO 8601), `keras_version`,
        `tensorflow_version`, `serving_signature` (input/output names and shapes) and
        `warmup_records`, written through `models.metadata`.
    assets.extra/tf_serving_warmup_requests
        a TFRecord of `tensorflow.serving.PredictionLog` protos (tensorflow-serving-api): predict
        requests on `serving_default` with a batch of 1 and the full warmup batch, replayed by
        TF Serving before the version becomes AVAILABLE.

GPU trap: Keras picks the cuDNN LSTM/GRU kernel at trace time when TensorFlow sees a GPU, and a
graph holding `CudnnRNNV3` cannot run on a CPU-only server. `export_savedmodel` refuses to leave
such a graph behind (`ExportError`); on a GPU host call `export_in_subprocess`, which exports from
a child process with `CUDA_VISIBLE_DEVICES=-1`. `verify_savedmodel` (`models.verify`, re-exported
here) loads the result in a fresh CPU-only process and checks it reproduces the Keras model's
numbers. Intended flow:

    store.publish(base, lambda staging: (
        export_savedmodel(model, staging, metadata, x[:8]),
        verify_savedmodel(staging, x, model_outputs, complete=True),
    ))

TensorFlow and Keras are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.layout import INPUT_KEY, SERVE_TAG, SIGNATURE_KEY, WARMUP_RELPATH
from models.metadata import VersionMetadata, write_metadata, write_pulsecast_json
from models.verify import ExportVerificationError as ExportVerificationError  # re-exported
from models.verify import run_cpu_child
from models.verify import verify_savedmodel as verify_savedmodel  # re-exported

ENDPOINT_NAME = SERVE_TAG
_CUDNN_OP_PREFIX = "CudnnRNN"
_FUSED_OP_PREFIX = "PulsecastLstm"  # models/fused_lstm_op.cc


class ExportError(ValueError):
    """A model that cannot be exported as promised (shape, names, GPU-only ops)."""


def _input_dims(model: Any) -> tuple[int, int]:
    inputs = model.inputs or []
    if len(inputs) != 1:
        raise ExportError(f"model must have exactly one input, got {len(inputs)}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 3 or shape[1] is None or shape[2] is None:
        raise ExportError(
            f"model input must be (batch, input_steps, channels) with both known, got {shape}"
        )
    return int(shape[1]), int(shape[2])


def _named_outputs(model: Any, outputs: Any) -> dict:
    """Model outputs as {output name: tensor}: a bare tensor or list would become `output_0`."""
    if isinstance(outputs, Mapping):
        return dict(outputs)
    names = list(model.output_names)
    if isinstance(outputs, list | tuple):
        if len(outputs) != len(names):
            raise ExportError(f"model returned {len(outputs)} outputs for names {names}")
        return dict(zip(names, outputs, strict=True))
    return {names[0]: outputs}


def _check_warmup(warmup_batch: np.ndarray, input_steps: int, channels: int) -> np.ndarray:
    batch = np.asarray(warmup_batch, dtype=np.float32)
    if batch.ndim != 3 or batch.shape[1:] != (input_steps, channels) or len(batch) == 0:
        raise ExportError(
            f"warmup_batch must be (n >= 1, {input_steps}, {channels}), got {batch.shape}"
        )
    if not np.isfinite(batch).all():
        raise ExportError("warmup_batch must be finite, got NaN or inf values")
    return batch


def _write_warmup(path: Path, batch: np.ndarray) -> int:
    """TFRecord of PredictionLog predict requests: batch of 1, and the whole batch when larger."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    requests = [batch[:1]] + ([batch] if len(batch) > 1 else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=SIGNATURE_KEY)
            )
            request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(inputs, dtype=tf.float32))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return len(requests)


def find_gpu_only_ops(path: str | Path) -> list[str]:
    """Names of cuDNN-only ops (`CudnnRNN*`) anywhere in a SavedModel's graph, sorted."""
    return _find_ops(path, _CUDNN_OP_PREFIX)


def _find_ops(path: str | Path, prefix: str) -> list[str]:
    """Names of the ops starting with `prefix` anywhere in a SavedModel's graph, sorted."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    found = set()
    for meta in proto.meta_graphs:
        nodes = list(meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            nodes.extend(fn.node_def)
        found.update(n.op for n in nodes if n.op.startswith(prefix))
    return sorted(found)


def export_savedmodel(
    model: Any,
    path: str | Path,
    metadata: VersionMetadata | Mapping[str, Any],
    warmup_batch: np.ndarray,
) -> Path:
    """Write `model` as a SavedModel into `path` (absent or empty) with metadata and warmup file.

    `warmup_batch` is `(n, input_steps, channels)` in physical units (a few real windows).
    Raises `ExportError` when the model's input is not `(None, steps, channels)` or when the
    traced graph contains a cuDNN-only op (exported where a GPU was visible).
    """
    import keras
    import tensorflow as tf

    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ExportError(f"export path must be absent or empty, got non-empty {path}")
    input_steps, channels = _input_dims(model)
    batch = _check_warmup(warmup_batch, input_steps, channels)

    def serve(signal):  # the argument name is the signature's input key
        return _named_outputs(model, model(signal, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    endpoint = archive.add_endpoint(
        ENDPOINT_NAME,
        serve,
        input_signature=[
            keras.InputSpec(shape=(None, input_steps, channels), dtype="float32", name=INPUT_KEY)
        ],
    )
    # A fixed input signature means one trace, shared with the save: its outputs are the keys.
    traced = endpoint.get_concrete_function().structured_outputs
    signature = {
        "inputs": {INPUT_KEY: [None, input_steps, channels]},
        "outputs": {name: list(t.shape) for name, t in sorted(traced.items())},
    }
    archive.write_out(str(path), verbose=False)

    gpu_ops = find_gpu_only_ops(path)
    if gpu_ops:
        raise ExportError(
            f"exported graph contains GPU-only ops {gpu_ops}: it would not run on a CPU server. "
            "Export with no visible GPU (export_in_subprocess, or CUDA_VISIBLE_DEVICES=-1)"
        )
    native_ops = _find_ops(path, _FUSED_OP_PREFIX)
    if native_ops:  # models.fused_lstm runs only with training=True; this is a bug if reached
        raise ExportError(
            f"exported graph contains pulsecast's training-only ops {native_ops}: TF Serving "
            "has no kernel for them"
        )
    n_warmup = _write_warmup(path / WARMUP_RELPATH, batch)
    stamps = {
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "serving_signature": signature,
        "warmup_records": n_warmup,
    }
    if isinstance(metadata, VersionMetadata):
        write_metadata(path, metadata.replace(**stamps))
    else:  # a partial document (tests, SavedModels for other tools): written as given
        write_pulsecast_json(path, {**dict(metadata), **stamps})
    return path


_EXPORT_CHILD = textwrap.dedent(
    """
    import importlib, json, sys
    import numpy as np
    work, out = sys.argv[1], sys.argv[2]
    spec = json.load(open(work + "/job.json"))
    for name in spec["import_modules"]:
        importlib.import_module(name)
    import keras
    from models.export import export_savedmodel
    model = keras.saving.load_model(spec["model_path"], compile=False)
    meta = spec["metadata"]
    if spec["typed"]:
        from models.metadata import VersionMetadata
        meta = VersionMetadata.from_dict(meta)
    export_savedmodel(model, out, meta, np.load(work + "/warmup.npy"))
    """
)


def export_in_subprocess(
    model: Any,
    path: str | Path,
    metadata: VersionMetadata | Mapping[str, Any],
    warmup_batch: np.ndarray,
    *,
    import_modules: Sequence[str] = ("models.architectures",),
    timeout_s: float = 600.0,
) -> Path:
    """`export_savedmodel` run in a child process that sees no GPU (`CUDA_VISIBLE_DEVICES=-1`).

    `model` is a Keras model (saved to a temporary `.keras` file for the child) or the path of a
    `.keras` file. `import_modules` are imported in the child first so custom layers are
    registered. Raises `ExportError` with the child's stderr tail when it fails.
    """
    typed = isinstance(metadata, VersionMetadata)
    with tempfile.TemporaryDirectory(prefix="pulsecast-export-") as work:
        if isinstance(model, str | Path):
            model_path = str(model)
        else:
            model_path = str(Path(work) / "model.keras")
            model.save(model_path)
        np.save(Path(work) / "warmup.npy", np.asarray(warmup_batch, dtype=np.float32))
        job = {
            "model_path": model_path,
            "metadata": (metadata.to_dict() if typed else dict(metadata)),
            "typed": typed,
            "import_modules": list(import_modules),
        }
        (Path(work) / "job.json").write_text(json.dumps(job, allow_nan=False), encoding="utf-8")
        done = run_cpu_child(_EXPORT_CHILD, [work, str(path)], timeout_s)
    if done.returncode != 0:
        raise ExportError(
            f"export in a CPU-only subprocess failed (exit {done.returncode}):\n"
            f"{done.stderr[-3000:]}"
        )
    return Path(path)
