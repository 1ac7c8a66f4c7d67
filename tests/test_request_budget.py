"""A request costs what it weighs, and no request is a 500: the REST app in-process (the fake
manager of `test_rest_app.py`, no TensorFlow) against the tensor budget
(`--max_request_tensor_bytes`), hostile KServe V2 shapes, and bodies whose error text TF
Serving's rules would make hundreds of times larger than the request."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager

import orjson
import pytest
from test_rest_app import FakeManager, FakeServable, client

from serve.errors import MAX_ERROR_CHARS
from serve.http.app import RestApp
from serve.settings import ServerSettings
from serve.wire import json_tensor as jt

testclient = pytest.importorskip("starlette.testclient")

WINDOW = [[1.0], [2.0], [3.0], [4.0]]  # one (4, 1) window of the fake's `signal` input
WINDOW_BYTES = 4 * 4  # float32
ANSWER_BOUND = MAX_ERROR_CHARS + 64  # `{"error": ...}` around the longest text, escapes aside
SECONDS = 2.0  # generous: these answers take milliseconds; before the fix, seconds


def kserve(shape: list[int], data: list | None = None, name: str = "signal") -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": "FP32",
                        "data": [] if data is None else data}]}


def timed_post(c, path: str, **kwargs):
    t0 = time.perf_counter()
    r = c.post(path, **kwargs)
    return r, time.perf_counter() - t0


# --- the tensor budget ---------------------------------------------------------------------


def test_a_predict_just_under_the_budget_answers_and_one_window_more_is_a_400():
    with client(max_request_tensor_bytes=4 * WINDOW_BYTES) as c:
        r = c.post("/v1/models/m:predict", json={"instances": [WINDOW] * 4})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 4
        r = c.post("/v1/models/m:predict", json={"instances": [WINDOW] * 5})
        assert (r.status_code, r.json()) == (400, {"error": (
            "input 'signal': shape [5,4,1] of DT_FLOAT is 80 bytes; this request's tensors may "
            "total at most 64 bytes (--max_request_tensor_bytes)")})
        r = c.post("/v1/models/m:predict", json={"inputs": {"signal": [WINDOW] * 5}})
        assert r.status_code == 400 and "is 80 bytes;" in r.json()["error"]


def test_a_kserve_infer_just_under_the_budget_answers_and_one_window_more_is_a_400():
    with client(max_request_tensor_bytes=4 * WINDOW_BYTES) as c:
        r = c.post("/v2/models/m/infer", json=kserve([4, 4, 1], list(range(16))))
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [4, 2, 1]
        r = c.post("/v2/models/m/infer", json=kserve([5, 4, 1], list(range(20))))
        assert (r.status_code, r.json()) == (400, {"error": (
            "input 'signal': shape [5,4,1] of DT_FLOAT is 80 bytes; this request's tensors may "
            "total at most 64 bytes (--max_request_tensor_bytes)")})


def test_the_default_budget_comes_from_the_server_settings():
    app = RestApp(FakeManager(), ServerSettings(rest_api_num_threads=1))
    default = ServerSettings().max_request_tensor_bytes
    assert app.routes.v1.max_tensor_bytes == app.routes.v2.max_tensor_bytes == default


# --- KServe V2 shapes that were 500s ---------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "named"),
    [
        ([4294967296, 4294967296], "shape [4294967296,4294967296] of DT_FLOAT is "
                                   "73786976294838206464 bytes;"),
        ([2**62, 4], f"shape [{2**62},4] of DT_FLOAT is {2**64 * 4} bytes;"),
        ([1] * 65, "shape [" + ",".join(["1"] * 64) + ",...] has 65 dimensions; at most 64"),
        ([0] * 65, "shape [" + ",".join(["0"] * 64) + ",...] has 65 dimensions; at most 64"),
        ([1] * 100_000, "has 100000 dimensions; at most 64 are supported"),
        ([0, 2**62, 2**62], f"shape [0,{2**62},{2**62}] is larger than numpy can hold"),
    ],
)
def test_a_kserve_shape_numpy_cannot_hold_is_a_400_naming_it(shape, named):
    with client() as c:
        r, seconds = timed_post(c, "/v2/models/m/infer", json=kserve(shape))
        assert r.status_code == 400, r.text
        assert named in r.json()["error"] and len(r.content) < 1024
        assert seconds < SECONDS
        if 0 not in shape:  # one value sent: numpy's reshape was the 500 here
            r = c.post("/v2/models/m/infer", json=kserve(shape, [1.0]))
            assert r.status_code == 400 and named in r.json()["error"], r.text


# --- error texts that used to amplify --------------------------------------------------------

DEEP = b"[" * 63 + b"1" + b"]" * 63  # 64 levels with the list around it: TF's pretty text x130
BODY_BYTES = 512 * 1024  # 67 MB of error text before the fix


def repeat(unit: bytes, head: bytes, tail: bytes, size: int = BODY_BYTES) -> bytes:
    return head + b",".join([unit] * ((size - len(head) - len(tail)) // (len(unit) + 1))) + tail


AMPLIFIERS = {
    "row, signature_name not a string": (
        "/v1/models/m:predict", repeat(DEEP, b'{"signature_name": 1, "instances": [', b"]}")),
    "columnar and row keys both": (
        "/v1/models/m:predict", repeat(DEEP, b'{"inputs": 1, "instances": [', b"]}")),
    "columnar, an object where a float goes": (
        "/v1/models/m:predict", repeat(DEEP[1:-1], b'{"inputs": [{"z": [', b"]}]}")),
    "row, objects in a float tensor": (
        "/v1/models/m:predict", repeat(b'{"a": ' + DEEP[1:-1] + b"}", b'{"instances": [[',
                                       b"]]}")),
    "row, ragged": ("/v1/models/m:predict", repeat(DEEP[2:-2], b'{"instances": [[[1]], ', b"]}")),
    "one long string": (
        "/v1/models/m:predict", b'{"signature_name": 1, "inputs": ["' + "\u2028".encode()
        * (BODY_BYTES // 3) + b'"]}'),
    "classify without examples": ("/v1/models/m:classify", repeat(DEEP, b'{"x": [', b"]}")),
    "regress, examples an object": (
        "/v1/models/m:regress", repeat(DEEP, b'{"examples": {"a": [', b"]}}")),
    "kserve, deep data": (
        "/v2/models/m/infer", repeat(DEEP, b'{"inputs": [{"name": "signal", "shape": [1], '
                                           b'"datatype": "FP32", "data": [', b"]}]}")),
    "an integer of 5000 digits": ("/v1/models/m:predict", b'{"inputs": [' + b"9" * 5000 + b"]}"),
}


@pytest.mark.parametrize("probe", list(AMPLIFIERS))
def test_a_hostile_body_gets_a_small_400_quickly(probe):
    path, body = AMPLIFIERS[probe]
    with client() as c:
        r, seconds = timed_post(c, path, content=body)
    assert r.status_code == 400, r.text[:300]
    assert len(r.content) < ANSWER_BOUND, len(r.content)
    assert isinstance(r.json()["error"], str)
    assert seconds < SECONDS


def test_tf_servings_text_stays_the_prefix_of_a_cut_error():
    path, body = AMPLIFIERS["row, signature_name not a string"]
    with client() as c:
        error = c.post(path, content=body).json()["error"]
    assert error.startswith('JSON Value: {\n    "signature_name": 1,\n    "instances": [\n')
    assert error.endswith(f"... (value cut at {jt.QUOTE_CHARS} characters) not formatted "
                          "correctly. 'signature_name' key must be a string value.")


# --- heavy work off the event loop -----------------------------------------------------------


class BatchingServable(FakeServable):
    """A fake with `submit_async`, as a batching servable has; records which path ran where."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def predict(self, signature_name, inputs, output_filter=()):
        self.calls.append(("predict", threading.current_thread().name))
        return super().predict(signature_name, inputs, output_filter)

    def submit_async(self, signature_name, inputs):
        self.calls.append(("submit_async", threading.current_thread().name))
        future = asyncio.get_running_loop().create_future()
        future.set_result(super().predict(signature_name, inputs))
        return future


