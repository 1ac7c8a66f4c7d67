"""KServe V2 / Open Inference Protocol routes under `/v2` (`specs/tf-serving.md` §5).

    GET  /v2                                        server metadata
    GET  /v2/health/live                            {"live": true}            (no token needed)
    GET  /v2/health/ready                           200 {"ready": true} when every model has an
                                                    AVAILABLE version, else 503 (no token needed)
    GET  /v2/models/<m>[/versions/<v>]              model metadata (serving_default's tensors)
    GET  /v2/models/<m>[/versions/<v>]/ready        200 {"name", "ready": true}; 503 otherwise
    POST /v2/models/<m>[/versions/<v>]/infer        V2 tensors in, V2 tensors out

Errors are `{"error": ...}`: unknown model 404 (`Model with name <m> does not exist.`), bad
input 400, not ready 503. The version named in the URL must be numeric. A declared shape is
checked before any data is read: at most 64 dims, and its bytes (the signature dtype's size per
element, summed over the inputs) within `max_tensor_bytes`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from models.layout import SIGNATURE_KEY
from serve.errors import Code, ServingError, invalid
from serve.http.plumbing import (
    HttpError,
    Outcome,
    Receive,
    Workers,
    json_outcome,
    model_ref,
    read_body,
)
from serve.wire import json_tensor as jt
from serve.wire.dtypes import BY_NAME, BY_V2, from_numpy

SERVER_NAME = "pulsecast"
SERVER_VERSION = "0.1.0"
_MODEL = re.compile(r"/v2/models/([^/:]+)(?:/versions/([^/:]+))?(?:/(ready|infer))?")


class KServeRoutes:
    """The `/v2` handlers over a model manager, running blocking work on `workers`."""

    def __init__(self, manager: Any, workers: Workers, max_body_bytes: int,
                 max_tensor_bytes: int = jt.MAX_REQUEST_TENSOR_BYTES) -> None:
        self.manager = manager
        self.workers = workers
        self.max_body_bytes = max_body_bytes
        self.max_tensor_bytes = max_tensor_bytes

    def server_ready(self) -> Outcome:
        names = self.manager.model_names()
        ready = bool(names) and all(self.manager.is_ready(n) for n in names)
        return json_outcome(200 if ready else 503, {"ready": ready}, route="ready")

    async def handle(self, method: str, path: str, scope: dict, receive: Receive) -> Outcome:
        if path == "/v2" and method == "GET":
            return json_outcome(200, {"name": SERVER_NAME, "version": SERVER_VERSION,
                                      "extensions": []}, route="v2")
        match = _MODEL.fullmatch(path)
        if not match:
            raise HttpError(404, f"Not found: {method} {path[:512]}")
        name, version, action = match.groups()
        malformed = invalid(f"Malformed request: {method} {path[:512]}")
        if version is not None and not version.isdigit():
            raise invalid(f"Model version must be an integer, got {version[:64]!r}")
        name, version_num, _ = model_ref(name, version, None, malformed)
        scope["pulsecast.model"], scope["pulsecast.route"] = name, action or "v2_metadata"
        if action == "infer":
            if method != "POST":
                raise HttpError(405, f"Method not allowed: {method} {path[:512]}")
            body = await read_body(scope, receive, self.max_body_bytes)
            return await self.workers.run(self._infer, name, version_num, body)
        if method != "GET":
            raise HttpError(405, f"Method not allowed: {method} {path[:512]}")
        if action == "ready":
            return self._model_ready(name, version_num)
        return await self.workers.run(self._model_metadata, name, version_num)

    def _known(self, name: str) -> None:
        if name not in self.manager.model_names():
            raise ServingError(Code.NOT_FOUND, f"Model with name {name} does not exist.")

    def _model_ready(self, name: str, version: int | None) -> Outcome:
        self._known(name)
        versions = self.manager.available_versions(name)
        ready = bool(versions) if version is None else version in versions
        if not ready:
            raise ServingError(Code.UNAVAILABLE, f"Model with name {name} is not ready.")
        return json_outcome(200, {"name": name, "ready": True}, name, "ready")

    def _acquire(self, name: str, version: int | None) -> Any:
        self._known(name)
        return self.manager.acquire(name, version)

    def _model_metadata(self, name: str, version: int | None) -> Outcome:
        with self._acquire(name, version) as servable:
            sig = servable.signatures.get(SIGNATURE_KEY)
            doc = {
                "name": name,
                "versions": [str(v) for v in self.manager.available_versions(name)],
                "platform": "tensorflow_savedmodel",
                "inputs": _tensors_meta(sig.inputs) if sig else [],
                "outputs": _tensors_meta(sig.outputs) if sig else [],
            }
        return json_outcome(200, doc, name, "v2_metadata")

    def _infer(self, name: str, version: int | None, body: bytes) -> Outcome:
        doc = jt.parse_json(body)
        with self._acquire(name, version) as servable:
            sig = servable.signatures.get(SIGNATURE_KEY)
            if sig is None:
                raise invalid(f"model {name} has no {SIGNATURE_KEY} signature")
            inputs = _decode_inputs(doc, sig.inputs, max_tensor_bytes=self.max_tensor_bytes)
            wanted = _requested_outputs(doc, sig.outputs)
            outputs = servable.predict(SIGNATURE_KEY, inputs, tuple(wanted))
            served = servable.version
        result: dict[str, Any] = {
            "model_name": name,
            "model_version": str(served),
            "outputs": [_encode_output(k, outputs[k]) for k in (wanted or sorted(outputs))],
        }
        if isinstance(doc.get("id"), str):
            result["id"] = doc["id"]
        return json_outcome(200, result, name, "infer")


def _v2_datatype(dtype: str) -> str:
    """`DT_FLOAT` -> `FP32`; a dtype V2 cannot name keeps its TF name."""
    row = BY_NAME.get(dtype)
    return row.v2 if row is not None and row.v2 else dtype


def _tensors_meta(infos: Any) -> list[dict]:
    return [
        {"name": alias, "datatype": _v2_datatype(info.dtype),
         "shape": list(info.shape) if info.shape is not None else [-1]}
        for alias, info in infos.items()
    ]


def _decode_inputs(doc: dict, infos: Any, *,
                   max_tensor_bytes: int = jt.MAX_REQUEST_TENSOR_BYTES) -> dict[str, np.ndarray]:
    """V2 `inputs` -> {name: array}; each declared shape is checked and weighed before its data
    is read (TF dtype of the signature, Python ints: no overflow)."""
    tensors = doc.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise invalid("'inputs' must be a non-empty list of tensors")
    budget = jt.TensorBudget(max_tensor_bytes)
    out: dict[str, np.ndarray] = {}
    for t in tensors:
        if not isinstance(t, dict):
            raise invalid("each input must be an object with name, shape, datatype, data")
        name, shape, datatype, data = (t.get(k) for k in ("name", "shape", "datatype", "data"))
        if not isinstance(name, str) or name not in infos:
            raise invalid(f"unexpected input {name!r:.80}; the model takes {sorted(infos)}")
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                           for d in shape)):
            raise invalid(f"input {name}: 'shape' must be a list of non-negative integers")
        if len(shape) > jt.MAX_RANK:
            raise invalid(f"input {name}: shape {jt.shape_text(shape)} has {len(shape)} "
                          f"dimensions; at most {jt.MAX_RANK} are supported")
        if not isinstance(datatype, str) or datatype not in BY_V2:
            raise invalid(f"input {name}: unsupported datatype {datatype!r:.40}")
        budget.charge(name, shape, infos[name].dtype)
        out[name] = _tensor(name, shape, datatype, data)
    missing = sorted(set(infos) - set(out))
    if missing:
        raise invalid(f"missing input(s) {missing}")
    return out


def _tensor(name: str, shape: list[int], datatype: str, data: Any) -> np.ndarray:
    size = math.prod(shape)  # Python ints: np.prod wrapped [2**32, 2**32] to 0 (a 500)
    if datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(v, str) for v in flat):
            raise invalid(f"input {name}: BYTES data must be strings")
        arr = np.empty(len(flat), dtype=object)
        arr[:] = [v.encode("utf-8") for v in flat]
    else:
        flat = _flatten(data)
        bad = next((v for v in flat if isinstance(v, str | dict | type(None))
                    or (isinstance(v, bool) != (datatype == "BOOL"))), None)
        if bad is not None or (flat and not isinstance(flat[0], int | float)):
            raise invalid(f"input {name}: data of type {datatype} must hold numbers"
                          + (" (true/false)" if datatype == "BOOL" else ""))
        try:
            arr = np.asarray(flat, dtype=BY_V2[datatype].numpy_dtype())
        except (OverflowError, ValueError):
            raise invalid(f"input {name}: a value does not fit {datatype}") from None
    if arr.size != size:
        raise invalid(f"input {name}: shape {shape} needs {size} values, got {arr.size}")
    try:
        return arr.reshape(shape)
    except (ValueError, OverflowError):  # no data, dims past numpy's limit: [0, 2**62, 2**62]
        raise invalid(f"input {name}: shape {jt.shape_text(shape)} is larger than numpy can "
                      "hold") from None


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise invalid("'data' must be a (possibly nested) list")
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative: hostile nesting cannot exhaust the stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _requested_outputs(doc: dict, infos: Any) -> list[str]:
    requested = doc.get("outputs")
    if requested is None:
        return []
    if not isinstance(requested, list):
        raise invalid("'outputs' must be a list of {\"name\": ...} objects")
    names = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in infos:
            raise invalid(f"unexpected output {name!r:.80}; the model has {sorted(infos)}")
        names.append(name)
    return names


def _encode_output(name: str, arr: np.ndarray) -> dict:
    arr = np.asarray(arr)
    row = from_numpy(arr.dtype)
    datatype = row.v2 if row is not None else None
    if datatype is None and arr.dtype.kind == "f":  # wider than FP64: sent as FP64
        datatype = "FP64"
    flat = arr.ravel()
    if arr.dtype.kind in "OSU":
        data: Any = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                     for v in flat.tolist()]
    elif arr.dtype.kind == "f":
        data = np.ascontiguousarray(flat.astype(np.float32 if datatype != "FP64" else np.float64))
    else:
        data = np.ascontiguousarray(flat)
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}
