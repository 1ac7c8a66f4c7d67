"""TF Serving's JSON tensor codec: request JSON -> numpy per signature, numpy -> response JSON.

The public API of the codec, re-exported from its modules (as the stdlib's `json` package does):

    text.py     parse_json, value_to_string, format_float, format_double: JSON text itself
    values.py   one JSON tensor value -> a typed numpy array (fast path + TF's exact errors);
                TensorBudget, what one request's tensors may weigh (checked on shapes)
    decode.py   predict (`instances` / `inputs`), classify and regress requests -> numpy
    encode.py   numpy -> `{"predictions"}` / `{"outputs"}` / `{"results"}`, and `{"error"}`

Pure functions, no TensorFlow, no I/O. The rules and every error text follow TF Serving's
`tensorflow_serving/util/json_tensor.cc` (see `../shared/specs/tf-serving.md` §1.3, §1.6, §1.7).
Hot path: a numeric request is parsed by orjson and converted by one `np.asarray`; anything that
does not pass that cheap check (bools, strings, ragged lists, NaN tokens) re-runs through the
element-by-element reference path, which produces TF Serving's exact error for it.
"""

from serve.wire.json_tensor.decode import (
    ExamplesRequest,
    PredictRequest,
    decode_examples_request,
    decode_predict_request,
    signature_name_of,
)
from serve.wire.json_tensor.encode import (
    encode_classify_response,
    encode_predict_response,
    encode_regress_response,
    error_body,
)
from serve.wire.json_tensor.text import (
    QUOTE_CHARS,
    format_double,
    format_float,
    parse_json,
    value_to_string,
)
from serve.wire.json_tensor.values import (
    MAX_RANK,
    MAX_REQUEST_TENSOR_BYTES,
    SlowPathNeeded,
    TensorBudget,
    shape_text,
)

__all__ = [
    "MAX_RANK", "MAX_REQUEST_TENSOR_BYTES", "QUOTE_CHARS", "ExamplesRequest", "PredictRequest",
    "SlowPathNeeded", "TensorBudget", "decode_examples_request", "decode_predict_request",
    "encode_classify_response", "encode_predict_response", "encode_regress_response",
    "error_body", "format_double", "format_float", "parse_json", "shape_text",
    "signature_name_of", "value_to_string",
]
