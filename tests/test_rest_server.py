"""The real server process over real HTTP: TF Serving's routes, errors and shapes, pulsecast's
:forecast, KServe V2, auth, limits, metrics, docs, hot version swaps and the SIGTERM drain.

One server per module (`pulsecast serve --model-store ...` in a subprocess) over a store holding
a tiny half_plus_two `tf.Module` and a small pulsecast-style Keras LSTM exported with
`models.export.export_savedmodel` (window 16, LSTM(4), horizon 4, pulsecast.json metadata).
"""

from __future__ import annotations

import gzip
import json
import math
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from live_server import LiveServer

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token"
MAX_BODY = 1024 * 1024
ECG_META = {
    "model_name": "ecg", "channels": ["II"], "targets": ["II"], "units": ["mV"],
    "target_units": ["mV"], "fs": 50.0, "input_steps": 16, "horizon": 4, "quantiles": [],
    "dataset": "/secret/local/path",
}


def make_half_plus_two(path: Path) -> None:
    """TF Serving's classic test model: y = x / 2 + 2, input `x` (-1,), output `y`."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 0.5 + 2.0}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def make_lstm(path: Path) -> None:
    import keras

    from models.export import export_savedmodel

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(16, 1), name="signal")
    z = keras.layers.LSTM(4)(inputs)
    y = keras.layers.Dense(4)(z)
    model = keras.Model(inputs, keras.layers.Reshape((4, 1), name="forecast")(y))
    warmup = np.random.default_rng(0).normal(size=(2, 16, 1)).astype("float32")
    export_savedmodel(model, path, ECG_META, warmup)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    make_half_plus_two(root / "half" / "1")
    make_lstm(root / "ecg" / "1")
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory) -> Iterator[LiveServer]:
    token_file = tmp_path_factory.mktemp("secrets") / "token"
    token_file.write_text(TOKEN + "\n")
    srv = LiveServer(store, "--max-body-bytes", str(MAX_BODY), "--drain-timeout-s", "10",
                     token_file=token_file)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=30) as c:
        yield c


def ecg_window(n: int = 16) -> list:
    return [[math.sin(i / 3.0)] for i in range(n)]


# --- start-up ----------------------------------------------------------------------------------


def test_startup_logs_the_bound_ports_in_one_parseable_line(server):
    assert server.info["rest"] == f"http://127.0.0.1:{server.rest_port}"
    assert server.info["grpc"] == f"127.0.0.1:{server.grpc_port}"
    assert server.info["models"] == ["ecg", "half"]


# --- TF Serving: status and metadata -----------------------------------------------------------


def test_status_is_protobuf_json_with_int64_as_strings(client):
    for path in ("/v1/models/half", "/v1/models/half/versions/1"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {"model_version_status": [
            {"version": "1", "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}}
        ]}


def test_metadata_has_the_doubled_signature_def_key(client):
    r = client.get("/v1/models/ecg/metadata")
    assert r.status_code == 200
    doc = r.json()
    assert doc["model_spec"] == {"name": "ecg", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["signal"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["signal"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}, {"size": "16", "name": ""},
                {"size": "1", "name": ""}],
        "unknown_rank": False,
    }
    assert "forecast" in sig["outputs"]
    half = client.get("/v1/models/half/versions/1/metadata").json()
    assert half["model_spec"]["version"] == "1"


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/half/versions/9", 404, "Could not find version 9 of model half"),
        ("GET", "/v1/models/half/labels/stable", 400,
         "Unrecognized servable version label: stable"),
        ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        ("GET", "/v1/foo", 400, "Malformed request: GET /v1/foo"),
        ("PUT", "/v1/models/half", 400, "Malformed request: PUT /v1/models/half"),
        ("DELETE", "/v1/models/half", 400, "Malformed request: DELETE /v1/models/half"),
        ("POST", "/v1/models/half/metadata", 400,
         "Malformed request: POST /v1/models/half/metadata"),
        ("GET", "/v1/models/half:predict", 400, "Malformed request: GET /v1/models/half:predict"),
        ("POST", "/v1/models/half/version/5:predict", 400,
         "Malformed request: POST /v1/models/half/version/5:predict"),
        ("POST", "/v1/models/half/versions/HELLO:regress", 400,
         "Malformed request: POST /v1/models/half/versions/HELLO:regress"),
        ("POST", "/v1/models/half:PREDICT", 400, "Malformed request: POST /v1/models/half:PREDICT"),
        ("POST", "/v1/models/half/versions/99999999999999999999:predict", 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
    ],
)
def test_tf_serving_routing_errors(client, method, path, status, error):
    r = client.request(method, path, content=b'{"instances": [1.0]}')
    assert (r.status_code, r.json()) == (status, {"error": error})


def test_paths_outside_v1_are_404(client):
    r = client.get("/nope")
    assert r.status_code == 404 and "error" in r.json()


# --- TF Serving: predict -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]},
         {"predictions": [2.5, 3.0, 4.5]}),
        ("/v1/models/half/versions/1:predict", {"instances": [1.0, 2.0]},
         {"predictions": [2.5, 3.0]}),
        ("/v1/models/half/versions/1:predict",
         {"signature_name": "serving_default", "inputs": [3.0, 4.0]}, {"outputs": [3.5, 4.0]}),
        ("/V1/MODELS/half:predict", {"inputs": [0]}, {"outputs": [2.0]}),
    ],
)
def test_predict_like_tf_servings_examples(client, path, body, expected):
    r = client.post(path, json=body)
    assert (r.status_code, r.json()) == (200, expected)


def test_whole_numbers_are_written_with_a_decimal_point(client):
    r = client.post("/v1/models/half:predict", content=b'{"instances": [2]}')
    assert r.content.replace(b" ", b"") == b'{"predictions":[3.0]}'


def test_nan_and_infinity_travel_as_bare_tokens(client):
    r = client.post("/v1/models/half:predict", content=b'{"instances": [NaN, Infinity]}')
    assert r.status_code == 200
    assert r.content.replace(b" ", b"") == b'{"predictions":[NaN,Infinity]}'


def test_predict_on_the_lstm_in_row_and_columnar_form(client):
    row = client.post("/v1/models/ecg:predict", json={"instances": [ecg_window()]})
    col = client.post("/v1/models/ecg:predict", json={"inputs": {"signal": [ecg_window()]}})
    assert row.status_code == col.status_code == 200
    assert np.array(row.json()["predictions"]).shape == (1, 4, 1)
    np.testing.assert_allclose(row.json()["predictions"], col.json()["outputs"], rtol=1e-6)


def test_gzip_request_bodies_are_accepted(client):
    body = gzip.compress(b'{"instances": [1.0, 2.0]}')
    r = client.post("/v1/models/half:predict", content=body,
                    headers={"Content-Encoding": "gzip"})
    assert (r.status_code, r.json()) == (200, {"predictions": [2.5, 3.0]})


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/v1/models/nope:predict", b'{"instances": [1]}', 404,
         "Servable not found for request: Latest(nope)"),
        ("/v1/models/half/versions/7:predict", b'{"instances": [1]}', 404,
         "Servable not found for request: Specific(half, 7)"),
        ("/v1/models/half/labels/stable:predict", b'{"instances": [1]}', 400,
         "Unrecognized servable version label: stable"),
        ("/v1/models/half:predict", b"", 400, "JSON Parse error: The document is empty"),
        ("/v1/models/half:predict", b'{"instances": [1,}', 400,
         "JSON Parse error: Invalid value. at offset: 17"),
        ("/v1/models/half:predict", b'{"instances": [1], "signature_name": "zz"}', 400,
         'Serving signature name: "zz" not found in signature def'),
        ("/v1/models/half:predict", b'{"x": 1}', 400, "Missing 'inputs' or 'instances' key"),
        ("/v1/models/half:predict", b'{"instances": ["a"]}', 400,
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         'JSON Value: "a" Type: String is not of expected type: float'),
    ],
)
def test_predict_errors_are_tf_servings(client, path, body, status, error):
    r = client.post(path, content=body)
    assert (r.status_code, r.json()) == (status, {"error": error})


def test_regress_on_a_predict_signature_is_a_400(client):
    r = client.post("/v1/models/half:regress", json={"examples": [{"x": 1.0}]})
    assert r.status_code == 400 and r.json()["error"]
    r = client.post("/v1/models/half:classify", json={"foo": 1})
    assert r.status_code == 400
    assert "key 'examples' is expected and was not found" in r.json()["error"]


# --- pulsecast: :forecast and the model contract -----------------------------------------------


def forecast_body(n: int = 400, fs: float = 100.0, **extra) -> dict:
    return {"signal": {"II": [math.sin(i / 10) for i in range(n)]}, "fs": fs, **extra}


def test_forecast_resamples_and_returns_timestamps_after_the_end(client):
    r = client.post("/v1/models/ecg:forecast", json=forecast_body())
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == "ecg" and doc["version"] == 1 and doc["fs"] == 50.0
    assert doc["units"] == ["mV"] and doc["targets"] == ["II"]
    assert len(doc["forecast"]["II"]) == 4
    assert doc["timestamps"] == [0.02, 0.04, 0.06, 0.08]


def test_forecast_with_start_time_gives_iso_timestamps_and_fills_short_gaps(client):
    body = forecast_body(start_time="2024-01-01T00:00:00+00:00")
    body["signal"]["II"][390] = None  # 10 ms gap
    doc = client.post("/v1/models/ecg:forecast", json=body).json()
    # last sample at 3.99 s, then 20 ms steps at the model's 50 Hz
    assert doc["timestamps"][0] == "2024-01-01T00:00:04.010+00:00"
    assert all(math.isfinite(v) for v in doc["forecast"]["II"])


def test_forecast_equals_predict_on_the_same_window_at_the_models_rate(client):
    samples = [math.sin(i / 3) for i in range(40)]
    fc = client.post("/v1/models/ecg:forecast",
                     json={"signal": {"II": samples}, "fs": 50}).json()
    pr = client.post("/v1/models/ecg:predict",
                     json={"instances": [[[v] for v in samples[-16:]]]}).json()
    np.testing.assert_allclose(fc["forecast"]["II"], np.ravel(pr["predictions"]), rtol=1e-5)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (forecast_body(n=20), "signal is too short: the model needs at least 0.320 s"),
        ({"signal": {"V": [1.0] * 100}, "fs": 100}, "missing channel(s) ['II']"),
        ({"signal": {"II": [1.0] * 300 + [None] * 100}, "fs": 100},
         "channel 'II' has a gap of 1.000 s"),
        ({"signal": {"II": ["a"] * 100}, "fs": 100}, "channel 'II' must hold numbers or null"),
        ({"signal": {"II": [1.0] * 100}, "fs": -1}, "'fs' must be a positive number"),
        ({"signal": {"II": [1.0] * 100}, "fs": 100, "start_time": "yesterday"},
         "'start_time' must be an ISO 8601 time"),
        ({"fs": 100}, "'signal' must be an object"),
    ],
)
def test_forecast_refuses_bad_signals_with_a_400_naming_the_problem(client, body, fragment):
    r = client.post("/v1/models/ecg:forecast", json=body)
    assert r.status_code == 400 and fragment in r.json()["error"], r.text


def test_forecast_on_a_model_without_pulsecast_metadata_is_a_400(client):
    r = client.post("/v1/models/half:forecast", json=forecast_body())
    assert r.status_code == 400 and "no pulsecast.json" in r.json()["error"]


def test_the_model_contract_route_shows_public_metadata_only(client):
    doc = client.get("/pulsecast/models/ecg").json()
    assert doc["version"] == 1
    assert doc["metadata"]["channels"] == ["II"] and doc["metadata"]["input_steps"] == 16
    assert "dataset" not in doc["metadata"]
    assert client.get("/pulsecast/models/half").status_code == 404


# --- KServe V2, health, readiness --------------------------------------------------------------


def test_kserve_v2_metadata_ready_and_infer(client):
    assert client.get("/v2").json()["name"] == "pulsecast"
    meta = client.get("/v2/models/ecg").json()
    assert meta["inputs"] == [{"name": "signal", "datatype": "FP32", "shape": [-1, 16, 1]}]
    assert client.get("/v2/models/ecg/ready").json() == {"name": "ecg", "ready": True}
    flat = [v for row in ecg_window() for v in row]
    r = client.post("/v2/models/ecg/infer", json={
        "id": "42", "inputs": [{"name": "signal", "shape": [1, 16, 1], "datatype": "FP32",
                                "data": flat}]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "42" and out["model_name"] == "ecg" and out["model_version"] == "1"
    assert out["outputs"][0]["name"] == "forecast" and out["outputs"][0]["shape"] == [1, 4, 1]
    predicted = client.post("/v1/models/ecg:predict", json={"instances": [ecg_window()]}).json()
    np.testing.assert_allclose(out["outputs"][0]["data"], np.ravel(predicted["predictions"]),
                               rtol=1e-6)


def test_kserve_errors(client):
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").json() == {
        "error": "Model with name nope does not exist."}
    assert client.get("/v2/models/half/versions/9/ready").status_code == 503
    r = client.post("/v2/models/ecg/infer", json={"inputs": [
        {"name": "signal", "shape": [1, 16, 1], "datatype": "FP32", "data": [1.0]}]})
    assert r.status_code == 400 and "needs 16 values, got 1" in r.json()["error"]


def test_health_and_readiness_need_no_token(server):
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/v2/health/live").json() == {"live": True}
        assert anonymous.get("/v2/health/ready").json() == {"ready": True}


# --- safety ------------------------------------------------------------------------------------


def test_every_other_route_needs_the_bearer_token(server):
    with httpx.Client(base_url=server.url) as anonymous:
        for path in ("/v1/models/half", "/monitoring/prometheus/metrics", "/openapi.json",
                     "/v2/models/half"):
            r = anonymous.get(path)
            assert r.status_code == 401 and "error" in r.json()
        r = anonymous.get("/v1/models/half", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = anonymous.get("/v1/models/half", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200


def test_bodies_over_the_limit_are_413_even_when_gzipped(client):
    r = client.post("/v1/models/half:predict", content=b" " * (MAX_BODY + 1))
    assert r.status_code == 413 and "error" in r.json()
    bomb = gzip.compress(b" " * (MAX_BODY * 4))
    r = client.post("/v1/models/half:predict", content=bomb,
                    headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413


@pytest.mark.parametrize(
    "path",
    ["/v1/models/%2e%2e:predict", "/v1/models/..:predict", "/v1/models/a%2Fb:predict",
     "/v1/models/a%00b:predict", "/v1/models/%5c..%5cetc:predict"],
)
def test_model_names_cannot_escape(client, path):
    r = client.post(path, content=b'{"instances": [1]}')
    assert r.status_code == 400 and r.json()["error"].startswith("Malformed request")


FUZZ_BODIES = [
    b"\xff\xfe\x00", b"null", b"[]", b'"x"', b"1e999999", b'{"instances": null}',
    b'{"instances": [[]]}', b'{"instances": [{}]}', b'{"inputs": {}}', b'{"inputs": {"b64": 1}}',
    b'{"instances": [1e400]}', b'{"instances": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
    b'{"instances": [123456789012345678901234567890]}', b'{"signal": 1}',
    b'{"signal": {"II": [[1]]}, "fs": 1}', b'{"signal": {"II": [1e308, -1e308]}, "fs": 1e-300}',
    b'{"signal": {"II": [1, 2]}, "fs": 1e300}', b'{"signal": {"II": []}, "fs": 50}',
    b'{"examples": [{"x": {"b64": "@@"}}]}', b'{"inputs": [{"name": "signal"}]}',
    b'{"inputs": [{"name": "signal", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
    b'{"inputs": [{"name": "signal", "shape": [1], "datatype": "BYTES", "data": [1]}]}',
]
FUZZ_PATHS = [
    "/v1/models/ecg:predict", "/v1/models/half:predict", "/v1/models/ecg:forecast",
    "/v1/models/ecg:classify", "/v1/models/half:regress", "/v2/models/ecg/infer",
]


def test_fuzzed_requests_are_never_a_500(client):
    for path in FUZZ_PATHS:
        for body in FUZZ_BODIES:
            r = client.post(path, content=body)
            assert 200 <= r.status_code < 500, (path, body[:60], r.status_code, r.text)
            if r.status_code >= 400:
                assert isinstance(r.json()["error"], str)
    for path in ("/v1/models/" + "a" * 5000, "/v1/models/%ff%fe", "/v2/models/x/versions/-1",
                 "/v1/models/half/labels/%00", "/v1/models/ :predict", "/pulsecast/models/.."):
        r = client.get(path)
        assert 200 <= r.status_code < 500, (path, r.status_code)
    assert client.get("/healthz").status_code == 200  # the worker is still alive


def test_logs_carry_counts_and_latencies_never_signal_values(client, server):
    marker = 123.456789
    client.post("/v1/models/half:predict", json={"instances": [marker]})
    client.post("/v1/models/ecg:forecast", json={"signal": {"II": [marker]}, "fs": 1})
    time.sleep(0.2)
    assert not any("123.456" in line for line in server.lines)


# --- metrics and docs --------------------------------------------------------------------------


def test_prometheus_metrics_use_tf_serving_names(client):
    client.post("/v1/models/half:predict", json={"instances": [1.0]})
    r = client.get("/monitoring/prometheus/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert re.search(r':tensorflow:serving:request_count\{model_name="half",status="OK"\} \d+',
                     text)
    assert ':tensorflow:serving:request_latency_bucket{model_name="half",API="predict",' \
           'entrypoint="REST",le="10"}' in text
    assert 'pulsecast_http_request_duration_seconds_bucket{code="200",le="0.001",' \
           'model_name="half",route="predict"}' in text


def test_grpc_calls_count_in_the_same_prometheus_metrics(server, client):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serve.wire.tensor_proto import encode_tensor

    def grpc_count(text: str, status: str) -> int:
        pattern = ':tensorflow:serving:request_count{model_name="ecg",status="' + status + '"} '
        found = re.search(re.escape(pattern) + r"(\d+)", text)
        return int(found.group(1)) if found else 0

    before = client.get("/monitoring/prometheus/metrics").text
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        token = (("authorization", f"Bearer {TOKEN}"),)  # gRPC needs it as REST does
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "ecg"
        req.inputs["signal"].CopyFrom(encode_tensor(np.array(ecg_window(), np.float32)[None]))
        stub.Predict(req, metadata=token, timeout=30)
        stub.Predict(req, metadata=token, timeout=30)
        req.inputs["signal"].CopyFrom(encode_tensor(np.zeros((1, 3, 1), np.float32)))
        with pytest.raises(grpc.RpcError):
            stub.Predict(req, metadata=token, timeout=30)
        req.model_spec.name = "no-such-model"
        with pytest.raises(grpc.RpcError):
            stub.Predict(req, metadata=token, timeout=30)
    text = client.get("/monitoring/prometheus/metrics").text
    assert grpc_count(text, "OK") == grpc_count(before, "OK") + 2
    assert grpc_count(text, "INVALID_ARGUMENT") == grpc_count(before, "INVALID_ARGUMENT") + 1
    assert re.search(r':tensorflow:serving:request_latency_count\{model_name="ecg",API="Predict",'
                     r'entrypoint="GRPC"\} 2\b', text), text[-2000:]
    assert "no-such-model" not in text  # unknown names do not become label values


def test_openapi_describes_the_routes(client):
    doc = client.get("/openapi.json").json()
    for path in ("/v1/models/{model_name}:predict", "/v1/models/{model_name}:forecast",
                 "/v1/models/{model_name}/metadata", "/v2/models/{model_name}/infer",
                 "/healthz", "/monitoring/prometheus/metrics"):
        assert path in doc["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_openapi_lists_forecast_first_with_the_served_model_names_as_an_enum(client):
    doc = client.get("/openapi.json").json()

    assert next(iter(doc["paths"])) == "/v1/models/{model_name}:forecast"
    assert doc["tags"][0]["name"] == "pulsecast"

    def names(path: str, method: str) -> list[str]:
        params = doc["paths"][path][method]["parameters"]
        return next(p for p in params if p["name"] == "model_name")["schema"]["enum"]

    assert names("/v1/models/{model_name}:forecast", "post") == ["ecg"]  # half has no contract
    assert names("/v1/models/{model_name}:predict", "post") == ["ecg", "half"]


def test_the_openapi_example_of_forecast_answers_200_as_it_stands(client):
    doc = client.get("/openapi.json").json()
    examples = doc["paths"]["/v1/models/{model_name}:forecast"]["post"]["requestBody"][
        "content"]["application/json"]["examples"]

    assert list(examples) == ["ecg"]
    assert examples["ecg"]["summary"] == "ecg: 16 samples (0.32 s) of II at 50 Hz"
    r = client.post("/v1/models/ecg:forecast", json=examples["ecg"]["value"])
    assert r.status_code == 200, r.text
    assert len(r.json()["forecast"]["II"]) == 4


def test_the_forecast_example_fits_a_trend_model_and_a_model_without_a_contract_has_none():
    from serve.http.forecast import make_window, parse_forecast_request
    from serve.http.openapi import build_openapi, forecast_example

    trend = {"channels": ["ABPMEAN", "HR"], "targets": ["ABPMEAN"], "units": ["mmHg", "bpm"],
             "fs": 1 / 60, "input_steps": 120, "horizon": 15}
    example = forecast_example("vitals", trend)

    window = make_window(parse_forecast_request(example["value"]), trend)
    assert window.shape == (120, 2)
    assert 70 <= window[:, 0].min() and window[:, 0].max() <= 110  # mmHg around 90
    assert example["summary"] == "vitals: 120 samples (120 min) of ABPMEAN, HR at 0.01667 Hz"
    assert forecast_example("half", {}) is None
    shape_only = build_openapi()["paths"]["/v1/models/{model_name}:forecast"]["post"]
    assert list(shape_only["requestBody"]["content"]["application/json"]["examples"]) == [
        "shape"]


# --- the predict CLI ---------------------------------------------------------------------------


def test_predict_cli_forecasts_from_a_wfdb_record(server, write_record, tmp_path, capsys):
    from pipelines.cli import main

    t = np.arange(0, 10, 1 / 125)
    record = write_record("r1", np.sin(2 * np.pi * 1.2 * t), ["MLII"], fs=125.0)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    out = tmp_path / "fc.png"
    code = main(["predict", "--url", server.url, "--model-name", "ecg", "--record", str(record),
                 "--at", "5", "--out", str(out), "--token-file", str(token_file)])
    assert code == 0
    printed = capsys.readouterr().out
    answer = json.loads(printed[: printed.rindex("}") + 1])
    assert answer["model_name"] == "ecg" and len(answer["forecast"]["II"]) == 4
    assert out.stat().st_size > 1000


# --- live versions and shutdown (keep last: they change the server) ----------------------------


def test_a_new_version_dropped_in_while_a_client_loops_fails_no_request(client, store):
    failures, versions_seen, done = [], set(), threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=client.base_url, headers=client.headers) as c:
            while not done.is_set():
                r = c.post("/v1/models/half:predict", json={"instances": [1.0]})
                if r.status_code != 200 or r.json() != {"predictions": [2.5]}:
                    failures.append((r.status_code, r.text))

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        staging = store / "half" / ".2.staging"
        shutil.copytree(store / "half" / "1", staging)
        staging.rename(store / "half" / "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = client.get("/v1/models/half").json()["model_version_status"]
            versions_seen = {(s["version"], s["state"]) for s in status}
            if ("2", "AVAILABLE") in versions_seen and ("1", "END") in versions_seen:
                break
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        done.set()
        thread.join(30)
    assert ("2", "AVAILABLE") in versions_seen
    assert failures == []
    assert client.get("/v1/models/half/metadata").json()["model_spec"]["version"] == "2"


def test_sigterm_drains_in_flight_requests_and_exits_0(server, client):
    results: list[int | str] = []

    def one() -> None:
        try:
            r = client.post("/v1/models/ecg:forecast", json=forecast_body(n=20_000))
            results.append(r.status_code)
        except httpx.TransportError as err:  # sent after the listener closed
            results.append(type(err).__name__)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert server.proc.wait(60) == 0
    assert all(r == 200 or isinstance(r, str) for r in results), results
    assert 200 in results
    assert any("draining" in line for line in server.lines)
