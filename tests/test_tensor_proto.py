"""serve.wire.tensor_proto: TensorProto <-> numpy in both wire forms, checked against
TensorFlow's own `make_tensor_proto` / `make_ndarray`, and malformed protos refused with
INVALID_ARGUMENT."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from serve.errors import Code, ServingError
from serve.wire.dtypes import dtype_enum, dtype_name
from serve.wire.tensor_proto import decode_tensor, encode_tensor

ARRAYS = {
    "DT_FLOAT": np.array([[1.5, -2.25, 3.0], [np.inf, -0.0, 7.125]], dtype=np.float32),
    "DT_DOUBLE": np.array([1e-300, 2.5, -3.75], dtype=np.float64),
    "DT_INT32": np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32),
    "DT_UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "DT_INT16": np.array([-32768, 5, 32767], dtype=np.int16),
    "DT_INT8": np.array([-128, 0, 127], dtype=np.int8),
    "DT_UINT16": np.array([0, 1, 65535], dtype=np.uint16),
    "DT_INT64": np.array([-(2**63), 3, 2**63 - 1], dtype=np.int64),
    "DT_UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "DT_UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "DT_BOOL": np.array([[True, False], [False, True]]),
    "DT_HALF": np.array([0.5, -1.25, 65504.0], dtype=np.float16),
    "DT_BFLOAT16": np.array([0.5, -1.25, 3.0e38], dtype=ml_dtypes.bfloat16),
    "DT_COMPLEX64": np.array([1 + 2j, -3.5 - 0.5j], dtype=np.complex64),
    "DT_COMPLEX128": np.array([[1e200 + 2j], [-3.5 - 1e-200j]], dtype=np.complex128),
    "DT_STRING": np.array([b"abc", b"", "\u00e9t\u00e9".encode()], dtype=object),
}
TYPED_FIELD = {
    "DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_INT32": "int_val",
    "DT_UINT8": "int_val", "DT_INT16": "int_val", "DT_INT8": "int_val", "DT_UINT16": "int_val",
    "DT_INT64": "int64_val", "DT_UINT32": "uint32_val", "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val", "DT_HALF": "half_val", "DT_BFLOAT16": "half_val",
    "DT_COMPLEX64": "scomplex_val", "DT_COMPLEX128": "dcomplex_val", "DT_STRING": "string_val",
}


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    if want.dtype == object:
        assert list(got.ravel()) == list(want.ravel())
    else:
        as_bytes = [a.reshape(-1).view(np.uint8) for a in (got, want)]
        np.testing.assert_array_equal(*as_bytes)


def _proto(dtype: str, dims: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype), **fields)
    for d in dims:
        proto.tensor_shape.dim.add(size=d)
    return proto


def _parse_error(proto: tensor_pb2.TensorProto, **kwargs) -> str:
    with pytest.raises(ServingError) as info:
        decode_tensor(proto, "signal", **kwargs)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message.startswith("tensor parsing error: signal: ")
    return info.value.message


@pytest.mark.parametrize("dtype", sorted(ARRAYS))
def test_every_dtype_round_trips_through_the_typed_field(dtype: str) -> None:
    array = ARRAYS[dtype]
    proto = encode_tensor(array)
    assert proto.dtype == types_pb2.DataType.Value(dtype)
    assert [d.size for d in proto.tensor_shape.dim] == list(array.shape)
    assert proto.tensor_content == b""
    assert len(getattr(proto, TYPED_FIELD[dtype])) > 0
    _assert_same(decode_tensor(proto), array)


@pytest.mark.parametrize("dtype", sorted(ARRAYS))
def test_every_dtype_round_trips_through_tensor_content(dtype: str) -> None:
    array = ARRAYS[dtype]
    proto = encode_tensor(array, as_tensor_content=True)
    assert proto.tensor_content
    assert len(getattr(proto, TYPED_FIELD[dtype])) == 0
    _assert_same(decode_tensor(proto), array)


@pytest.mark.parametrize("dtype", sorted(set(ARRAYS) - {"DT_UINT32", "DT_UINT64"}))
def test_tensorflow_reads_what_we_write_in_both_forms(dtype: str) -> None:
    import tensorflow as tf

    array = ARRAYS[dtype]
    for as_content in (False, True):
        proto = encode_tensor(array, as_tensor_content=as_content)
        if dtype == "DT_STRING":  # make_ndarray cannot read string tensor_content; the C++ op can
            got = tf.io.parse_tensor(proto.SerializeToString(), tf.string).numpy()
            assert list(got.ravel()) == list(array.ravel())
        else:
            _assert_same(tf.make_ndarray(proto), array)


def test_string_tensor_content_is_varint_lengths_then_bytes() -> None:
    long = b"z" * 200  # a two-byte varint length
    proto = _proto("DT_STRING", [4], tensor_content=b"\x03\x00\x02\xc8\x01abcxy" + long)
    assert list(decode_tensor(proto)) == [b"abc", b"", b"xy", long]


@pytest.mark.parametrize("dtype", sorted(ARRAYS))
def test_we_read_what_tensorflow_writes(dtype: str) -> None:
    import tensorflow as tf

    array = ARRAYS[dtype]
    # make_tensor_proto writes tensor_content for numeric arrays and string_val for strings
    _assert_same(decode_tensor(tf.make_tensor_proto(array)), array)


def test_float_outputs_come_in_float_val_as_the_real_server_writes_them() -> None:
    proto = encode_tensor(np.array([[0.25], [0.5]], dtype=np.float32))
    assert list(proto.float_val) == [0.25, 0.5]
    assert proto.dtype == types_pb2.DT_FLOAT
    assert not proto.tensor_shape.unknown_rank


def test_python_strings_are_sent_as_utf8_bytes() -> None:
    proto = encode_tensor(np.array(["a", "\u00e9"]))
    assert list(proto.string_val) == [b"a", "\u00e9".encode()]


def test_a_single_typed_value_fills_the_whole_shape() -> None:
    got = decode_tensor(_proto("DT_FLOAT", [2, 3, 1], float_val=[1.5]))
    _assert_same(got, np.full((2, 3, 1), 1.5, dtype=np.float32))
    complex_ = decode_tensor(_proto("DT_COMPLEX64", [3], scomplex_val=[1.0, 2.0]))
    _assert_same(complex_, np.full(3, 1 + 2j, dtype=np.complex64))
    strings = decode_tensor(_proto("DT_STRING", [2], string_val=[b"x"]))
    assert list(strings) == [b"x", b"x"]


def test_a_scalar_and_an_empty_tensor_decode() -> None:
    _assert_same(decode_tensor(_proto("DT_INT64", [], int64_val=[7])), np.array(7, np.int64))
    _assert_same(decode_tensor(_proto("DT_FLOAT", [0, 4])), np.zeros((0, 4), np.float32))


def test_dtype_names_and_numbers_map_both_ways() -> None:
    assert dtype_name(1) == "DT_FLOAT"
    assert dtype_enum("DT_STRING") == 7
    assert dtype_enum("DT_RESOURCE") == 0
    assert dtype_name(20) == "DT_RESOURCE"
    assert dtype_name(99) == "DT_99"


def test_too_few_typed_values_are_refused_not_padded() -> None:
    message = _parse_error(_proto("DT_FLOAT", [1, 4, 1], float_val=[1.0, 2.0, 3.0]))
    assert message == (
        "tensor parsing error: signal: float_val has 3 values for a tensor of 4 elements; "
        "send 4, or 1 to fill the shape"
    )


def test_too_many_typed_values_are_refused() -> None:
    _parse_error(_proto("DT_INT32", [2], int_val=[1, 2, 3]))


def test_no_values_for_a_non_empty_shape_are_refused() -> None:
    _parse_error(_proto("DT_FLOAT", [1, 16, 1]))


def test_a_half_complex_pair_is_refused() -> None:
    _parse_error(_proto("DT_COMPLEX64", [2], scomplex_val=[1.0, 2.0, 3.0]))


def test_tensor_content_of_the_wrong_length_is_refused() -> None:
    message = _parse_error(_proto("DT_FLOAT", [2, 2], tensor_content=b"\0" * 15))
    assert message == (
        "tensor parsing error: signal: tensor_content has 15 bytes, expected 16 (4 x DT_FLOAT)"
    )


def test_truncated_string_tensor_content_is_refused() -> None:
    _parse_error(_proto("DT_STRING", [2], tensor_content=b"\x03\x05abc"))
    _parse_error(_proto("DT_STRING", [1], tensor_content=b"\x80"))


def test_negative_dimensions_and_unknown_rank_are_refused() -> None:
    message = _parse_error(_proto("DT_FLOAT", [-1, 3], float_val=[1.0]))
    assert message.endswith("dimension sizes must be >= 0, got [-1, 3]")
    unknown = _proto("DT_FLOAT", [], float_val=[1.0])
    unknown.tensor_shape.unknown_rank = True
    _parse_error(unknown)


def test_unsupported_and_invalid_dtypes_are_refused() -> None:
    assert _parse_error(_proto("DT_INVALID", [1])).endswith("dtype DT_INVALID is not supported")
    _parse_error(_proto("DT_RESOURCE", [1]))
    _parse_error(tensor_pb2.TensorProto(dtype=999))


def test_a_broadcast_to_a_huge_shape_is_refused_before_allocating() -> None:
    message = _parse_error(_proto("DT_FLOAT", [1 << 40, 1 << 40], float_val=[0.0]))
    assert "over the limit of" in message
    _parse_error(_proto("DT_FLOAT", [1024], float_val=[0.0]), max_bytes=1000)


def test_integers_outside_the_dtype_range_are_refused() -> None:
    message = _parse_error(_proto("DT_UINT8", [2], int_val=[1, 256]))
    assert message.endswith("int_val holds values outside the range of DT_UINT8 [0, 255]")


def test_an_array_without_a_tensorflow_dtype_cannot_be_encoded() -> None:
    with pytest.raises(ServingError) as info:
        encode_tensor(np.array(["2024-01-01"], dtype="datetime64[D]"))
    assert info.value.code == Code.INVALID_ARGUMENT
