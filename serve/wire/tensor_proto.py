"""TensorProto <-> numpy, as TensorFlow Serving reads requests and writes responses.

Decoding accepts both wire forms a client may send: the raw little-endian bytes of
`tensor_content`, or the typed repeated fields (`float_val`, `int_val`, `half_val`...). The typed
fields follow TensorFlow's scalar-broadcast rule: a single value fills the whole shape. Every other
count mismatch is refused with INVALID_ARGUMENT. (TensorFlow itself pads a short list with its last
value and zero-fills an empty one; for a forecaster a truncated window is a client bug, so we say
so instead of forecasting from made-up samples.) Malformed protos always end in `ServingError`,
never in a crash or an unbounded allocation.

Encoding writes the typed fields with `dtype` and `tensor_shape` set, as TF Serving does by
default (`enable_serialization_as_tensor_content=false`): stock clients that read `.float_val`
directly work. `as_tensor_content=True` gives the other form.

DataTypes (numbers, numpy forms, typed fields) come from the one table in `serve.wire.dtypes`.
The protobuf classes come from TensorFlow's package, so they are imported on first use: importing
this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serve.errors import invalid
from serve.wire.dtypes import BY_NUMBER, DType, dtype_name, from_numpy

# TF's TensorShape allows at most 254 dimensions.
MAX_RANK = 254
# What one request's decoded tensors may total unless the caller says otherwise (the server
# passes `--max_request_tensor_bytes`): checked on the declared shapes, before allocating.
DEFAULT_MAX_TENSOR_BYTES = 64 << 20
# An object array (DT_STRING) holds one pointer per element, whatever the strings weigh.
_OBJECT_ITEMSIZE = 8


def numpy_to_dtype_enum(dtype: np.dtype) -> int:
    """The DataType number of a numpy dtype; raises INVALID_ARGUMENT for unsupported ones."""
    row = from_numpy(dtype)
    if row is None:
        raise invalid(f"no TensorFlow DataType for numpy dtype {np.dtype(dtype)}")
    return row.number


def _tensor_proto_class() -> type:
    from tensorflow.core.framework import tensor_pb2

    return tensor_pb2.TensorProto


# --------------------------------------------------------------------------------------- decode


def _shape(proto: Any, name: str) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid(f"tensor parsing error: {name}: tensor_shape has unknown_rank set")
    dims = tuple(int(d.size) for d in shape.dim)
    if len(dims) > MAX_RANK:
        raise invalid(f"tensor parsing error: {name}: rank {len(dims)} exceeds {MAX_RANK}")
    if len(dims) > 64:  # numpy's limit (TF's is 254): a rank 65..254 shape was an INTERNAL error
        raise invalid(f"tensor parsing error: {name}: rank {len(dims)} exceeds numpy's 64")
    if any(d < 0 for d in dims):
        raise invalid(
            f"tensor parsing error: {name}: dimension sizes must be >= 0, got {list(dims)}"
        )
    return dims


def _num_elements(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d  # Python ints: no overflow, the byte cap below bounds it
    return n


def _decode_string_content(content: bytes, n: int, name: str) -> np.ndarray:
    """TF's string tensor_content: n varint32 lengths, then the concatenated bytes."""
    lengths, pos = [], 0
    for _ in range(n):
        length, shift = 0, 0
        while True:
            if pos >= len(content) or shift > 28:
                raise invalid(f"tensor parsing error: {name}: truncated DT_STRING tensor_content")
            byte = content[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        lengths.append(length)
    if pos + sum(lengths) != len(content):
        raise invalid(
            f"tensor parsing error: {name}: DT_STRING tensor_content holds "
            f"{len(content) - pos} bytes of data, lengths say {sum(lengths)}"
        )
    out = np.empty(n, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = content[pos:pos + length]
        pos += length
    return out


def _decode_content(proto: Any, kind: DType, dtype: np.dtype, n: int, name: str) -> np.ndarray:
    content = proto.tensor_content
    if kind.name == "DT_STRING":
        return _decode_string_content(content, n, name)
    expected = n * dtype.itemsize
    if len(content) != expected:
        raise invalid(
            f"tensor parsing error: {name}: tensor_content has {len(content)} bytes, "
            f"expected {expected} ({n} x {kind.name})"
        )
    return np.frombuffer(content, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True)


def _typed_values(proto: Any, kind: DType, dtype: np.dtype, name: str) -> np.ndarray:
    field = getattr(proto, kind.proto_field)
    if kind.name == "DT_STRING":
        return np.array(list(field) or [], dtype=object)
    if kind.proto_field == "half_val":  # 16-bit patterns stored in int32s
        return np.asarray(field, dtype=np.int32).astype(np.uint16).view(dtype)
    if kind.values_per_element == 2:
        parts = np.asarray(field, dtype=dtype.type(0).real.dtype)
        if len(parts) % 2:
            return parts  # odd count: reported by the caller as a size mismatch
        return parts.view(dtype)
    if dtype == np.bool_:
        return np.asarray(field, dtype=np.bool_)
    raw = np.asarray(field)
    if raw.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise invalid(
                f"tensor parsing error: {name}: {kind.proto_field} holds values outside the range "
                f"of {kind.name} [{info.min}, {info.max}]"
            )
    return raw.astype(dtype, copy=True)


def _decode_typed(proto: Any, kind: DType, dtype: np.dtype, n: int, name: str,
                  max_broadcast_bytes: int) -> np.ndarray:
    count = len(getattr(proto, kind.proto_field))
    per = kind.values_per_element
    if count == per and n > 1 and n * _itemsize(dtype) > max_broadcast_bytes:
        # A few bytes on the wire must not cost gigabytes: a broadcast may fill at most what a
        # request could carry as values (the receive limit), refused before any allocation.
        raise invalid(
            f"tensor parsing error: {name}: one {kind.proto_field} value broadcast to "
            f"{n * _itemsize(dtype)} bytes, over the limit of {max_broadcast_bytes} bytes for "
            "a broadcast; send the values"
        )
    values = _typed_values(proto, kind, dtype, name)
    if values.dtype != dtype or count not in (n * per, per) and not (n == 0 and count == 0):
        raise invalid(
            f"tensor parsing error: {name}: {kind.proto_field} has {count} values for a tensor of "
            f"{n} elements; send {n * per}, or {per} to fill the shape"
        )
    if len(values) == 1 and n != 1:
        return np.full(n, values[0], dtype=dtype)  # the scalar-broadcast rule
    return values


def _itemsize(dtype: np.dtype) -> int:
    return _OBJECT_ITEMSIZE if dtype.kind == "O" else dtype.itemsize


def _kind_of(proto: Any, name: str) -> DType:
    kind = BY_NUMBER.get(int(proto.dtype))
    if kind is None or kind.numpy is None:
        raise invalid(
            f"tensor parsing error: {name}: dtype {dtype_name(int(proto.dtype))} is not supported"
        )
    return kind


def decoded_bytes(proto: Any, name: str = "tensor") -> int:
    """The bytes `decode_tensor(proto)` would allocate, from the declared dtype and shape alone
    (nothing is decoded). Raises INVALID_ARGUMENT for an unsupported dtype or a bad shape."""
    dtype = _kind_of(proto, name).numpy_dtype()
    return _num_elements(_shape(proto, name)) * _itemsize(dtype)


def check_request_bytes(protos: Mapping[str, Any], max_bytes: int) -> None:
    """Refuse a request whose tensors (`{alias: TensorProto}`) would decode to more than
    `max_bytes` in all, before any of them is decoded."""
    sizes = {alias: decoded_bytes(proto, alias) for alias, proto in protos.items()}
    total = sum(sizes.values())
    if total > max_bytes:
        alias = max(sizes, key=sizes.__getitem__)
        raise invalid(
            f"tensor parsing error: {alias}: the request's tensors decode to {total} bytes, "
            f"over the limit of {max_bytes} bytes (--max_request_tensor_bytes)"
        )


def decode_tensor(
    proto: Any, name: str = "tensor", max_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    max_broadcast_bytes: int | None = None,
) -> np.ndarray:
    """A TensorProto as a numpy array of its dtype and shape (DT_STRING -> object array of bytes).

    `name` (the input alias) goes into error messages. Raises `ServingError` INVALID_ARGUMENT,
    starting with TF Serving's `tensor parsing error: <name>`, for an unsupported dtype, a bad
    shape, a size mismatch, a tensor over `max_bytes`, or a one-value broadcast (TensorFlow's
    rule: one typed value fills the shape) over `max_broadcast_bytes` (default `max_bytes`).
    Every limit is checked on the declared shape, before anything is allocated.
    """
    kind = _kind_of(proto, name)
    dtype = kind.numpy_dtype()
    dims = _shape(proto, name)
    n = _num_elements(dims)
    size = n * _itemsize(dtype)
    if size > max_bytes:
        raise invalid(
            f"tensor parsing error: {name}: shape {list(dims)} of {kind.name} is {size} bytes, "
            f"over the limit of {max_bytes} bytes (--max_request_tensor_bytes)"
        )
    if proto.tensor_content:
        flat = _decode_content(proto, kind, dtype, n, name)
    else:
        cap = max_bytes if max_broadcast_bytes is None else min(max_bytes, max_broadcast_bytes)
        flat = _decode_typed(proto, kind, dtype, n, name, cap)
    return flat.reshape(dims)


# --------------------------------------------------------------------------------------- encode


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")


def _encode_string_content(flat: np.ndarray) -> bytes:
    items = [_as_bytes(v) for v in flat]
    head = bytearray()
    for item in items:
        length = len(item)
        while length >= 0x80:
            head.append((length & 0x7F) | 0x80)
            length >>= 7
        head.append(length)
    return bytes(head) + b"".join(items)


def encode_tensor(array: Any, as_tensor_content: bool = False, out: Any = None) -> Any:
    """A numpy array (or anything `np.asarray` takes) as a TensorProto.

    Values go into the typed `*_val` field of the dtype (`float_val` for float32...), the form
    TF Serving answers with; `as_tensor_content=True` writes raw little-endian bytes instead.
    Strings (`bytes`/`str` objects, `S`/`U` arrays) become DT_STRING, str encoded as UTF-8.
    `out`: an empty TensorProto to fill in place (e.g. `response.outputs[alias]`), saving a copy.
    """
    array = np.asarray(array)
    number = numpy_to_dtype_enum(array.dtype)
    kind = BY_NUMBER[number]
    proto = _tensor_proto_class()() if out is None else out
    proto.dtype = number
    proto.tensor_shape.SetInParent()  # set even for a scalar, as TF's AsProtoField does
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = array.reshape(-1)
    if number == 7:
        if as_tensor_content:
            proto.tensor_content = _encode_string_content(flat)
        else:
            proto.string_val.extend(_as_bytes(v) for v in flat)
        return proto
    if as_tensor_content:
        proto.tensor_content = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
        return proto
    field = getattr(proto, kind.proto_field)
    if kind.proto_field == "half_val":
        field.extend(flat.view(np.uint16).tolist())
    elif kind.values_per_element == 2:
        field.extend(flat.view(flat.real.dtype).tolist())
    else:
        field.extend(flat.tolist())
    return proto
