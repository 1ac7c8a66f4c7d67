"""TF Serving's JSON requests -> numpy: predict (`instances` / `inputs`), classify and regress.

The rules and every error text follow `tensorflow_serving/util/json_tensor.cc` (see
`../shared/specs/tf-serving.md` §1.3, §1.6, §1.7):

- predict requests are row (`instances`: a non-empty list, stacked on a new dim 0) or columnar
  (`inputs`: one value/list, or an object with one entry per signature input); the dtype of each
  input comes from the signature, the shape from the JSON nesting (the first element at each level
  sets the size, every other list must match). One tensor's values: `serve.wire.json_tensor.values`.
- classify/regress requests are `{"signature_name"?, "context"?, "examples": [...]}`: each example
  a {feature: [values]} dict (int/bool -> int64, fractional -> float, str/b64 -> bytes).

A predict request's tensors are weighed from their JSON shapes (the signature dtype's bytes per
element) before any is decoded; past `max_tensor_bytes`, summed over the inputs, it is a 400.
Pure functions, no TensorFlow, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.layout import SIGNATURE_KEY
from serve.errors import ServingError, invalid
from serve.types import TensorInfo
from serve.wire.json_tensor.text import json_type, value_to_string
from serve.wire.json_tensor.values import (
    MAX_REQUEST_TENSOR_BYTES,
    SlowPathNeeded,
    TensorBudget,
    dense_shape,
    fast_array,
    fill,
    is_b64,
    lossless,
    scalar,
    stack,
    to_array,
)


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
    max_tensor_bytes: int = MAX_REQUEST_TENSOR_BYTES,
    reference: bool = True,
) -> PredictRequest:
    """FillPredictRequestFromJson(): `doc` (a parsed object) -> {input alias: array}.

    `get_inputs(signature_name)` returns the signature's inputs; it runs after the signature name
    is read and before the tensors are, so unknown models and signatures fail first, as in
    TF Serving. The name passed is the resolved one (`serving_default` for "").
    `fast=False` skips the one-`np.asarray` path: pass it when the body holds `true`/`false`,
    which numpy would silently turn into numbers (TF Serving rejects a bool in a float tensor).
    `max_tensor_bytes`: what the decoded tensors may weigh, summed (shape x dtype size, checked
    before each is decoded); the server passes `ServerSettings.max_request_tensor_bytes`.
    `reference=False` raises `SlowPathNeeded` where a tensor would need the element-by-element
    path (about a microsecond a value): for a caller on an event loop, which then hands the
    request to a worker thread. Cheap errors (keys, signature, budget) are raised either way.
    """
    signature = signature_name_of(doc) or SIGNATURE_KEY
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
        budget = TensorBudget(max_tensor_bytes)
        return PredictRequest(
            signature, _decode_instances(instances, infos, fast, budget, reference), row=True
        )
    if has_inputs:
        budget = TensorBudget(max_tensor_bytes)
        return PredictRequest(
            signature, _decode_inputs(doc["inputs"], infos, fast, budget, reference), row=False
        )
    raise invalid("Missing 'inputs' or 'instances' key")


def _is_element_object(val: Any) -> bool:
    return isinstance(val, dict) and not is_b64(val)


def _decode_instances(
    instances: list[Any], infos: Mapping[str, TensorInfo], fast: bool, budget: TensorBudget,
    reference: bool,
) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    names = sorted(infos)
    if _is_element_object(instances[0]):
        return _decode_object_instances(instances, infos, names, budget, reference)
    name = next(iter(infos))
    # every instance must have the first one's shape, so the first prices the whole batch
    budget.charge(name, dense_shape(instances), infos[name].dtype)
    if fast:
        arr = fast_array(instances, infos[name].dtype)
        if arr is not None:
            return {name: arr}
    if not reference:
        raise SlowPathNeeded
    items = []
    shape: list[int] | None = None
    for i, elem in enumerate(instances):
        if _is_element_object(elem):
            raise invalid(f"Expecting value/list but got object at item {i} of input list")
        try:
            values, elem_shape = fill(elem, infos[name].dtype)
            _check_same(shape, elem_shape, len(values), items)
        except ServingError as err:
            raise invalid(
                f"Failed to process element: {i} of 'instances' list. "
                f"Error: {_status_string(err)}"
            ) from None
        shape = elem_shape
        items.append(values)
    return {name: stack(items, [len(instances), *shape], infos[name].dtype)}


def _decode_object_instances(
    instances: list[Any], infos: Mapping[str, TensorInfo], names: list[str],
    budget: TensorBudget, reference: bool,
) -> dict[str, np.ndarray]:
    first = instances[0]
    for key in names:  # a missing key fails below, with TF Serving's text
        if key in first:
            budget.charge(key, [len(instances), *dense_shape(first[key])], infos[key].dtype)
    if not reference:
        raise SlowPathNeeded
    values: dict[str, list[list[Any]]] = {n: [] for n in names}
    shapes: dict[str, list[int]] = {}
    for i, elem in enumerate(instances):
        if not _is_element_object(elem):
            raise invalid(f"Expecting object but got list at item {i} of input list")
        for key, item in elem.items():
            try:
                if key not in infos:
                    raise invalid(f"JSON object: does not have named input: {key}")
                flat, shape = fill(item, infos[key].dtype)
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
        n: stack(values[n], [len(instances), *shapes[n]], infos[n].dtype) for n in names
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
    val: Any, infos: Mapping[str, TensorInfo], fast: bool, budget: TensorBudget,
    reference: bool,
) -> dict[str, np.ndarray]:
    if not isinstance(val, dict) or is_b64(val):
        if len(infos) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name, info = next(iter(infos.items()))
        budget.charge(name, dense_shape(val), info.dtype)
        return {name: to_array(val, info.dtype, fast, reference)}
    out = {}
    for name, info in infos.items():
        if name not in val:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        budget.charge(name, dense_shape(val[name]), info.dtype)
        out[name] = to_array(val[name], info.dtype, fast, reference)
    return out


def decode_examples_request(doc: Mapping[str, Any], method: str = "classify") -> ExamplesRequest:
    """FillClassifyRegressRequestFromJson(): examples as {feature: [values]}, b64 decoded."""
    signature = signature_name_of(doc) or SIGNATURE_KEY
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
        raise invalid(f"Example must be JSON object but got JSON {json_type(val)}")
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
    if val is None or isinstance(val, list) or (isinstance(val, dict) and not is_b64(val)):
        raise invalid(
            f"Feature: {name} has element with unexpected JSON type: {json_type(val)}"
        )
    if isinstance(val, bool):
        return "int64", int(val)
    if isinstance(val, dict):
        return "bytes", scalar(val, "DT_STRING")
    if isinstance(val, str):
        return "bytes", val.encode("utf-8")
    if isinstance(val, float):
        if not lossless(val, "DT_FLOAT"):
            raise invalid(
                f"Cannot convert JSON value: {value_to_string(val)} to float without loss of "
                "precision."
            )
        return "float", val
    if val > 2**63 - 1:
        raise invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
    return "int64", val