class BatchingManager(FakeManager):
    def __init__(self) -> None:
        self.servable = BatchingServable()

    @contextmanager
    def acquire(self, name, version=None, label=None):
        yield self.servable


def test_a_batching_servable_gets_numbers_from_the_loop_and_the_slow_decode_from_a_worker():
    manager = BatchingManager()
    app = RestApp(manager, ServerSettings(rest_api_num_threads=2))
    with testclient.TestClient(app) as c:
        r = c.post("/v1/models/m:predict", json={"instances": [WINDOW]})
        assert r.status_code == 200
        assert manager.servable.calls[-1][0] == "submit_async"
        assert not manager.servable.calls[-1][1].startswith("rest")
        # `true` anywhere rules out np.asarray: the element-by-element decode, on a worker
        body = orjson.dumps({"instances": [WINDOW], "flag": True})
        r = c.post("/v1/models/m:predict", content=body)
        assert r.status_code == 200
        assert manager.servable.calls[-1][0] == "predict"
        assert manager.servable.calls[-1][1].startswith("rest")
        n = len(manager.servable.calls)
        r = c.post("/v1/models/m:predict", json={"instances": [WINDOW, [[1.0], "x"]]})
        assert r.status_code == 400 and r.json()["error"].startswith(
            "Failed to process element: 1 of 'instances' list.")
        assert len(manager.servable.calls) == n
