"""numpy -> TF Serving's JSON responses: predict, classify, regress, and `{"error": ...}`.

Predict responses are `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar); with one
output tensor its name is dropped (`MakeJsonFromTensors()` in `json_tensor.cc`). Finite float
arrays go through orjson, whose shortest round-trip text is numerically identical to TF Serving's
`%g`/`%.9g` text (`0.12345679` vs `0.123456791`); arrays holding NaN or infinities, 0-d tensors
and strings use the exact TF Serving writer below (`format_float`, bare `NaN`, `Infinity`).
An output named `*_bytes` holding strings is written as `{"b64": ...}`.
Classify/regress responses are `{"results": ...}`. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from serve.errors import bounded_message, invalid
from serve.wire.json_tensor.text import format_double, format_float, json_string

_BYTES_SUFFIX = "_bytes"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def encode_predict_response(outputs: Mapping[str, np.ndarray], row: bool) -> bytes:
    """MakeJsonFromTensors(): `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar).

    One output: its name is dropped. Several, row format: a list of {name: slice} objects, and
    every output must share dim 0 (TF Serving's 400 otherwise).
    """
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    arrays = {name: np.asarray(arr) for name, arr in sorted(outputs.items())}
    if row:
        batch = -1
        for name, arr in arrays.items():
            if arr.ndim == 0:
                raise invalid(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and arr.shape[0] != batch:
                raise invalid(
                    f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} "
                    f"expecting: {batch}"
                )
            batch = arr.shape[0]
        if len(arrays) == 1:
            ((name, arr),) = arrays.items()
            return _dumps_fast("predictions", arr) or _write_doc(
                "predictions", _Raw(_write_tensor(arr, _is_bytes(name, arr)))
            )
        if all(_orjson_ok(arr) for arr in arrays.values()):
            rows = [{name: arr[i] for name, arr in arrays.items()} for i in range(batch)]
            return orjson.dumps({"predictions": rows}, option=_NUMPY)
        rows_text = [
            "{" + ",".join(
                f"{json_string(name)}:{_write_tensor(arr[i], _is_bytes(name, arr))}"
                for name, arr in arrays.items()
            ) + "}"
            for i in range(batch)
        ]
        return _write_doc("predictions", _Raw("[" + ",".join(rows_text) + "]"))
    if len(arrays) == 1:
        ((name, arr),) = arrays.items()
        return _dumps_fast("outputs", arr) or _write_doc(
            "outputs", _Raw(_write_tensor(arr, _is_bytes(name, arr)))
        )
    if all(_orjson_ok(arr) for arr in arrays.values()):
        return orjson.dumps({"outputs": arrays}, option=_NUMPY)
    body = ",".join(
        f"{json_string(name)}:{_write_tensor(arr, _is_bytes(name, arr))}"
        for name, arr in arrays.items()
    )
    return _write_doc("outputs", _Raw("{" + body + "}"))


class _Raw(str):
    """Text already in JSON form."""


def _write_doc(key: str, raw: _Raw) -> bytes:
    return ('{"' + key + '":' + raw + "}").encode("utf-8")


def _orjson_ok(arr: np.ndarray) -> bool:
    """orjson writes this array exactly as TF Serving would (up to shortest round-trip digits)."""
    if arr.ndim == 0 or not arr.flags.c_contiguous:
        return False
    kind = arr.dtype.kind
    if kind == "f":
        return arr.dtype in (np.float32, np.float64) and bool(np.isfinite(arr).all())
    return kind in "iub"


def _dumps_fast(key: str, arr: np.ndarray) -> bytes | None:
    if _orjson_ok(arr):
        return orjson.dumps({key: arr}, option=_NUMPY)
    return None


def _is_bytes(name: str, arr: np.ndarray) -> bool:
    return arr.dtype.kind in "OSU" and name.endswith(_BYTES_SUFFIX)


def _write_tensor(arr: np.ndarray, as_bytes: bool) -> str:
    """AddTensorValues(): nested JSON lists of an array, values written one by one."""
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    if kind == "f":
        fmt = format_double if arr.dtype == np.float64 else format_float
        flat = [fmt(v) for v in arr.ravel().tolist()] if arr.dtype == np.float64 else [
            fmt(v) for v in arr.astype(np.float32).ravel()
        ]
    elif kind == "b":
        flat = ["true" if v else "false" for v in arr.ravel().tolist()]
    elif kind in "iu":
        flat = [str(v) for v in arr.ravel().tolist()]
    elif kind in "OSU":
        flat = [_write_string(v, as_bytes) for v in arr.ravel().tolist()]
    else:
        raise invalid(f"Failed to write JSON value for tensor type: {arr.dtype}")
    return _nest(flat, arr.shape)


def _write_string(val: Any, as_bytes: bool) -> str:
    raw = val if isinstance(val, bytes) else str(val).encode("utf-8")
    if as_bytes:
        return '{"b64":"' + base64.b64encode(raw).decode("ascii") + '"}'
    return json_string(raw.decode("utf-8", errors="replace"))


def _nest(flat: list[str], shape: tuple[int, ...]) -> str:
    """Flat value texts -> nested JSON lists of `shape` (row-major)."""
    if not shape:
        return flat[0]

    def build(level: int, offset: int) -> tuple[str, int]:
        size = shape[level]
        if level == len(shape) - 1:
            return "[" + ",".join(flat[offset : offset + size]) + "]", offset + size
        parts = []
        for _ in range(size):
            text, offset = build(level + 1, offset)
            parts.append(text)
        return "[" + ",".join(parts) + "]", offset

    return build(0, 0)[0]


def encode_regress_response(values: Any) -> bytes:
    """`{"results": [v, ...]}` with TF Serving's float text."""
    values = list(np.asarray(values, dtype=np.float32).ravel())
    if not values:
        raise invalid("Cannot convert empty RegressionResults to JSON")
    return _write_doc("results", _Raw("[" + ",".join(format_float(v) for v in values) + "]"))


def encode_classify_response(results: Any) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`: one list of (label, score) per example."""
    results = list(results)
    if not results:
        raise invalid("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classes in results:
        pairs = [
            "[" + json_string(_label_text(label)) + "," + format_float(score) + "]"
            for label, score in classes
        ]
        rows.append("[" + ",".join(pairs) + "]")
    return _write_doc("results", _Raw("[" + ",".join(rows) + "]"))


def _label_text(label: Any) -> str:
    return label.decode("utf-8", errors="replace") if isinstance(label, bytes) else str(label)


def error_body(message: str) -> bytes:
    """`{"error": message}` as bytes, the message cut to `serve.errors.MAX_ERROR_CHARS` (a
    `ServingError`'s already is; this covers every other text that reaches a client)."""
    return orjson.dumps({"error": bounded_message(message)})
