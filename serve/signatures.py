"""SignatureDefs as `SignatureInfo`s, and request checks against them with TF Serving's texts.

Reads the `serve` meta graph of `saved_model.pb` directly (method names, tensor names, dtypes,
shapes: what TF Serving's metadata lists), validates predict inputs and output filters
(`predict_util.cc`), casts inputs to the signature's dtypes, and builds serialized tf.Example
for classify/regress. TensorFlow is imported inside functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serve.errors import Code, ServingError, invalid
from serve.types import SignatureInfo, TensorInfo

# numpy kind per TF dtype name, for request casting; anything else is passed as given
NUMPY_DTYPES = {
    "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_HALF": np.float16,
    "DT_INT8": np.int8, "DT_INT16": np.int16, "DT_INT32": np.int32, "DT_INT64": np.int64,
    "DT_UINT8": np.uint8, "DT_UINT16": np.uint16, "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64, "DT_BOOL": np.bool_, "DT_STRING": np.object_,
}
_TF_TYPE_WORDS = {  # TF's DataTypeString, used in "Expects arg ... to be float" messages
    "DT_FLOAT": "float", "DT_DOUBLE": "double", "DT_HALF": "half", "DT_INT8": "int8",
    "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64", "DT_UINT8": "uint8",
    "DT_UINT16": "uint16", "DT_UINT32": "uint32", "DT_UINT64": "uint64", "DT_BOOL": "bool",
    "DT_STRING": "string",
}


def read_signatures(path: str | Path) -> dict[str, SignatureInfo]:
    """Every SignatureDef of the `serve` meta graph in `<path>/saved_model.pb`, as TF Serving's
    metadata lists them (including `__saved_model_init_op`)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    metas = [m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags]
    if not metas:
        raise ServingError(
            Code.NOT_FOUND,
            f"Could not find meta graph def matching supplied tags: {{ serve }}. in {path}",
        )

    def tensor(info: Any) -> TensorInfo:
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
        return TensorInfo(name=info.name, dtype=types_pb2.DataType.Name(info.dtype), shape=dims)

    return {
        key: SignatureInfo(
            name=key,
            method_name=sig.method_name,
            inputs={k: tensor(v) for k, v in sorted(sig.inputs.items())},
            outputs={k: tensor(v) for k, v in sorted(sig.outputs.items())},
        )
        for key, sig in sorted(metas[0].signature_def.items())
    }


def shape_text(shape: Sequence[int] | None) -> str:
    return "<unknown>" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


def _type_word(dtype: np.dtype) -> str:
    """A numpy dtype named as TensorFlow names types (`float64` -> `double`)."""
    if dtype.kind in "OSU":
        return "string"
    return {"float64": "double", "float32": "float", "float16": "half"}.get(dtype.name, dtype.name)


def cast_input(alias: str, value: Any, info: TensorInfo) -> np.ndarray:
    """`value` as the signature's dtype: same-kind numeric casts (float64 -> float32, int ->
    float) are done; float -> int, strings <-> numbers and shape mismatches are refused."""
    want = NUMPY_DTYPES.get(info.dtype)
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    word = _TF_TYPE_WORDS.get(info.dtype, info.dtype)
    if want is np.object_:
        if arr.dtype.kind not in "OSU":
            raise invalid(
                f"Expects arg[{alias}] to be string but {_type_word(arr.dtype)} is provided"
            )
        arr = arr.astype(np.object_)
    elif want is not None:
        kind = arr.dtype.kind
        if kind in "OSUV" or (kind == "f" and np.dtype(want).kind in "iub") or (
            kind == "c" and np.dtype(want).kind != "c"
        ):
            raise invalid(
                f"Expects arg[{alias}] to be {word} but {_type_word(arr.dtype)} is provided"
            )
        if arr.dtype != want:
            arr = arr.astype(want)
    if info.shape is not None:
        ok = arr.ndim == len(info.shape) and all(
            w < 0 or w == g for w, g in zip(info.shape, arr.shape, strict=False)
        )
        if not ok:
            raise invalid(
                f"input tensor {alias} has shape {shape_text(arr.shape)} but the signature "
                f"expects {shape_text(info.shape)}"
            )
    return arr


def check_aliases(sent: Sequence[str], sig: SignatureInfo) -> None:
    """predict_util.cc's checks, verbatim: input count, then each alias."""
    want = sorted(sig.inputs)
    got = sorted(sent)
    if len(got) != len(want):
        extra = sorted(set(got) - set(want))
        missing = sorted(set(want) - set(got))
        raise invalid(
            f"input size does not match signature: {len(got)}!={len(want)} "
            f"len({{{','.join(got)}}}) != len({{{','.join(want)}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )
    for alias in got:
        if alias not in sig.inputs:
            raise invalid(
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{','.join(want)}}}."
            )


def check_output_filter(output_filter: Sequence[str], sig: SignatureInfo) -> None:
    for alias in output_filter:
        if alias not in sig.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{','.join(sorted(sig.outputs))}}}."
            )


# --------------------------------------------------------------------------------------------
# tf.Example building for classify/regress


def _feature(value: Any) -> Any:
    import tensorflow as tf

    values = list(value) if isinstance(value, list | tuple | np.ndarray) else [value]
    if all(isinstance(v, bool | np.bool_) for v in values) and values:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, int | np.integer) for v in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, int | float | np.integer | np.floating) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    if all(isinstance(v, str | bytes) for v in values):
        raw = [v.encode() if isinstance(v, str) else v for v in values]
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=raw))
    raise invalid(f"feature values must be all numbers or all strings, got {values!r:.80}")


def make_example(features: Mapping[str, Any] | Any, context: Mapping[str, Any] | None = None
                 ) -> bytes:
    """One serialized tf.Example from {feature: value or list} (ints -> int64_list, floats ->
    float_list, str/bytes -> bytes_list), a `tf.train.Example`, or serialized bytes. `context`
    features are merged in, as TF Serving does for ExampleListWithContext."""
    import tensorflow as tf

    if isinstance(features, bytes):
        example = tf.train.Example.FromString(features)
    elif isinstance(features, Mapping):
        example = tf.train.Example()
        for key, value in features.items():
            example.features.feature[str(key)].CopyFrom(_feature(value))
    elif hasattr(features, "features"):
        example = tf.train.Example()
        example.CopyFrom(features)
    else:
        raise invalid(f"an example must be an object of features, got {type(features).__name__}")
    for key, value in (context or {}).items():
        if key not in example.features.feature:
            example.features.feature[str(key)].CopyFrom(
                value if hasattr(value, "WhichOneof") else _feature(value)
            )
    return example.SerializeToString()
