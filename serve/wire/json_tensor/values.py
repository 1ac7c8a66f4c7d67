"""One JSON tensor value -> a typed numpy array, by TF Serving's per-dtype rules.

`to_array(value, dtype)` is the whole path for one tensor: `fast_array` (one `np.asarray` for a
well-formed numeric tensor: what almost every request is) or, when that declines, the reference
path `fill` + `stack`, element by element, which gives TF Serving's exact error for any bad value
(`FillTensorProto()` / `AddValueToTensor()` in `json_tensor.cc`): a bool in a float tensor, an
out-of-range integer, a float that loses precision, a ragged list, an unsupported dtype.
`{"b64": ...}` is a DT_STRING value. `TensorBudget` charges each tensor its bytes from its
shape before it is decoded, so one request's tensors cannot outweigh the server's limit
(`ServerSettings.max_request_tensor_bytes`). Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from serve.errors import Code, ServingError, invalid
from serve.wire.dtypes import BY_NAME, dtype_word, numpy_dtype
from serve.wire.json_tensor.text import json_type, value_to_string

B64 = "b64"
_INT32 = (-(2**31), 2**31 - 1)
_INT_RANGES: dict[str, tuple[int, int]] = {
    "DT_INT32": _INT32, "DT_INT16": _INT32, "DT_INT8": _INT32, "DT_UINT8": _INT32,
    "DT_INT64": (-(2**63), 2**63 - 1), "DT_UINT32": (0, 2**32 - 1), "DT_UINT64": (0, 2**64 - 1),
}
# Largest integer a float type holds exactly (IsLosslessDecimal in json_tensor.cc).
_MAX_EXACT_INT = {"DT_FLOAT": 2**24 - 1, "DT_DOUBLE": 2**53 - 1}
_FLOAT_MAX = {"DT_FLOAT": float(np.finfo(np.float32).max), "DT_DOUBLE": float("inf")}
# What JSON can carry; any other dtype's values are UNIMPLEMENTED (an empty list: an object array).
_JSON_DTYPES = frozenset({*_INT_RANGES, *_MAX_EXACT_INT, "DT_STRING", "DT_BOOL"})

# `ServerSettings.max_request_tensor_bytes`' default, for a caller that passes no budget of its
# own (the server always passes its setting).
MAX_REQUEST_TENSOR_BYTES = 64 * 1024 * 1024
MAX_RANK = 64  # numpy's limit on dimensions
_SHAPE_DIMS_SHOWN = MAX_RANK  # dims quoted in an error text; a hostile shape can have millions


class SlowPathNeeded(Exception):
    """A tensor needs the element-by-element path (`fill`), which `reference=False` forbids:
    the caller decodes the request again where slow work may run (a worker thread)."""


class TensorBudget:
    """The bytes one request's decoded tensors may weigh, summed over its inputs.

    `charge` runs on a tensor's shape before its values are read: arithmetic on Python ints
    (no overflow), no pass over the values, nothing allocated. Past `limit` it raises
    INVALID_ARGUMENT naming the shape, its bytes and the limit.
    """

    def __init__(self, limit: int = MAX_REQUEST_TENSOR_BYTES) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, name: str, shape: Sequence[int], dtype: str) -> None:
        size = math.prod(shape) * itemsize(dtype)
        self.used += size
        if self.used <= self.limit:
            return
        before = self.used - size
        total = f", {self.used} bytes with the inputs before it" if before else ""
        raise invalid(
            f"input '{name}': shape {shape_text(shape)} of {dtype} is {size} bytes{total}; "
            f"this request's tensors may total at most {self.limit} bytes "
            "(--max_request_tensor_bytes)"
        )


@cache
def itemsize(dtype: str) -> int:
    """Bytes per element of `dtype` as decoded (a pointer for strings; 8 for a dtype JSON
    cannot carry, which fails later as UNIMPLEMENTED)."""
    row = BY_NAME.get(dtype)
    if row is None or row.numpy is None:
        return 8
    if row.numpy == "bfloat16":  # no need to import ml_dtypes for its size
        return 2
    return np.dtype(row.numpy).itemsize


def shape_text(shape: Sequence[int]) -> str:
    """`[2,3]` as TF Serving writes shapes; past 64 dims, the first 64 then `...`."""
    if len(shape) <= _SHAPE_DIMS_SHOWN:
        return "[" + ",".join(map(str, shape)) + "]"
    return "[" + ",".join(map(str, shape[:_SHAPE_DIMS_SHOWN])) + ",...]"


def is_b64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get(B64), str)


def type_error(val: Any, dtype: str) -> ServingError:
    return invalid(
        f"JSON Value: {value_to_string(val)} Type: {json_type(val)} "
        f"is not of expected type: {dtype_word(dtype)}"
    )


def to_array(val: Any, dtype: str, fast: bool, reference: bool = True) -> np.ndarray:
    """`fast_array`, else (`reference`) `fill` + `stack`, else `SlowPathNeeded`."""
    arr = fast_array(val, dtype) if fast else None
    if arr is not None:
        return arr
    if not reference:
        raise SlowPathNeeded
    flat, shape = fill(val, dtype)
    return stack([flat], shape, dtype)


def fast_array(val: Any, dtype: str) -> np.ndarray | None:
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
        return arr.astype(numpy_dtype(dtype))
    return None


def dense_shape(val: Any) -> list[int]:
    """GetDenseTensorShape(): each level's size from its first element (O(rank))."""
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def fill(val: Any, dtype: str) -> tuple[list[Any], list[int]]:
    """FillTensorProto(): flat values of one JSON tensor, and its shape; TF Serving's errors."""
    shape = dense_shape(val)
    rank = len(shape)
    if rank > MAX_RANK:  # numpy's limit; deeper nesting was a 500 (ValueError in reshape)
        raise invalid(f"JSON tensor has {rank} dimensions; at most {MAX_RANK} are supported")
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
            out.append(scalar(item, dtype))
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


