"""TF Serving's JSON tensor codec: request JSON -> numpy per signature, numpy -> response JSON.

Pure functions, no TensorFlow, no I/O. The rules and every error text follow TF Serving's
`tensorflow_serving/util/json_tensor.cc` (see `../shared/specs/tf-serving.md` §1.3, §1.6, §1.7):

- predict requests are row (`instances`: a non-empty list, stacked on a new dim 0) or columnar
  (`inputs`: one value/list, or an object with one entry per signature input); the dtype of each
  input comes from the signature, the shape from the JSON nesting (the first element at each level
  sets the size, every other list must match); `{"b64": ...}` is a DT_STRING value.
- responses are `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar); with one output
  tensor its name is dropped. Floats are written as TF Serving does (`3.0`, never `3`; bare `NaN`,
  `Infinity`, `-Infinity`). Finite float arrays go through orjson, whose shortest round-trip text is
  numerically identical to TF Serving's `%g`/`%.9g` text (`0.12345679` vs `0.123456791`); arrays
  holding NaN or infinities, 0-d tensors and strings use the exact TF Serving writer below.
- classify/regress requests are `{"signature_name"?, "context"?, "examples": [...]}`; responses
  are `{"results": ...}`.

Hot path: a numeric request is parsed by orjson and converted by one `np.asarray`; anything that
does not pass that cheap check (bools, strings, ragged lists, NaN tokens) re-runs through the
element-by-element reference path, which produces TF Serving's exact error for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serve.errors import Code, ServingError, invalid
from serve.types import TensorInfo

DEFAULT_SIGNATURE = "serving_default"
_B64 = "b64"
_BYTES_SUFFIX = "_bytes"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

# DataTypeString() of each supported dtype, and the numpy dtype it decodes to.
DTYPE_NAMES: dict[str, str] = {
    "DT_FLOAT": "float", "DT_DOUBLE": "double", "DT_INT32": "int32", "DT_INT16": "int16",
    "DT_INT8": "int8", "DT_UINT8": "uint8", "DT_STRING": "string", "DT_INT64": "int64",
    "DT_BOOL": "bool", "DT_UINT32": "uint32", "DT_UINT64": "uint64", "DT_HALF": "half",
    "DT_BFLOAT16": "bfloat16", "DT_COMPLEX64": "complex64", "DT_COMPLEX128": "complex128",
    "DT_UINT16": "uint16", "DT_RESOURCE": "resource", "DT_VARIANT": "variant",
}
NUMPY_DTYPES: dict[str, Any] = {
    "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_INT32": np.int32,
    "DT_INT16": np.int16, "DT_INT8": np.int8, "DT_UINT8": np.uint8, "DT_STRING": np.object_,
    "DT_INT64": np.int64, "DT_BOOL": np.bool_, "DT_UINT32": np.uint32, "DT_UINT64": np.uint64,
}
_INT32 = (-(2**31), 2**31 - 1)
_INT_RANGES: dict[str, tuple[int, int]] = {
    "DT_INT32": _INT32, "DT_INT16": _INT32, "DT_INT8": _INT32, "DT_UINT8": _INT32,
    "DT_INT64": (-(2**63), 2**63 - 1), "DT_UINT32": (0, 2**32 - 1), "DT_UINT64": (0, 2**64 - 1),
}
# Largest integer a float type holds exactly (IsLosslessDecimal in json_tensor.cc).
_MAX_EXACT_INT = {"DT_FLOAT": 2**24 - 1, "DT_DOUBLE": 2**53 - 1}
_FLOAT_MAX = {"DT_FLOAT": float(np.finfo(np.float32).max), "DT_DOUBLE": float("inf")}


@dataclass(frozen=True)
class PredictRequest:
    """A decoded predict request: `row` is True for `instances`, False for `inputs`."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    row: bool


@dataclass(frozen=True)
class ExamplesRequest:
    """A decoded classify/regress request: each example a {feature: list of values} dict."""

    signature_name: str
    examples: list[dict[str, list[Any]]]
    context: dict[str, list[Any]] | None


# ---------------------------------------------------------------------------------------------
# JSON text in

# Python's json error texts -> rapidjson's GetParseError_En texts (what TF Serving prints).
_PARSE_ERRORS = (
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Extra data", "The document root must not be followed by other values."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid \\u", "Incorrect hex digit after \\u escape in string."),
)


