"""The TF Serving JSON codec: request parsing rules, every error text, response formatting."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from serve.errors import Code, ServingError
from serve.types import TensorInfo
from serve.wire import json_tensor as jt


def infos(**dtypes: str) -> dict[str, TensorInfo]:
    return {name: TensorInfo(f"{name}:0", dtype, None) for name, dtype in dtypes.items()}


def decode(body: bytes | str, **dtypes: str) -> jt.PredictRequest:
    body = body.encode() if isinstance(body, str) else body
    sig = infos(**(dtypes or {"x": "DT_FLOAT"}))
    fast = b"true" not in body and b"false" not in body
    return jt.decode_predict_request(jt.parse_json(body), lambda name: sig, fast=fast)


def error_of(body: bytes | str, **dtypes: str) -> tuple[Code, str]:
    with pytest.raises(ServingError) as info:
        decode(body, **dtypes)
    return info.value.code, info.value.message


# --- request: happy paths ----------------------------------------------------------------------


def test_row_format_stacks_instances_on_a_new_batch_dim():
    req = decode('{"instances": [[1.0, 2.0], [3.0, 4.0]]}')
    assert req.row and req.signature_name == "serving_default"
    assert req.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(req.inputs["x"], [[1, 2], [3, 4]])


def test_columnar_format_takes_the_value_as_the_whole_tensor():
    req = decode('{"signature_name": "serving_default", "inputs": [3.0, 4.0]}')
    assert not req.row
    np.testing.assert_array_equal(req.inputs["x"], [3.0, 4.0])


def test_columnar_object_gives_each_named_input_and_ignores_extra_keys():
    req = decode('{"inputs": {"a": [[1, 2]], "b": [1, 2, 3], "extra": 1}}',
                 a="DT_INT64", b="DT_DOUBLE")
    assert req.inputs["a"].dtype == np.int64 and req.inputs["a"].shape == (1, 2)
    assert req.inputs["b"].dtype == np.float64 and req.inputs["b"].shape == (3,)
    assert "extra" not in req.inputs


def test_row_format_with_several_inputs_uses_objects():
    req = decode('{"instances": [{"a": 1, "s": "foo"}, {"a": 2, "s": {"b64": "aGVsbG8="}}]}',
                 a="DT_INT32", s="DT_STRING")
    np.testing.assert_array_equal(req.inputs["a"], [1, 2])
    assert list(req.inputs["s"]) == [b"foo", b"hello"]


def test_b64_object_is_a_string_value():
    req = decode('{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}', s="DT_STRING")
    assert list(req.inputs["s"]) == [b"hello", b"world"]


def test_ints_are_accepted_for_float_inputs_and_nan_tokens_parse():
    req = decode('{"instances": [1, NaN, Infinity, -Infinity]}')
    x = req.inputs["x"]
    assert x.dtype == np.float32 and x[0] == 1 and np.isnan(x[1])
    assert np.isposinf(x[2]) and np.isneginf(x[3])


def test_bools_and_int64_inputs_coerce_from_the_signature_dtype():
    assert decode('{"inputs": [true, false]}', b="DT_BOOL").inputs["b"].dtype == np.bool_
    big = decode('{"inputs": [9007199254740993]}', i="DT_INT64").inputs["i"]
    assert big.dtype == np.int64 and int(big[0]) == 9007199254740993


def test_signature_name_is_passed_to_the_signature_lookup():
    seen = []
    jt.decode_predict_request(
        {"signature_name": "other", "inputs": [1.0]},
        lambda name: seen.append(name) or infos(x="DT_FLOAT"),
    )
    assert seen == ["other"]


# --- request: every error text of §1.3 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "JSON Parse error: The document is empty"),
        ('{"instances": [1,}', "JSON Parse error: Invalid value. at offset: 17"),
        ('{"instances": [1 2]}', "JSON Parse error: Missing a comma or ']' after an array "
                                 "element. at offset: 17"),
        ("[1]", "JSON Value: [\n    1\n] Is not object"),
        ('{"signature_name": 1, "inputs": [1]}',
         'JSON Value: {\n    "signature_name": 1,\n    "inputs": [\n        1\n    ]\n} not '
         "formatted correctly. 'signature_name' key must be a string value."),
        ('{"instances": [1], "inputs": [1]}',
         'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n    ]'
         "\n} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to "
         "exist "),
        ('{"foo": 1}', "Missing 'inputs' or 'instances' key"),
        ('{"instances": 1}',
         "JSON Value: {\n    \"instances\": 1\n} Expecting 'instances' to be an list/array"),
        ('{"instances": []}',
         "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
        ('{"inputs": ["x"]}', 'JSON Value: "x" Type: String is not of expected type: float'),
        ('{"inputs": [[1, 2], [3]]}',
         "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ('{"inputs": [[1, 2], 3]}',
         "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        ('{"inputs": [1, [2]]}', "Encountered list at unexpected level: 1 expected < 1"),
        ('{"instances": [[1, 2], [1, 2, 3]]}',
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting tensor size: 2 but got: 3"),
        ('{"instances": [[[1, 2]], [[1], [2]]]}',
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting shape [1,2] but got: [2,1]"),
        ('{"instances": [true]}',
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON Value: true Type: True is not of expected type: float"),
        ('{"inputs": [1435774380]}',
         "Cannot convert JSON value: 1435774380 to float without loss of precision."),
        ('{"instances": [1, {"x": 1}]}', "Expecting value/list but got object at item 1 of "
                                         "input list"),
    ],
)
def test_single_input_errors_copy_tf_serving_texts(body, message):
    code, text = error_of(body)
    assert code == Code.INVALID_ARGUMENT
    assert text == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"instances": [1, 2]}', "instances is a plain list, but expecting list of objects as "
                                  "multiple input tensors required as per tensorinfo_map"),
        ('{"inputs": [1, 2]}', "inputs is a plain value/list, but expecting an object as "
                               "multiple input tensors required as per tensorinfo_map"),
        ('{"inputs": {"a": [1]}}', "Missing named input: b in 'inputs' object."),
        ('{"instances": [{"a": 1}]}',
         "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1\n} "
         "keys must be equal to: a,b"),
        ('{"instances": [{"a": 1, "b": 2, "c": 3}]}',
         "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON object: does not have named input: c"),
        ('{"instances": [{"a": 1, "b": 2}, [1]]}',
         "Expecting object but got list at item 1 of input list"),
    ],
)
def test_multi_input_errors_copy_tf_serving_texts(body, message):
    assert error_of(body, a="DT_FLOAT", b="DT_FLOAT") == (Code.INVALID_ARGUMENT, message)


def test_bad_base64_texts():
    assert error_of('{"inputs": [{"b64": "!!"}]}', s="DT_STRING")[1] == "Unable to base64 decode"
    code, text = error_of('{"inputs": [{"b64": 1}]}', s="DT_STRING")
    assert text == 'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'


def test_int_inputs_refuse_floats_and_out_of_range_values():
    assert error_of('{"inputs": [1.5]}', i="DT_INT32")[1] == (
        "JSON Value: 1.5 Type: Number is not of expected type: int32"
    )
    assert error_of('{"inputs": [4294967296]}', i="DT_INT32")[1] == (
        "JSON Value: 4294967296 Type: Number is not of expected type: int32"
    )


def test_unsupported_dtype_is_unimplemented():
    code, text = error_of('{"inputs": [1]}', c="DT_COMPLEX64")
    assert code == Code.UNIMPLEMENTED and text == "Conversion of JSON Value: 1 to type: complex64"


def test_hostile_nesting_is_a_clean_400():
    deep = "[" * 100_000 + "]" * 100_000
    code, text = error_of('{"inputs": ' + deep + "}")
    assert code == Code.INVALID_ARGUMENT and text.startswith("JSON Parse error:")


# --- responses ---------------------------------------------------------------------------------


def test_single_output_name_is_dropped_in_both_formats():
    y = np.array([2.5, 3.0, 4.5], np.float32)
    assert orjson.loads(jt.encode_predict_response({"y": y}, row=True)) == {
        "predictions": [2.5, 3.0, 4.5]
    }
    assert orjson.loads(jt.encode_predict_response({"y": y}, row=False)) == {
        "outputs": [2.5, 3.0, 4.5]
    }


def test_whole_floats_keep_a_decimal_point():
    body = jt.encode_predict_response({"y": np.array([3.0, 4.0], np.float32)}, row=True)
    assert body == b'{"predictions":[3.0,4.0]}'


def test_non_finite_floats_are_bare_tokens():
    y = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    assert jt.encode_predict_response({"y": y}, row=True) == (
        b'{"predictions":[1.0,NaN,Infinity,-Infinity]}'
    )


def test_float_text_follows_tf_servings_write_decimal():
    assert jt.format_float(np.float32(3.0)) == "3.0"
    assert jt.format_float(np.float32(9e6)) == "9e+06"
    assert jt.format_float(np.float32(3e-5)) == "3e-05"
    assert jt.format_float(np.float32(0.1)) == "0.1"
    assert jt.format_float(np.float32(0.123456789)) == "0.123456791"
    assert jt.format_double(0.1) == "0.1"
    assert jt.format_double(float(np.float32(0.1))) == "0.10000000149011612"


def test_fast_float_path_is_numerically_identical_to_the_exact_writer():
    y = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32) * 1e3
    fast = orjson.loads(jt.encode_predict_response({"y": y}, row=True))["predictions"]
    exact = orjson.loads("[" + ",".join(jt.format_float(v) for v in y.ravel()) + "]")
    np.testing.assert_array_equal(np.float32(fast).ravel(), np.float32(exact))


def test_several_outputs_give_objects_per_row_and_an_object_of_columns():
    out = {"a": np.array([[1.0], [2.0]], np.float32), "n": np.array([1, 2], np.int64),
           "s_bytes": np.array([b"hi", b"yo"], dtype=object)}
    row = orjson.loads(jt.encode_predict_response(out, row=True))
    assert row == {"predictions": [{"a": [1.0], "n": 1, "s_bytes": {"b64": "aGk="}},
                                   {"a": [2.0], "n": 2, "s_bytes": {"b64": "eW8="}}]}
    col = orjson.loads(jt.encode_predict_response(out, row=False))
    assert col == {"outputs": {"a": [[1.0], [2.0]], "n": [1, 2],
                               "s_bytes": [{"b64": "aGk="}, {"b64": "eW8="}]}}


def test_row_response_errors_on_inconsistent_batch_and_scalars():
    with pytest.raises(ServingError, match="has inconsistent batch size: 3 expecting: 2"):
        jt.encode_predict_response({"a": np.zeros(2), "b": np.zeros(3)}, row=True)
    with pytest.raises(ServingError, match="Tensor name: a has no shape information "):
        jt.encode_predict_response({"a": np.float32(1.0)}, row=True)


def test_zero_batch_gives_an_empty_prediction_list():
    empty = np.zeros((0, 3), np.float32)
    assert orjson.loads(jt.encode_predict_response({"y": empty}, row=True)) == {
        "predictions": []
    }


def test_string_outputs_without_bytes_suffix_are_plain_strings():
    out = {"s": np.array([b"foo", b"bar"], dtype=object)}
    assert jt.encode_predict_response(out, row=False) == b'{"outputs":["foo","bar"]}'


# --- classify / regress ------------------------------------------------------------------------


def test_examples_request_types_features_like_tf_serving():
    req = jt.decode_examples_request({
        "signature_name": "reg", "context": {"c": "ctx"},
        "examples": [{"x": 1.5, "n": 3, "flag": True, "s": "a", "b": {"b64": "aGk="},
                      "v": [1.0, 2.0]}],
    })
    assert req.signature_name == "reg" and req.context == {"c": [b"ctx"]}
    assert req.examples == [{"x": [1.5], "n": [3], "flag": [1], "s": [b"a"], "b": [b"hi"],
                             "v": [1.0, 2.0]}]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"foo": 1}, "JSON Value: {\n    \"foo\": 1\n} When method is classify, key 'examples' "
                     "is expected and was not found"),
        ({"examples": 1}, "JSON Value: {\n    \"examples\": 1\n} Expecting 'examples' value to "
                          "be an list/array"),
        ({"examples": []}, "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty "
                           "array"),
        ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
        ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
        ({"examples": [{"x": [[1]]}]}, "Feature: x has element with unexpected JSON type: Array"),
        ({"examples": [{"x": [1, "a"]}]},
         "Unexpected element type in feature: x expecting type: int64"),
    ],
)
def test_examples_request_errors(doc, message):
    with pytest.raises(ServingError) as info:
        jt.decode_examples_request(doc)
    assert info.value.message == message


def test_results_key_for_regress_and_classify():
    assert jt.encode_regress_response([3.5, 4.0]) == b'{"results":[3.5,4.0]}'
    body = jt.encode_classify_response([[("a", 0.9), ("b", 0.1)]])
    assert body == b'{"results":[[["a",0.9],["b",0.1]]]}'


def test_error_body_is_an_error_object():
    assert orjson.loads(jt.error_body('bad "x"')) == {"error": 'bad "x"'}


def test_b64_encoding_round_trips_binary():
    raw = bytes(range(256))
    req = decode(orjson.dumps({"inputs": {"b64": base64.b64encode(raw).decode()}}),
                 s="DT_STRING")
    assert req.inputs["s"].shape == () and req.inputs["s"].item() == raw


# --- what one request may cost: quoted values, error texts, the tensor budget -------------------


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def test_a_quoted_value_past_quote_chars_is_cut_and_marked():
    text = jt.value_to_string([list(range(50))] * 100)
    assert len(text) < jt.QUOTE_CHARS + 64
    assert text.startswith("[\n    [\n        0,\n        1,")
    assert text.endswith(f"... (value cut at {jt.QUOTE_CHARS} characters)")


def test_a_quoted_value_within_its_budget_is_tf_servings_text_unchanged():
    assert jt.value_to_string({"a": [1, 2.5, None, True, "s"]}, limit=10_000) == (
        '{\n    "a": [\n        1,\n        2.5,\n        null,\n        true,\n        "s"\n'
        "    ]\n}"
    )
    assert jt.value_to_string([[]], limit=10) == "[\n    []\n]"


def test_quoting_a_two_megabyte_value_writes_four_kib_in_milliseconds():
    import time

    doc = orjson.loads("[" + ",".join([nested(63)] * 15_600) + "]")  # 2 MB of 64-deep lists
    huge_string = "\u2028" * 2_000_000
    t0 = time.perf_counter()
    texts = [jt.value_to_string(doc), jt.value_to_string({"k" * 10**6: huge_string})]
    assert time.perf_counter() - t0 < 1.0  # the whole value would be 260 MB, seconds to build
    assert all(len(t) < jt.QUOTE_CHARS + 64 for t in texts)


def test_an_error_text_is_cut_to_max_error_chars_keeping_its_prefix():
    from serve.errors import MAX_ERROR_CHARS

    err = ServingError(Code.INVALID_ARGUMENT, "JSON Value: " + "x" * 100_000)
    assert len(err.message) == MAX_ERROR_CHARS and str(err) == err.message
    assert err.message.startswith("JSON Value: xxx")
    assert err.message.endswith(f"... (error text cut at {MAX_ERROR_CHARS} characters)")
    assert len(orjson.loads(jt.error_body("y" * 100_000))["error"]) == MAX_ERROR_CHARS
    assert ServingError(Code.INVALID_ARGUMENT, "short").message == "short"


@pytest.mark.parametrize(
    "body",
    [
        '{"signature_name": 1, "instances": [' + ",".join([nested(63)] * 500) + "]}",
        '{"inputs": 1, "instances": [' + ",".join([nested(63)] * 500) + "]}",
        '{"inputs": [{"z": [' + ",".join([nested(62)] * 500) + "]}]}",
        '{"instances": [[' + ",".join(['{"a": ' + nested(62) + "}"] * 500) + "]]}",
    ],
)
def test_hostile_bodies_get_tf_servings_text_with_the_quoted_value_cut(body):
    code, text = error_of(body)
    assert code == Code.INVALID_ARGUMENT and len(text) < jt.QUOTE_CHARS + 300
    assert text.startswith(("JSON Value: {\n", "Failed to process element: 0 of 'instances' list."))
    assert f"(value cut at {jt.QUOTE_CHARS} characters)" in text


def test_an_integer_of_thousands_of_digits_is_a_parse_error_not_a_500():
    code, text = error_of('{"inputs": [' + "7" * 5000 + "]}")
    assert (code, text) == (
        Code.INVALID_ARGUMENT,
        "JSON Parse error: Number too big to be stored in double. at offset: 12",
    )


def budget_error(body: str, limit: int, **dtypes: str) -> str:
    sig = infos(**(dtypes or {"x": "DT_FLOAT"}))
    with pytest.raises(ServingError) as info:
        jt.decode_predict_request(orjson.loads(body), lambda name: sig, max_tensor_bytes=limit)
    assert info.value.code == Code.INVALID_ARGUMENT
    return info.value.message


def test_a_row_request_past_the_tensor_budget_is_refused_naming_shape_and_limit():
    body = '{"instances": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]}'  # [3,2] float: 24 bytes
    assert budget_error(body, 20) == (
        "input 'x': shape [3,2] of DT_FLOAT is 24 bytes; this request's tensors may total at "
        "most 20 bytes (--max_request_tensor_bytes)"
    )
    assert budget_error(body, 40, x="DT_DOUBLE").startswith(
        "input 'x': shape [3,2] of DT_DOUBLE is 48 bytes;")


def test_a_request_exactly_at_the_tensor_budget_decodes():
    sig = infos(x="DT_FLOAT")
    doc = orjson.loads('{"instances": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]}')
    req = jt.decode_predict_request(doc, lambda name: sig, max_tensor_bytes=24)
    assert req.inputs["x"].shape == (3, 2)


def test_the_tensor_budget_sums_every_input_of_a_columnar_and_an_object_request():
    columnar = '{"inputs": {"a": [1, 2, 3, 4], "b": [1.0, 2.0, 3.0]}}'
    assert budget_error(columnar, 40, a="DT_INT64", b="DT_DOUBLE") == (
        "input 'b': shape [3] of DT_DOUBLE is 24 bytes, 56 bytes with the inputs before it; "
        "this request's tensors may total at most 40 bytes (--max_request_tensor_bytes)"
    )
    rows = '{"instances": [{"a": [1, 2], "b": 1.0}, {"a": [3, 4], "b": 2.0}]}'
    assert budget_error(rows, 20, a="DT_INT32", b="DT_FLOAT").startswith(
        "input 'b': shape [2] of DT_FLOAT is 8 bytes, 24 bytes with the inputs before it;")


def test_the_budget_prices_the_claimed_shape_before_reading_a_value():
    # [1000, 1000, 1000] claimed by the first element at each level, in 6 KB of JSON
    ones = ",".join(["1"] * 999)
    inner = "[" + ",".join(["1"] * 1000) + "]"
    body = '{"instances": [[' + inner + "," + ones + "]," + ones + "]}"
    assert budget_error(body, 64 * 2**20).startswith(
        "input 'x': shape [1000,1000,1000] of DT_FLOAT is 4000000000 bytes;")


def test_reference_false_signals_the_element_by_element_path_instead_of_running_it():
    sig = infos(x="DT_FLOAT")
    for body in ('{"instances": [1, "x"]}', '{"inputs": [[1], [1, 2]]}',
                 '{"instances": [{"x": 1}]}'):
        with pytest.raises(jt.SlowPathNeeded):
            jt.decode_predict_request(orjson.loads(body), lambda n: sig, reference=False)
    with pytest.raises(jt.SlowPathNeeded):  # a body holding true/false never takes np.asarray
        jt.decode_predict_request({"inputs": [1.0]}, lambda n: sig, fast=False, reference=False)
    req = jt.decode_predict_request({"instances": [[1.0, 2.0]]}, lambda n: sig, reference=False)
    np.testing.assert_array_equal(req.inputs["x"], [[1.0, 2.0]])
    with pytest.raises(ServingError, match="Missing 'inputs' or 'instances' key"):
        jt.decode_predict_request({"x": 1}, lambda n: sig, reference=False)
