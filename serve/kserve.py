"""KServe V2 / Open Inference Protocol routes under `/v2` (`specs/tf-serving.md` §5).

    GET  /v2                                        server metadata
    GET  /v2/health/live                            {"live": true}            (no token needed)
    GET  /v2/health/ready                           200 {"ready": true} when every model has an
                                                    AVAILABLE version, else 503 (no token needed)
    GET  /v2/models/<m>[/versions/<v>]              model metadata (serving_default's tensors)
    GET  /v2/models/<m>[/versions/<v>]/ready        200 {"name", "ready": true}; 503 otherwise
    POST /v2/models/<m>[/versions/<v>]/infer        V2 tensors in, V2 tensors out

Errors are `{"error": ...}`: unknown model 404 (`Model with name <m> does not exist.`), bad
input 400, not ready 503. The version named in the URL must be numeric.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from serve import json_tensor as jt
from serve.errors import Code, ServingError, invalid

if TYPE_CHECKING:
    from serve.rest import RestApp, _Outcome

SERVER_NAME = "pulsecast"
SERVER_VERSION = "0.1.0"
_MODEL = re.compile(r"/v2/models/([^/:]+)(?:/versions/([^/:]+))?(?:/(ready|infer))?")

# V2 datatype <-> TF dtype <-> numpy
V2_TO_TF = {
    "BOOL": "DT_BOOL", "UINT8": "DT_UINT8", "UINT16": "DT_UINT16", "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64", "INT8": "DT_INT8", "INT16": "DT_INT16", "INT32": "DT_INT32",
    "INT64": "DT_INT64", "FP16": "DT_HALF", "FP32": "DT_FLOAT", "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}
TF_TO_V2 = {v: k for k, v in V2_TO_TF.items()}
_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


class KServeRoutes:
    """The `/v2` handlers of one `RestApp` (sharing its manager, pool and body reader)."""

    def __init__(self, app: RestApp) -> None:
        self.app = app

    def _outcome(self, status: int, doc: Any, model: str = "", route: str = "v2") -> _Outcome:
        from serve.rest import _Outcome

        return _Outcome(status, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), model,
                        route)

    def server_ready(self) -> _Outcome:
        names = self.app.manager.model_names()
        ready = bool(names) and all(self.app.manager.is_ready(n) for n in names)
        return self._outcome(200 if ready else 503, {"ready": ready}, route="ready")

    async def handle(self, method: str, path: str, scope: dict, receive: Any) -> _Outcome:
        from serve.rest import HttpError

        if path == "/v2" and method == "GET":
            return self._outcome(200, {"name": SERVER_NAME, "version": SERVER_VERSION,
                                       "extensions": []})
        match = _MODEL.fullmatch(path)
        if not match:
            raise HttpError(404, f"Not found: {method} {path[:512]}")
        name, version, action = match.groups()
        malformed = invalid(f"Malformed request: {method} {path[:512]}")
        from serve.rest import _model_ref

        if version is not None and not version.isdigit():
            raise invalid(f"Model version must be an integer, got {version[:64]!r}")
        name, version_num, _ = _model_ref(name, version, None, malformed)
        scope["pulsecast.model"], scope["pulsecast.route"] = name, action or "v2_metadata"
        if action == "infer":
            if method != "POST":
                raise HttpError(405, f"Method not allowed: {method} {path[:512]}")
            body = await self.app.read_body(scope, receive)
            return await self.app.run_sync(self._infer, name, version_num, body)
        if method != "GET":
            raise HttpError(405, f"Method not allowed: {method} {path[:512]}")
        if action == "ready":
            return self._model_ready(name, version_num)
        return await self.app.run_sync(self._model_metadata, name, version_num)

    def _known(self, name: str) -> None:
        if name not in self.app.manager.model_names():
            raise ServingError(Code.NOT_FOUND, f"Model with name {name} does not exist.")

    def _model_ready(self, name: str, version: int | None) -> _Outcome:
        self._known(name)
        versions = self.app.manager.available_versions(name)
        ready = bool(versions) if version is None else version in versions
        if not ready:
            raise ServingError(Code.UNAVAILABLE, f"Model with name {name} is not ready.")
        return self._outcome(200, {"name": name, "ready": True}, name, "ready")

    def _acquire(self, name: str, version: int | None) -> Any:
        self._known(name)
        return self.app.manager.acquire(name, version)

    def _model_metadata(self, name: str, version: int | None) -> _Outcome:
        with self._acquire(name, version) as servable:
            sig = servable.signatures.get(jt.DEFAULT_SIGNATURE)
            doc = {
                "name": name,
                "versions": [str(v) for v in self.app.manager.available_versions(name)],
                "platform": "tensorflow_savedmodel",
                "inputs": _tensors_meta(sig.inputs) if sig else [],
                "outputs": _tensors_meta(sig.outputs) if sig else [],
            }
        return self._outcome(200, doc, name, "v2_metadata")

    def _infer(self, name: str, version: int | None, body: bytes) -> _Outcome:
        doc = jt.parse_json(body)
        with self._acquire(name, version) as servable:
            sig = servable.signatures.get(jt.DEFAULT_SIGNATURE)
            if sig is None:
                raise invalid(f"model {name} has no {jt.DEFAULT_SIGNATURE} signature")
            inputs = _decode_inputs(doc, sig.inputs)
            wanted = _requested_outputs(doc, sig.outputs)
            outputs = servable.predict(jt.DEFAULT_SIGNATURE, inputs, tuple(wanted))
            served = servable.version
        result: dict[str, Any] = {
            "model_name": name,
            "model_version": str(served),
            "outputs": [_encode_output(k, outputs[k]) for k in (wanted or sorted(outputs))],
        }
        if isinstance(doc.get("id"), str):
            result["id"] = doc["id"]
        return self._outcome(200, result, name, "infer")


def _tensors_meta(infos: Any) -> list[dict]:
    return [
        {"name": alias, "datatype": TF_TO_V2.get(info.dtype, info.dtype),
         "shape": list(info.shape) if info.shape is not None else [-1]}
        for alias, info in infos.items()
    ]


def _decode_inputs(doc: dict, infos: Any) -> dict[str, np.ndarray]:
    tensors = doc.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise invalid("'inputs' must be a non-empty list of tensors")
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
        if datatype not in V2_TO_TF:
            raise invalid(f"input {name}: unsupported datatype {datatype!r:.40}")
        out[name] = _tensor(name, shape, datatype, data)
    missing = sorted(set(infos) - set(out))
    if missing:
        raise invalid(f"missing input(s) {missing}")
    return out


def _tensor(name: str, shape: list[int], datatype: str, data: Any) -> np.ndarray:
    size = int(np.prod(shape)) if shape else 1
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
            arr = np.asarray(flat, dtype=_NUMPY[datatype])
        except (OverflowError, ValueError):
            raise invalid(f"input {name}: a value does not fit {datatype}") from None
    if arr.size != size:
        raise invalid(f"input {name}: shape {shape} needs {size} values, got {arr.size}")
    return arr.reshape(shape)


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
    datatype = {"f": {2: "FP16", 4: "FP32", 8: "FP64"}.get(arr.dtype.itemsize, "FP64"),
                "b": "BOOL", "O": "BYTES", "S": "BYTES", "U": "BYTES"}.get(arr.dtype.kind)
    if arr.dtype.kind in "iu":
        datatype = f"{'UINT' if arr.dtype.kind == 'u' else 'INT'}{arr.dtype.itemsize * 8}"
    flat = arr.ravel()
    if arr.dtype.kind in "OSU":
        data: Any = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                     for v in flat.tolist()]
    elif arr.dtype.kind == "f":
        data = np.ascontiguousarray(flat.astype(np.float32 if datatype != "FP64" else np.float64))
    else:
        data = np.ascontiguousarray(flat)
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}