def _parse_error_text(text: str, err: json.JSONDecodeError) -> str:
    if err.msg.startswith("Expecting ',' delimiter"):
        # rapidjson says which container was left unclosed.
        closer = _innermost_open(text[: err.pos])
        return (
            "Missing a comma or '}' after an object member." if closer == "{"
            else "Missing a comma or ']' after an array element."
        )
    for prefix, rapid in _PARSE_ERRORS:
        if err.msg.startswith(prefix):
            return rapid
    return "Invalid value."


def _innermost_open(text: str) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def parse_json(body: bytes | str) -> dict[str, Any]:
    """The request body as a JSON object; NaN/Infinity tokens allowed (TF Serving's parser flags).

    Raises INVALID_ARGUMENT with TF Serving's texts: empty document, parse error with offset,
    top level not an object.
    """
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_json_slow(body)
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def _parse_json_slow(body: bytes | str) -> Any:
    """The stdlib parser: slower, but it accepts NaN/Infinity and names the error's offset."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    except UnicodeDecodeError as err:
        raise invalid(
            f"JSON Parse error: Invalid encoding in string. at offset: {err.start}"
        ) from None
    if not text.strip():
        raise invalid(f"JSON Parse error: The document is empty. at offset: {len(text)}")
    try:
        return json.loads(text, parse_constant=_parse_constant)
    except json.JSONDecodeError as err:
        raise invalid(
            f"JSON Parse error: {_parse_error_text(text, err)} at offset: {err.pos}"
        ) from None
    except RecursionError:
        raise invalid("JSON Parse error: Nesting too deep. at offset: 0") from None


def _parse_constant(token: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[token]


# ---------------------------------------------------------------------------------------------
# Values as TF Serving prints them inside error messages (rapidjson PrettyWriter, 4 spaces)


def value_to_string(val: Any, indent: int = 0) -> str:
    """JsonValueToString(): how TF Serving quotes a JSON value in an error message."""
    pad = "    " * (indent + 1)
    end = "    " * indent
    if indent >= 64 and isinstance(val, dict | list) and val:
        # hostile nesting (orjson accepts 1024 levels) must not blow the stack in an error text
        return "[...]" if isinstance(val, list) else "{...}"
    if isinstance(val, dict):
        if not val:
            return "{}"
        items = ",\n".join(
            f"{pad}{_json_string(str(k))}: {value_to_string(v, indent + 1)}" for k, v in val.items()
        )
        return "{\n" + items + "\n" + end + "}"
    if isinstance(val, list):
        if not val:
            return "[]"
        items = ",\n".join(pad + value_to_string(v, indent + 1) for v in val)
        return "[\n" + items + "\n" + end + "]"
    if val is None:
        return "null"
    if val is True:
        return "true"
    if val is False:
        return "false"
    if isinstance(val, float):
        return format_double(val)
    if isinstance(val, int):
        return str(val)
    return _json_string(str(val))


def _json_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _json_type(val: Any) -> str:
    """JsonTypeString(): rapidjson's type names."""
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _type_error(val: Any, dtype: str) -> ServingError:
    return invalid(
        f"JSON Value: {value_to_string(val)} Type: {_json_type(val)} "
        f"is not of expected type: {DTYPE_NAMES.get(dtype, dtype)}"
    )


# ---------------------------------------------------------------------------------------------
# Predict request -> numpy


