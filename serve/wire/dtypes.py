"""TensorFlow's DataTypes, once: name, enum number, numpy form, TensorProto field, V2 name.

Every codec reads this table: the JSON codec (`serve.wire.json_tensor`: the dtype words in
its error texts, the numpy dtype a JSON tensor decodes to), the TensorProto codec
(`serve.wire.tensor_proto`: the typed `*_val` field of each dtype), request casting
(`serve.runtime.signatures`) and KServe V2 (`serve.http.kserve`: `FP32` <-> `DT_FLOAT`).
Numbers and words follow `tensorflow/core/framework/types.proto` and `DataTypeString()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DType:
    """One DataType. `numpy` is None for the types with no numpy form (quantized, resource)."""

    name: str  # "DT_FLOAT"
    number: int  # the DataType enum value
    word: str | None = None  # DataTypeString() where error texts use it: "float"
    numpy: str | None = None  # numpy dtype name ("object" for strings); see `numpy_dtype`
    proto_field: str | None = None  # TensorProto's typed field: "float_val"
    values_per_element: int = 1  # complex numbers travel as (real, imag) pairs
    v2: str | None = None  # the KServe V2 datatype: "FP32"

    def numpy_dtype(self) -> np.dtype | None:
        """The numpy dtype values of this type decode to (bfloat16 from ml_dtypes, on demand)."""
        if self.numpy is None:
            return None
        if self.numpy == "bfloat16":
            import ml_dtypes  # ships with TensorFlow

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(self.numpy)


_ROWS = (
    DType("DT_INVALID", 0),
    DType("DT_FLOAT", 1, "float", "float32", "float_val", v2="FP32"),
    DType("DT_DOUBLE", 2, "double", "float64", "double_val", v2="FP64"),
    DType("DT_INT32", 3, "int32", "int32", "int_val", v2="INT32"),
    DType("DT_UINT8", 4, "uint8", "uint8", "int_val", v2="UINT8"),
    DType("DT_INT16", 5, "int16", "int16", "int_val", v2="INT16"),
    DType("DT_INT8", 6, "int8", "int8", "int_val", v2="INT8"),
    DType("DT_STRING", 7, "string", "object", "string_val", v2="BYTES"),
    DType("DT_COMPLEX64", 8, "complex64", "complex64", "scomplex_val", 2),
    DType("DT_INT64", 9, "int64", "int64", "int64_val", v2="INT64"),
    DType("DT_BOOL", 10, "bool", "bool", "bool_val", v2="BOOL"),
    DType("DT_QINT8", 11),
    DType("DT_QUINT8", 12),
    DType("DT_QINT32", 13),
    DType("DT_BFLOAT16", 14, "bfloat16", "bfloat16", "half_val"),
    DType("DT_QINT16", 15),
    DType("DT_QUINT16", 16),
    DType("DT_UINT16", 17, "uint16", "uint16", "int_val", v2="UINT16"),
    DType("DT_COMPLEX128", 18, "complex128", "complex128", "dcomplex_val", 2),
    DType("DT_HALF", 19, "half", "float16", "half_val", v2="FP16"),
    DType("DT_RESOURCE", 20, "resource"),
    DType("DT_VARIANT", 21, "variant"),
    DType("DT_UINT32", 22, "uint32", "uint32", "uint32_val", v2="UINT32"),
    DType("DT_UINT64", 23, "uint64", "uint64", "uint64_val", v2="UINT64"),
)
BY_NAME: dict[str, DType] = {row.name: row for row in _ROWS}
BY_NUMBER: dict[int, DType] = {row.number: row for row in _ROWS}
BY_V2: dict[str, DType] = {row.v2: row for row in _ROWS if row.v2}


def dtype_name(number: int) -> str:
    """`1` -> `"DT_FLOAT"`; unknown numbers read `DT_<n>`."""
    row = BY_NUMBER.get(number)
    return row.name if row else f"DT_{number}"


def dtype_enum(name: str) -> int:
    """`"DT_FLOAT"` -> `1`; 0 (DT_INVALID) for the names no tensor can hold (no numpy form)."""
    row = BY_NAME.get(name)
    return row.number if row is not None and row.numpy is not None else 0


def dtype_word(name: str) -> str:
    """How TF's error texts name a dtype (`DT_FLOAT` -> `float`); the name itself otherwise."""
    row = BY_NAME.get(name)
    return row.word if row is not None and row.word else name


def numpy_dtype(name: str) -> Any:
    """The numpy dtype a tensor of `name` holds, or None (unknown, or no numpy form)."""
    row = BY_NAME.get(name)
    return row.numpy_dtype() if row is not None else None


def from_numpy(dtype: Any) -> DType | None:
    """The DataType of a numpy dtype (`S`/`U`/object arrays are DT_STRING), or None."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return BY_NAME["DT_STRING"]
    return next((row for row in _ROWS if row.numpy not in (None, "object")
                 and row.numpy_dtype() == dtype), None)