def scalar(val: Any, dtype: str) -> Any:
    """AddValueToTensor(): one JSON leaf as a value of `dtype`, or TF Serving's error."""
    if isinstance(val, dict):
        if dtype != "DT_STRING":
            raise type_error(val, dtype)
        if not is_b64(val):
            raise invalid(
                f"JSON Value: {value_to_string(val)} not formatted correctly for base64 data"
            )
        try:
            return base64.b64decode(val[B64], validate=True)
        except (binascii.Error, ValueError):
            raise invalid("Unable to base64 decode") from None
    if dtype in _MAX_EXACT_INT:
        if isinstance(val, bool) or not isinstance(val, int | float):
            raise type_error(val, dtype)
        if not lossless(val, dtype):
            target = "float" if dtype == "DT_FLOAT" else "double"
            raise invalid(
                f"Cannot convert JSON value: {value_to_string(val)} to {target} "
                "without loss of precision."
            )
        return val
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
            raise type_error(val, dtype)
        return val
    if dtype == "DT_STRING":
        if not isinstance(val, str):
            raise type_error(val, dtype)
        return val.encode("utf-8")
    if dtype == "DT_BOOL":
        if not isinstance(val, bool):
            raise type_error(val, dtype)
        return val
    raise ServingError(
        Code.UNIMPLEMENTED,
        f"Conversion of JSON Value: {value_to_string(val)} to type: "
        f"{dtype_word(dtype)}",
    )


def lossless(val: int | float, dtype: str) -> bool:
    if isinstance(val, float):
        return not math.isfinite(val) or abs(val) <= _FLOAT_MAX[dtype]
    return abs(val) <= _MAX_EXACT_INT[dtype]


def stack(flats: list[list[Any]], shape: list[int], dtype: str) -> np.ndarray:
    np_dtype = numpy_dtype(dtype) if dtype in _JSON_DTYPES else None
    flat = [v for values in flats for v in values]
    if np_dtype is None or np_dtype.kind == "O":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    elif _INT_RANGES.get(dtype) == _INT32 and dtype != "DT_INT32":
        # TF keeps these in int32 fields and narrows them (300 -> 44 in uint8), as `fast_array`
        # does; numpy alone would raise OverflowError (a 500)
        arr = np.asarray(flat, dtype=np.int64).astype(np_dtype)
    else:
        arr = np.asarray(flat, dtype=np_dtype)
    return arr.reshape(shape)
