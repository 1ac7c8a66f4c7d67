"""tf.Example on the wire, for classify and regress (REST, gRPC and warmup replay alike).

- `make_example`: one serialized tf.Example from a JSON-style {feature: value or list} dict (what
  `serve.wire.json_tensor` decodes), a `tf.train.Example`, or serialized bytes; context features
  merged in as TF Serving does for ExampleListWithContext.
- `examples_of`: the examples and shared context features of a `tensorflow.serving.Input`
  (a gRPC request's `input`, or a warmup record's).

TensorFlow is imported inside functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serve.errors import invalid


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


def examples_of(model_input: Any) -> tuple[list[Any], dict[str, Any] | None]:
    """(tf.Examples, context features or None) of a `tensorflow.serving.Input`; INVALID_ARGUMENT
    `Input is empty` when it holds neither list kind. An empty list is the caller's to refuse."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return list(model_input.example_list.examples), None
    if kind == "example_list_with_context":
        both = model_input.example_list_with_context
        return list(both.examples), dict(both.context.features.feature)
    raise invalid("Input is empty")