def signature_name_of(doc: Mapping[str, Any]) -> str:
    """The request's `signature_name` ("" when absent); a non-string gives TF Serving's 400."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(
            f"JSON Value: {value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def decode_predict_request(
    doc: Mapping[str, Any],
    get_inputs: Callable[[str], Mapping[str, TensorInfo]],
    *,
    fast: bool = True,
) -> PredictRequest:
    """FillPredictRequestFromJson(): `doc` (a parsed object) -> {input alias: array}.

    `get_inputs(signature_name)` returns the signature's inputs; it runs after the signature name
    is read and before the tensors are, so unknown models and signatures fail first, as in
    TF Serving. The name passed is the resolved one (`serving_default` for "").
    `fast=False` skips the one-`np.asarray` path: pass it when the body holds `true`/`false`,
    which numpy would silently turn into numbers (TF Serving rejects a bool in a float tensor).
    """
    signature = signature_name_of(doc) or DEFAULT_SIGNATURE
    infos = get_inputs(signature)
    if not infos:
        raise invalid(f"Failed to get input map for signature: {signature}")
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise invalid(
            f"JSON Value: {value_to_string(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid(
                f"JSON Value: {value_to_string(doc)} Expecting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid(f"JSON Value: {value_to_string(doc)} No values in 'instances' array")
        return PredictRequest(signature, _decode_instances(instances, infos, fast), row=True)
    if has_inputs:
        return PredictRequest(signature, _decode_inputs(doc["inputs"], infos, fast), row=False)
    raise invalid("Missing 'inputs' or 'instances' key")


def _is_b64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get(_B64), str)


def _is_element_object(val: Any) -> bool:
    return isinstance(val, dict) and not _is_b64(val)


def _decode_instances(
    instances: list[Any], infos: Mapping[str, TensorInfo], fast: bool
) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if fast and not _is_element_object(instances[0]):
        name = next(iter(infos))
        arr = _fast_array(instances, infos[name].dtype)
        if arr is not None:
            return {name: arr}
    names = sorted(infos)
    if _is_element_object(instances[0]):
        return _decode_object_instances(instances, infos, names)
    name = next(iter(infos))
    items = []
    shape: list[int] | None = None
    for i, elem in enumerate(instances):
        if _is_element_object(elem):
            raise invalid(f"Expecting value/list but got object at item {i} of input list")
        try:
            values, elem_shape = _fill(elem, infos[name].dtype)
            _check_same(shape, elem_shape, len(values), items)
        except ServingError as err:
            raise invalid(
                f"Failed to process element: {i} of 'instances' list. "
                f"Error: {_status_string(err)}"
            ) from None
        shape = elem_shape
        items.append(values)
    return {name: _stack(items, [len(instances), *shape], infos[name].dtype)}


def _decode_object_instances(
    instances: list[Any], infos: Mapping[str, TensorInfo], names: list[str]
) -> dict[str, np.ndarray]:
    values: dict[str, list[list[Any]]] = {n: [] for n in names}
    shapes: dict[str, list[int]] = {}
    for i, elem in enumerate(instances):
        if not _is_element_object(elem):
            raise invalid(f"Expecting object but got list at item {i} of input list")
        for key, item in elem.items():
            try:
                if key not in infos:
                    raise invalid(f"JSON object: does not have named input: {key}")
                flat, shape = _fill(item, infos[key].dtype)
                _check_same(shapes.get(key), shape, len(flat), values[key])
            except ServingError as err:
                raise invalid(
                    f"Failed to process element: {i} key: {key} of 'instances' list. "
                    f"Error: {_status_string(err)}"
                ) from None
            shapes.setdefault(key, shape)
            values[key].append(flat)
        if set(elem) != set(names):
            raise invalid(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{value_to_string(elem)} keys must be equal to: {','.join(names)}"
            )
    return {
        n: _stack(values[n], [len(instances), *shapes[n]], infos[n].dtype) for n in names
    }


def _check_same(
    shape: list[int] | None, new: list[int], size: int, previous: list[list[Any]]
) -> None:
    if shape is None:
        return
    expected = len(previous[0]) if previous else math.prod(shape)
    if size != expected:
        raise invalid(f"Expecting tensor size: {expected} but got: {size}")
    if shape != new:
        raise invalid(
            f"Expecting shape [{','.join(map(str, shape))}] but got: [{','.join(map(str, new))}]"
        )


def _status_string(err: ServingError) -> str:
    """Status::ToString() of a nested error: `INVALID_ARGUMENT: <message>`."""
    return f"{err.code.name}: {err.message}"


def _decode_inputs(
    val: Any, infos: Mapping[str, TensorInfo], fast: bool
) -> dict[str, np.ndarray]:
    if not isinstance(val, dict) or _is_b64(val):
        if len(infos) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name, info = next(iter(infos.items()))
        return {name: _to_array(val, info.dtype, fast)}
    out = {}
    for name, info in infos.items():
        if name not in val:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _to_array(val[name], info.dtype, fast)
    return out


def _to_array(val: Any, dtype: str, fast: bool) -> np.ndarray:
    arr = _fast_array(val, dtype) if fast else None
    if arr is not None:
        return arr
    flat, shape = _fill(val, dtype)
    return _stack([flat], shape, dtype)


def _fast_array(val: Any, dtype: str) -> np.ndarray | None:
    """One `np.asarray` for a well-formed numeric tensor; None sends it to the reference path.

    Bools, strings, objects, ragged lists and out-of-range numbers all fail one of the checks.
    """
    if dtype not in _MAX_EXACT_INT and dtype not in _INT_RANGES:
        return None
    if not isinstance(val, list):
        return None
    try:
        arr = np.asarray(val)
    except (ValueError, OverflowError, TypeError):
        return None
    kind = arr.dtype.kind
    if kind == "f" and dtype in _MAX_EXACT_INT:
        if dtype == "DT_FLOAT":
            with np.errstate(over="ignore", invalid="ignore"):
                out = arr.astype(np.float32)
            # a finite double beyond float32's range is a lossy conversion: reference path
            if np.isinf(out).any() and not np.array_equal(np.isinf(out), np.isinf(arr)):
                return None
            return out
        return arr
    if kind in "iu":
        if dtype in _MAX_EXACT_INT:
            lo, hi = -_MAX_EXACT_INT[dtype], _MAX_EXACT_INT[dtype]
        else:
            lo, hi = _INT_RANGES[dtype]
        if arr.size and (arr.max() > hi or arr.min() < lo):
            return None
        return arr.astype(NUMPY_DTYPES[dtype])
    return None


def _dense_shape(val: Any) -> list[int]:
    """GetDenseTensorShape(): each level's size from its first element."""
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fill(val: Any, dtype: str) -> tuple[list[Any], list[int]]:
    """FillTensorProto(): flat values of one JSON tensor, and its shape; TF Serving's errors."""
    shape = _dense_shape(val)
    rank = len(shape)
    if rank > 64:  # numpy's limit; deeper nesting was a 500 (ValueError in reshape)
        raise invalid(f"JSON tensor has {rank} dimensions; at most 64 are supported")
    out: list[Any] = []
    # explicit stack (value, level): no recursion limit on deep, hostile nesting
    stack: list[tuple[Any, int]] = [(val, 0)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, list):
            if level != rank:
                raise invalid(
                    f"JSON Value: {value_to_string(item)} found at incorrect level: {level + 1} "
                    f"in the JSON DOM. Expected at level: {rank}"
                )
            out.append(_scalar(item, dtype))
            continue
        if level >= rank:
            raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(item) != shape[level]:
            raise invalid(
                f"Encountered list at unexpected size: {len(item)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        stack.extend((v, level + 1) for v in reversed(item))
    return out, shape


def _scalar(val: Any, dtype: str) -> Any:
    """AddValueToTensor(): one JSON leaf as a value of `dtype`, or TF Serving's error."""
    if isinstance(val, dict):
        if dtype != "DT_STRING":
            raise _type_error(val, dtype)
        if not _is_b64(val):
            raise invalid(
                f"JSON Value: {value_to_string(val)} not formatted correctly for base64 data"
            )
        try:
            return base64.b64decode(val[_B64], validate=True)
        except (binascii.Error, ValueError):
            raise invalid("Unable to base64 decode") from None
    if dtype in _MAX_EXACT_INT:
        if isinstance(val, bool) or not isinstance(val, int | float):
            raise _type_error(val, dtype)
        if not _lossless(val, dtype):
            target = "float" if dtype == "DT_FLOAT" else "double"
            raise invalid(
                f"Cannot convert JSON value: {value_to_string(val)} to {target} "
                "without loss of precision."
            )
        return val
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
            raise _type_error(val, dtype)
        return val
    if dtype == "DT_STRING":
        if not isinstance(val, str):
            raise _type_error(val, dtype)
        return val.encode("utf-8")
    if dtype == "DT_BOOL":
        if not isinstance(val, bool):
            raise _type_error(val, dtype)
        return val
    raise ServingError(
        Code.UNIMPLEMENTED,
        f"Conversion of JSON Value: {value_to_string(val)} to type: "
        f"{DTYPE_NAMES.get(dtype, dtype)}",
    )


def _lossless(val: int | float, dtype: str) -> bool:
    if isinstance(val, float):
        return not math.isfinite(val) or abs(val) <= _FLOAT_MAX[dtype]
    return abs(val) <= _MAX_EXACT_INT[dtype]


def _stack(flats: list[list[Any]], shape: list[int], dtype: str) -> np.ndarray:
    np_dtype = NUMPY_DTYPES.get(dtype, np.object_)
    flat = [v for values in flats for v in values]
    if np_dtype is np.object_:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    else:
        arr = np.asarray(flat, dtype=np_dtype)
    return arr.reshape(shape)


# ---------------------------------------------------------------------------------------------
# numpy -> predict response


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
                f"{_json_string(name)}:{_write_tensor(arr[i], _is_bytes(name, arr))}"
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
        f"{_json_string(name)}:{_write_tensor(arr, _is_bytes(name, arr))}"
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


def format_float(val: float) -> str:
    """WriteDecimal() for a float32 value: `%g` if it round-trips, else `%.9g`; `.0` for whole."""
    return _format_decimal(float(val), lambda s: np.float32(s) == np.float32(val), 9)


def format_double(val: float) -> str:
    """WriteDecimal() for a float64 value: `%g` if it round-trips, else `%.17g`."""
    return _format_decimal(float(val), lambda s: float(s) == float(val), 17)


def _format_decimal(val: float, roundtrips: Callable[[str], bool], digits: int) -> str:
    if math.isnan(val):
        return "NaN"
    if math.isinf(val):
        return "-Infinity" if val < 0 else "Infinity"
    text = f"{val:g}"
    if not roundtrips(text):
        text = f"{val:.{digits}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


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
    return _json_string(raw.decode("utf-8", errors="replace"))


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


# ---------------------------------------------------------------------------------------------
# Classify / regress


def decode_examples_request(doc: Mapping[str, Any], method: str = "classify") -> ExamplesRequest:
    """FillClassifyRegressRequestFromJson(): examples as {feature: [values]}, b64 decoded."""
    signature = signature_name_of(doc) or DEFAULT_SIGNATURE
    context = None
    if "context" in doc:
        context = _example(doc["context"])
    if "examples" not in doc:
        # TF Serving's text says "classify" for regress too.
        raise invalid(
            f"JSON Value: {value_to_string(doc)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid(
            f"JSON Value: {value_to_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid(f"JSON Value: {value_to_string(doc)} 'examples' value is an empty array")
    return ExamplesRequest(signature, [_example(e) for e in examples], context)


def _example(val: Any) -> dict[str, list[Any]]:
    """MakeExampleFromJsonObject(): int/bool -> int64, fractional -> float, str/b64 -> bytes."""
    if not isinstance(val, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(val)}")
    out: dict[str, list[Any]] = {}
    for name, content in val.items():
        kind = ""
        values: list[Any] = []
        for item in content if isinstance(content, list) else [content]:
            item_kind, value = _feature_value(name, item)
            if kind and item_kind != kind:
                raise invalid(
                    f"Unexpected element type in feature: {name} expecting type: {kind}"
                )
            kind = item_kind
            values.append(value)
        out[name] = values
    return out


def _feature_value(name: str, val: Any) -> tuple[str, Any]:
    if val is None or isinstance(val, list) or (isinstance(val, dict) and not _is_b64(val)):
        raise invalid(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(val)}"
        )
    if isinstance(val, bool):
        return "int64", int(val)
    if isinstance(val, dict):
        return "bytes", _scalar(val, "DT_STRING")
    if isinstance(val, str):
        return "bytes", val.encode("utf-8")
    if isinstance(val, float):
        if not _lossless(val, "DT_FLOAT"):
            raise invalid(
                f"Cannot convert JSON value: {value_to_string(val)} to float without loss of "
                "precision."
            )
        return "float", val
    if val > 2**63 - 1:
        raise invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
    return "int64", val


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
            "[" + _json_string(_label_text(label)) + "," + format_float(score) + "]"
            for label, score in classes
        ]
        rows.append("[" + ",".join(pairs) + "]")
    return _write_doc("results", _Raw("[" + ",".join(rows) + "]"))


def _label_text(label: Any) -> str:
    return label.decode("utf-8", errors="replace") if isinstance(label, bytes) else str(label)


def error_body(message: str) -> bytes:
    """`{"error": message}` as bytes."""
    return orjson.dumps({"error": message})

