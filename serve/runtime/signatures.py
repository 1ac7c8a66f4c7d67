"""SignatureDefs as `SignatureInfo`s, and request checks against them with TF Serving's texts.

Reads the `serve` meta graph of `saved_model.pb` directly (method names, tensor names, dtypes,
shapes: what TF Serving's metadata lists), validates predict inputs and output filters
(`predict_util.cc`) and casts inputs to the signature's dtypes (`serve.wire.dtypes`).

Shapes are not checked against the SignatureDef: TF Serving feeds a request tensor to the graph
whatever its shape (`predict_util.cc` checks aliases and output filters, the session the dtype),
so a TF1 signature declaring x as [-1,1] answers x of shape [2,2] when its ops take it
(`specs/tf-serving.md` §1.6). A shape the graph cannot take fails in the runtime, with its
message. `fits_declared_shapes` only says whether a request suits a runtime compiled for the
declared shapes (XLA).

pulsecast's own models are the exception: a version with a `pulsecast.json` says the window its
`serving_default` takes (`ModelWindow`: `(batch, input_steps, len(channels))` at `fs` Hz), so a
request of another shape is refused before the graph sees it, naming both shapes
(`check_window_shape`), instead of with an op's text that never says what the model wants
(`indices[0] = 564 is not in [0, 501) [[{{node ...GatherV2_4}}]]`). Other SavedModels keep TF
Serving's behaviour and texts. TensorFlow is imported inside functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.layout import SAVED_MODEL_FILES, SERVE_TAG, SIGNATURE_KEY
from models.metadata import MetadataError, VersionMetadata
from serve.errors import Code, ServingError, invalid
from serve.types import SignatureInfo, TensorInfo
from serve.wire.dtypes import dtype_word, from_numpy, numpy_dtype

# Request casting covers the real, integer, bool and string dtypes; complex and bfloat16 inputs
# reach TensorFlow as sent.
_NOT_CAST = frozenset({"DT_COMPLEX64", "DT_COMPLEX128", "DT_BFLOAT16"})


def read_signatures(path: str | Path) -> dict[str, SignatureInfo]:
    """Every SignatureDef of the `serve` meta graph in `<path>/saved_model.pb`, as TF Serving's
    metadata lists them (including `__saved_model_init_op`)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(path) / SAVED_MODEL_FILES[0]).read_bytes())
    metas = [m for m in proto.meta_graphs if SERVE_TAG in m.meta_info_def.tags]
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
    row = from_numpy(dtype)
    return row.word if row is not None and row.word else dtype.name


def cast_input(alias: str, value: Any, info: TensorInfo) -> np.ndarray:
    """`value` as the signature's dtype: same-kind numeric casts (float64 -> float32, int ->
    float) are done; float -> int and strings <-> numbers are refused with TensorFlow's
    `Expects arg[...]` text. The shape is left as sent: the graph judges it (module doc)."""
    want = None if info.dtype in _NOT_CAST else numpy_dtype(info.dtype)
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    word = dtype_word(info.dtype)
    if want is not None and want.kind == "O":
        if arr.dtype.kind not in "OSU":
            raise invalid(
                f"Expects arg[{alias}] to be string but {_type_word(arr.dtype)} is provided"
            )
        arr = arr.astype(np.object_)
    elif want is not None:
        kind = arr.dtype.kind
        if kind in "OSUV" or (kind == "f" and want.kind in "iub") or (
            kind == "c" and want.kind != "c"
        ):
            raise invalid(
                f"Expects arg[{alias}] to be {word} but {_type_word(arr.dtype)} is provided"
            )
        if arr.dtype != want:
            arr = arr.astype(want)
    return arr


def fits_declared_shapes(arrays: Mapping[str, np.ndarray], sig: SignatureInfo) -> bool:
    """Whether every input has its SignatureDef shape (-1 matches any size): the shapes a
    runtime compiled from the signature takes. Not a request check (module doc)."""
    for alias, arr in arrays.items():
        info = sig.inputs.get(alias)
        if info is None or info.shape is None or arr.ndim != len(info.shape):
            return False
        if any(want >= 0 and want != got for want, got in zip(info.shape, arr.shape, strict=True)):
            return False
    return True


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
    """predict_util.cc's PreProcessPrediction, verbatim: each alias known, none twice."""
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in sig.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{','.join(sorted(sig.outputs))}}}."
            )
        if alias in seen:
            raise invalid(f"duplicate output tensor alias: {alias}")
        seen.add(alias)


@dataclass(frozen=True)
class ModelWindow:
    """The window a pulsecast model's `serving_default` takes: its one input `alias`, shape
    `(batch, input_steps, len(channels))`, sampled at `fs` Hz."""

    alias: str
    input_steps: int
    channels: tuple[str, ...]
    fs: float

    @classmethod
    def of(cls, metadata: Mapping[str, Any] | None,
           signatures: Mapping[str, SignatureInfo]) -> ModelWindow | None:
        """The window `pulsecast.json` (as read, untyped) declares for `serving_default`; None
        for a SavedModel without one, one that breaks the contract, or whose signature is not a
        single input of a shape that window fits (the graph then judges shapes, as for any
        SavedModel)."""
        sig = signatures.get(SIGNATURE_KEY)
        if not metadata or sig is None or len(sig.inputs) != 1:
            return None
        try:
            meta = VersionMetadata.from_dict(metadata)
        except MetadataError:
            return None
        ((alias, info),) = sig.inputs.items()
        want = (-1, meta.input_steps, len(meta.channels))
        if info.shape is not None and (len(info.shape) != 3 or any(
                d >= 0 and w >= 0 and d != w for d, w in zip(info.shape, want, strict=True))):
            return None
        return cls(alias, meta.input_steps, meta.channels, meta.fs)


def check_window_shape(arrays: Mapping[str, np.ndarray], window: ModelWindow, model: str,
                       version: int) -> None:
    """INVALID_ARGUMENT naming the shape sent and the one taken when the window input is not
    `(batch, input_steps, len(channels))`, e.g. `input 'signal' has shape [1, 564, 1]; model
    ecg version 3 takes [batch, 500, 1] (500 samples at 125 Hz of ['II'])`."""
    arr = arrays.get(window.alias)
    n_channels = len(window.channels)
    if arr is None or (arr.ndim == 3 and arr.shape[1:] == (window.input_steps, n_channels)):
        return
    sent = "[" + ", ".join(str(d) for d in arr.shape) + "]"
    raise invalid(
        f"input {window.alias!r} has shape {sent}; model {model} version {version} takes "
        f"[batch, {window.input_steps}, {n_channels}] ({window.input_steps} samples at "
        f"{window.fs:g} Hz of {list(window.channels)})"
    )
