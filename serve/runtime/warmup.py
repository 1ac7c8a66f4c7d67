"""Warmup: the recorded requests of `assets.extra/tf_serving_warmup_requests`, replayed at load.

The file is a TFRecord of `tensorflow.serving.PredictionLog` (predict, classify, regress or
multi_inference logs), at most 1000 records (`saved_model_warmup_util.cc`). `load_servable`
replays every record once through the SavedModel before the servable serves (before AVAILABLE, as
TF Serving), so the first real request finds the graph initialized; a record that fails makes the
whole load fail (`LoadError` naming the record). The predict inputs are also what the XLA runtime
is verified against, later, in the background (`predict_batches`, `serve.runtime.xla`). Predict
inputs are decoded by the server's own TensorProto decoder (`serve.wire.tensor_proto`), exactly
as a gRPC request's would be. Reads only; TensorFlow is imported inside functions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.layout import SIGNATURE_KEY, WARMUP_RELPATH
from serve.errors import Code, ServingError, invalid
from serve.runtime import LoadError
from serve.types import CLASSIFY_METHOD
from serve.wire.examples import examples_of
from serve.wire.tensor_proto import decode_tensor

log = logging.getLogger(__name__)

MAX_WARMUP_RECORDS = 1000  # kMaxNumRecords in saved_model_warmup_util.cc


def read_warmup_records(path: str | Path) -> list[Any]:
    """The PredictionLog records of `<path>/assets.extra/tf_serving_warmup_requests`; [] when
    absent. More than 1000 records is a load error, as in TF Serving."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    file = Path(path) / WARMUP_RELPATH
    if not file.is_file():
        log.info("No warmup data file found at %s", file)
        return []
    records = []
    try:
        for raw in tf.data.TFRecordDataset(str(file)).as_numpy_iterator():
            if len(records) == MAX_WARMUP_RECORDS:
                raise LoadError(
                    Code.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) "
                    f"at {file}",
                )
            records.append(prediction_log_pb2.PredictionLog.FromString(raw))
    except tf.errors.OpError as err:
        raise LoadError(Code.DATA_LOSS, f"Failed to read warmup data file {file}: {err.message}"
                        ) from err
    return records


def _predict_inputs(request: Any) -> dict[str, np.ndarray]:
    return {alias: decode_tensor(proto, alias) for alias, proto in request.inputs.items()}


def replay_warmup(servable: Any, records: Sequence[Any]) -> int:
    """Run every record on `servable` (predict, classify, regress, multi_inference); returns how
    many. Raises `LoadError` INVALID_ARGUMENT `warmup record <i> failed: ...` on the first
    failure."""
    for i, record in enumerate(records):
        kind = record.WhichOneof("log_type")
        try:
            if kind == "predict_log":
                req = record.predict_log.request
                servable.predict(req.model_spec.signature_name, _predict_inputs(req),
                                 tuple(req.output_filter))
            elif kind in ("classify_log", "regress_log"):
                req = getattr(record, kind).request
                run = servable.classify if kind == "classify_log" else servable.regress
                run(req.model_spec.signature_name, *examples_of(req.input))
            elif kind == "multi_inference_log":
                req = record.multi_inference_log.request
                examples, context = examples_of(req.input)
                for task in req.tasks:
                    run = servable.classify if task.method_name == CLASSIFY_METHOD \
                        else servable.regress
                    run(task.model_spec.signature_name, examples, context)
            else:
                raise invalid(f"Unsupported log_type for warmup: {kind}")
        except ServingError as err:
            raise LoadError(
                Code.INVALID_ARGUMENT, f"warmup record {i} failed: {err.message}"
            ) from err
    return len(records)


def predict_batches(records: Sequence[Any]) -> list[dict[str, np.ndarray]]:
    """The inputs of the records that predict on `serving_default`: the batches the XLA runtime
    is checked against (`serve.runtime.xla.compile_verified`)."""
    batches = []
    for r in records:
        if r.WhichOneof("log_type") == "predict_log":
            req = r.predict_log.request
            if (req.model_spec.signature_name or SIGNATURE_KEY) == SIGNATURE_KEY:
                try:
                    batches.append(_predict_inputs(req))
                except ServingError:  # reported by `replay_warmup`, naming the record
                    continue
    return batches
