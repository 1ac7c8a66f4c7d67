"""Property-based fuzzing of the REST server and of the JSON tensor codec.

- Every operation of the running server's own `/openapi.json` is fuzzed with hypothesis: path
  parameters (real names, random text, escapes, huge numbers), bodies built from the operation's
  JSON schema, near-valid tensors (wrong lengths, NaN, 1e308), arbitrary JSON, raw bytes, junk
  gzip, and the wrong method now and then. Every answer must come back within the client timeout
  and be below 500, errors as `{"error": str}`; afterwards the server still answers correctly.
- `serve.wire.json_tensor` is fuzzed directly: `parse_json` on arbitrary bytes and JSON text,
  `decode_predict_request` / `decode_examples_request` on arbitrary documents against signatures
  of every dtype, and `encode_predict_response` round-trips what it writes.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fuzzing import fuzz_examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.errors import Code, ServingError
from serve.types import TensorInfo
from serve.wire.json_tensor import (
    decode_examples_request,
    decode_predict_request,
    encode_predict_response,
    parse_json,
)

httpx = pytest.importorskip("httpx")

REST_EXAMPLES = fuzz_examples(1000)
CODEC_EXAMPLES = fuzz_examples(600)
REQUEST_TIMEOUT_S = 10.0

FUZZ_SETTINGS = settings(
    deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)

# --------------------------------------------------------------------------------- strategies

JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
ANY_JSON = st.recursive(
    JSON_LEAF,
    lambda kids: st.one_of(st.lists(kids, max_size=5),
                           st.dictionaries(st.text(max_size=8), kids, max_size=5)),
    max_leaves=30,
)
ESCAPES = ["..", "%2e%2e", "%2E%2E%2F", "a%2Fb", "%00", "%5c..%5c", "~root", "%ff%fe",
           "a" * 300, " ", "%20", "%0d%0a", "..%2f..%2fetc%2fpasswd", ".", "-1", "1e3"]


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def path_param(name: str) -> st.SearchStrategy[str]:
    """Real values most of the time, else random or hostile text, URL-quoted."""
    real = {"model_name": ["half", "ecg"], "version": ["1", "2", "0"],
            "label": ["stable", "canary"]}.get(name, ["x"])
    hostile = st.one_of(
        st.sampled_from(ESCAPES),
        st.text(max_size=20).map(lambda s: quote(s, safe="")),
        st.integers(-(2**70), 2**70).map(str),
    )
    return st.one_of(st.sampled_from(real), st.sampled_from(real), hostile)


def schema_strategy(schema: dict, doc: dict, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values shaped by a (small subset of) JSON schema, as FastAPI writes it."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return schema_strategy(doc["components"]["schemas"][name], doc, depth)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([schema_strategy(s, doc, depth) for s in schema[key]])
    if depth > 4:
        return JSON_LEAF
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fields = {k: schema_strategy(v, doc, depth + 1) for k, v in props.items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not props:
            keys = st.sampled_from(["II", "V", "signal", "x"]) | st.text(max_size=5)
            return st.dictionaries(keys, schema_strategy(extra, doc, depth + 1), max_size=3)
        return st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
    if kind == "array":
        return st.lists(schema_strategy(schema.get("items", {}), doc, depth + 1), max_size=40)
    if kind == "string":
        return st.text(max_size=20)
    if kind == "integer":
        return st.integers(-5, 2**40)
    if kind == "number":
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                         st.floats(0.1, 500.0), st.sampled_from([50.0, 100.0, 125.0]))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return ANY_JSON


SAMPLE = st.one_of(st.floats(-3, 3), st.sampled_from([math.nan, math.inf, 1e308, -1e308, 0.0]))


@st.composite
def near_valid_body(draw) -> Any:
    """Bodies that get past JSON parsing into the model: right or off-by-one shapes."""
    steps = draw(st.sampled_from([16, 16, 15, 17, 1]))
    n = draw(st.integers(1, 4))
    rows = [[[draw(SAMPLE)] for _ in range(steps)] for _ in range(n)]
    form = draw(st.sampled_from(["instances", "inputs", "half", "forecast", "kserve"]))
    if form == "instances":
        return {"instances": rows}
    if form == "inputs":
        return {"inputs": {"signal": rows}}
    if form == "half":
        return {"instances": [[draw(SAMPLE)] for _ in range(n)]}
    if form == "forecast":
        length = draw(st.integers(0, 400))
        return {"signal": {"II": [draw(SAMPLE | st.none()) for _ in range(length)]},
                "fs": draw(st.sampled_from([50.0, 100.0, 1e-9, 1e9]))}
    flat = [v[0] for row in rows for v in row]
    return {"inputs": [{"name": "signal", "shape": [n, steps, 1], "datatype": "FP32",
                        "data": flat}]}


@st.composite
def deep_body(draw) -> bytes:
    """Hostile nesting, 1 to 1100 levels deep (orjson stops at 1024), under any key."""
    n = draw(st.integers(1, 1100))
    inner = draw(st.sampled_from([b"", b"1", b'"a"', b"{}", b'{"b64": "AA=="}']))
    nest = b"[" * n + inner + b"]" * n
    key = draw(st.sampled_from([None, "instances", "inputs", "examples", "signal", "x"]))
    if key is None:
        return nest
    if key == "signal":
        return b'{"signal": {"II": ' + nest + b'}, "fs": 50}'
    return b'{"' + key.encode() + b'": ' + nest + b', "signature_name": 1}'


def operations(doc: dict) -> list[tuple[str, str, dict | None]]:
    """(METHOD, path template, request body schema or None) for every operation."""
    ops = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ops.append((method.upper(), path, body.get("schema")))
    return ops


@st.composite
def request(draw, ops: list, doc: dict) -> tuple[str, str, bytes | None, dict]:
    method, template, schema = draw(st.sampled_from(ops))
    path = template
    for name in ("model_name", "version", "label"):
        if "{" + name + "}" in path:
            path = path.replace("{" + name + "}", draw(path_param(name)))
    if draw(st.integers(0, 19)) == 0:
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "GET", "POST"]))
    headers: dict[str, str] = {}
    if method != "POST":
        return method, path, None, headers
    choices = [st.just(None), ANY_JSON.map(dumps), st.binary(max_size=200), deep_body()]
    if schema is not None:
        shaped = schema_strategy(schema, doc).map(dumps)
        choices += [shaped, shaped, near_valid_body().map(dumps), near_valid_body().map(dumps),
                    shaped.map(lambda b: b[: len(b) // 2])]
    body = draw(st.one_of(choices)) or b""
    gz = draw(st.integers(0, 9))
    if gz == 0:
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body)
    elif gz == 1:
        headers["Content-Encoding"] = "gzip"  # says gzip, is not
    return method, path, body, headers


# ----------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Any]:
    from live_server import TOKEN, LiveServer, write_store

    store = write_store(tmp_path_factory.mktemp("store"))
    token_file = tmp_path_factory.mktemp("secrets") / "token"
    token_file.write_text(TOKEN)
    with LiveServer(store, "--max-body-bytes", str(256 * 1024), token_file=token_file) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> Iterator[Any]:
    from live_server import TOKEN

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=REQUEST_TIMEOUT_S) as c:
        yield c


@pytest.mark.slow
def test_every_openapi_operation_survives_fuzzed_requests_without_a_5xx(server, client):
    doc = client.get("/openapi.json").json()
    ops = operations(doc)
    assert len(ops) >= 30, [o[:2] for o in ops]
    statuses: Counter = Counter()
    slowest = [0.0]

    @settings(FUZZ_SETTINGS, max_examples=REST_EXAMPLES)
    @given(req=request(ops, doc))
    def one(req: tuple[str, str, bytes | None, dict]) -> None:
        method, path, body, headers = req
        t0 = time.monotonic()
        r = client.request(method, path, content=body, headers=headers)  # times out -> fails
        slowest[0] = max(slowest[0], time.monotonic() - t0)
        statuses[r.status_code] += 1
        # a readiness probe answers 503 for a model that is not ready: its documented meaning
        allowed = r.status_code < 500 or (r.status_code == 503 and path.endswith("/ready"))
        assert allowed, (method, path, (body or b"")[:120], r.status_code, r.text)
        if r.status_code >= 400 and r.headers.get("content-type") == "application/json":
            assert isinstance(r.json()["error"], str)

    one()
    total = sum(statuses.values())
    print(f"\nFIGURES fuzz_rest requests={total} statuses={dict(sorted(statuses.items()))} "
          f"slowest_s={slowest[0]:.3f}")
    assert total >= REST_EXAMPLES * 0.9
    assert server.alive()
    assert client.get("/healthz").status_code == 200
    r = client.post("/v1/models/half:predict", json={"instances": [[1.0]]})
    assert (r.status_code, r.json()) == (200, {"predictions": [[2.5]]})


# ------------------------------------------------------------------------- the codec, directly

DTYPES = ["DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64", "DT_UINT8", "DT_INT8", "DT_BOOL",
          "DT_STRING", "DT_HALF", "DT_UINT64", "DT_INT16", "DT_UINT16", "DT_UINT32"]
SHAPES = [None, (), (-1,), (-1, 1), (-1, 16, 1), (2, 2), (-1, -1)]


@st.composite
def signature(draw) -> dict[str, TensorInfo]:
    names = draw(st.lists(st.sampled_from(["x", "signal", "a", "b"]), min_size=1, max_size=3,
                          unique=True))
    return {n: TensorInfo(f"{n}:0", draw(st.sampled_from(DTYPES)), draw(st.sampled_from(SHAPES)))
            for n in names}


@st.composite
def predict_doc(draw) -> Any:
    """Top-level objects with the keys the codec looks at, plus anything."""
    doc = draw(st.dictionaries(st.sampled_from(["instances", "inputs", "signature_name", "zz"]),
                               ANY_JSON, max_size=3))
    if draw(st.booleans()):
        nested = st.recursive(JSON_LEAF | st.fixed_dictionaries({"b64": st.text(max_size=8)}),
                              lambda k: st.lists(k, min_size=1, max_size=4), max_leaves=20)
        doc[draw(st.sampled_from(["instances", "inputs"]))] = draw(
            st.lists(nested, min_size=1, max_size=4) | st.dictionaries(
                st.sampled_from(["x", "signal", "a", "b"]), nested, max_size=3))
    return doc


@pytest.mark.parametrize("fast", [True, False])
@settings(FUZZ_SETTINGS, max_examples=CODEC_EXAMPLES // 4)
@given(doc=predict_doc(), sig=signature())
def test_decode_predict_request_returns_arrays_or_an_invalid_argument(fast, doc, sig):
    try:
        req = decode_predict_request(doc, lambda _name: sig, fast=fast)
    except ServingError as err:
        # UNIMPLEMENTED (501) is TF Serving's answer for dtypes JSON cannot carry (DT_HALF)
        assert err.code in (Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED), err
        return
    assert set(req.inputs) <= set(sig)
    for arr in req.inputs.values():
        assert isinstance(arr, np.ndarray)


@settings(FUZZ_SETTINGS, max_examples=CODEC_EXAMPLES // 4)
@given(body=st.one_of(st.binary(max_size=300), ANY_JSON.map(dumps),
                      ANY_JSON.map(dumps).map(lambda b: b[: max(1, len(b) - 3)]),
                      deep_body()))
def test_parse_json_returns_an_object_or_an_invalid_argument(body):
    try:
        doc = parse_json(body)
    except ServingError as err:
        assert err.code == Code.INVALID_ARGUMENT and err.message.startswith(("JSON", "JSON Value"))
        return
    assert isinstance(doc, dict)


@settings(FUZZ_SETTINGS, max_examples=CODEC_EXAMPLES // 8)
@given(doc=st.dictionaries(st.sampled_from(["examples", "context", "signature_name"]), ANY_JSON,
                           max_size=3),
       method=st.sampled_from(["classify", "regress"]))
def test_decode_examples_request_returns_examples_or_an_invalid_argument(doc, method):
    try:
        req = decode_examples_request(doc, method)
    except ServingError as err:
        assert err.code == Code.INVALID_ARGUMENT
        return
    assert isinstance(req.examples, list) and req.examples


FLOAT_ARRAYS = st.integers(0, 3).flatmap(
    lambda ndim: st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)).flatmap(
    lambda shape: st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True),
                           min_size=int(np.prod(shape)), max_size=int(np.prod(shape))).map(
        lambda vals: np.asarray(vals, dtype=np.float32).reshape(shape)))


@settings(FUZZ_SETTINGS, max_examples=CODEC_EXAMPLES // 8)
@given(arr=FLOAT_ARRAYS, row=st.booleans())
def test_encoded_float_responses_parse_back_to_the_same_values(arr, row):
    try:
        body = encode_predict_response({"y": arr}, row=row)
    except ServingError as err:  # a 0-d tensor in row format has no batch dim
        assert row and arr.ndim == 0 and err.code == Code.INVALID_ARGUMENT
        return
    value = parse_json(body)["predictions" if row else "outputs"]
    np.testing.assert_array_equal(np.asarray(value, dtype=np.float32).reshape(arr.shape), arr)



@pytest.mark.slow
@pytest.mark.parametrize("depth", [70, 400, 1000, 1030])
def test_hostile_nesting_on_every_post_route_is_a_400_not_a_500(client, depth):
    """Found by the fuzzer: 65 to 1024 levels of nesting used to be a 500 (a RecursionError while
    quoting the value in the error text, or numpy's 64-dimension limit)."""
    nest = b"[" * depth + b"1" + b"]" * depth
    bodies = [nest, b'{"instances": ' + nest + b"}", b'{"inputs": ' + nest + b"}",
              b'{"examples": ' + nest + b"}", b'{"signal": {"II": ' + nest + b'}, "fs": 50}',
              b'{"inputs": [{"name": "signal", "shape": [1], "datatype": "FP32", "data": '
              + nest + b"}]}",
              b'{"instances": [1], "signature_name": ' + nest + b"}"]
    for path in ("/v1/models/half:predict", "/v1/models/ecg:predict", "/v1/models/ecg:forecast",
                 "/v1/models/half:classify", "/v1/models/half:regress", "/v2/models/ecg/infer"):
        for body in bodies:
            r = client.post(path, content=body)
            assert r.status_code == 400, (path, body[:40], r.status_code, r.text[:200])
