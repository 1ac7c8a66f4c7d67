"""A pulsecast model refuses an input of the wrong shape naming both shapes, on every protocol.

A real server (`live_server.LiveServer` on `write_store`: `ecg`, a pulsecast LSTM taking
`signal` (batch, 16, 1) at 50 Hz of ['II'], and `half`, TF Serving's half_plus_two without a
pulsecast.json). A window of the wrong length, channel count or rank sent to `ecg` is a 400
(INVALID_ARGUMENT) saying the shape sent and the one taken, through REST `:predict` (row and
columnar), KServe V2 infer and gRPC Predict, and through both batchers in-process; `half` keeps
TF Serving's behaviour and texts (shapes are its graph's to judge). `ModelWindow.of` is also
tested alone: which metadata declares a window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from live_server import LiveServer, ecg_window, write_lstm, write_store

from serve.errors import Code, ServingError
from serve.runtime.signatures import ModelWindow
from serve.types import SignatureInfo, TensorInfo

httpx = pytest.importorskip("httpx")


def _taken(sent: str) -> str:
    return (f"input 'signal' has shape {sent}; model ecg version 1 takes [batch, 16, 1] "
            "(16 samples at 50 Hz of ['II'])")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with LiveServer(write_store(tmp_path_factory.mktemp("store"))) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _error(response) -> tuple[int, str]:
    return response.status_code, response.json().get("error")


def _grpc_predict(server: LiveServer, model: str, inputs: dict[str, np.ndarray],
                  signature: str = "") -> tuple[object, str]:
    """(status code, details) of a gRPC Predict that fails; fails the test if it answers."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serve.wire.tensor_proto import encode_tensor

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    for alias, arr in inputs.items():
        req.inputs[alias].CopyFrom(encode_tensor(arr))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Predict(req, timeout=30)
    return failed.value.code(), failed.value.details()


# --- ecg: the window's shape, named -------------------------------------------------------


@pytest.mark.slow
def test_rest_predict_rows_of_the_wrong_length_name_the_shape_taken(client) -> None:
    r = client.post("/v1/models/ecg:predict", json={"instances": [ecg_window(20)]})
    assert _error(r) == (400, _taken("[1, 20, 1]"))
    r = client.post("/v1/models/ecg:predict", json={"instances": [ecg_window(10)] * 3})
    assert _error(r) == (400, _taken("[3, 10, 1]"))
    # the right shape still answers
    r = client.post("/v1/models/ecg:predict", json={"instances": [ecg_window(16)]})
    assert r.status_code == 200 and np.shape(r.json()["predictions"]) == (1, 4, 1)


@pytest.mark.slow
def test_rest_predict_columns_of_the_wrong_shape_name_the_shape_taken(client) -> None:
    r = client.post("/v1/models/ecg:predict", json={"inputs": {"signal": [ecg_window(564)]}})
    assert _error(r) == (400, _taken("[1, 564, 1]"))
    two_channels = [[[0.1, 0.2]] * 16]
    r = client.post("/v1/models/ecg:predict", json={"inputs": two_channels})
    assert _error(r) == (400, _taken("[1, 16, 2]"))
    r = client.post("/v1/models/ecg:predict", json={"inputs": [[0.1] * 16]})  # no channel axis
    assert _error(r) == (400, _taken("[1, 16]"))


@pytest.mark.slow
def test_kserve_infer_of_the_wrong_shape_names_the_shape_taken(client) -> None:
    body = {"inputs": [{"name": "signal", "shape": [1, 20, 1], "datatype": "FP32",
                        "data": [math.sin(i) for i in range(20)]}]}
    assert _error(client.post("/v2/models/ecg/infer", json=body)) == (400, _taken("[1, 20, 1]"))
    body["inputs"][0]["shape"] = [2, 10, 1]
    assert _error(client.post("/v2/models/ecg/infer", json=body)) == (400, _taken("[2, 10, 1]"))


@pytest.mark.slow
def test_grpc_predict_of_the_wrong_shape_names_the_shape_taken(server) -> None:
    import grpc

    x = np.zeros((1, 564, 1), np.float32)
    assert _grpc_predict(server, "ecg", {"signal": x}) == (
        grpc.StatusCode.INVALID_ARGUMENT, _taken("[1, 564, 1]"))
    assert _grpc_predict(server, "ecg", {"signal": np.zeros((2, 16), np.float32)}) == (
        grpc.StatusCode.INVALID_ARGUMENT, _taken("[2, 16]"))


@pytest.mark.slow
def test_the_checks_before_the_shape_keep_tf_servings_texts(client, server) -> None:
    import grpc

    assert _grpc_predict(server, "ecg", {"x": np.zeros((1, 20, 1), np.float32)}) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found in signature: x. Inputs expected to be in the set "
        "{signal}.")
    # a string tensor of the wrong shape: the dtype is judged first, as TF Serving's session does
    assert _grpc_predict(server, "ecg", {"signal": np.array([b"a"] * 20)}) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[signal] to be float but string is provided")
    r = client.post("/v1/models/ecg:predict", json={"instances": [[["a"]] * 20]})
    assert r.status_code == 400 and "is not of expected type: float" in r.json()["error"]


# --- half: not pulsecast's, TF Serving's behaviour --------------------------------------------


@pytest.mark.slow
def test_a_model_without_pulsecast_json_keeps_tf_servings_shapes_and_texts(client,
                                                                           server) -> None:
    import grpc

    # x is declared (-1, 1) but 0.5 x + 2 is elementwise: TF Serving answers [1, 2]
    r = client.post("/v1/models/half:predict", json={"instances": [[1.0, 2.0]]})
    assert (r.status_code, r.json()) == (200, {"predictions": [[2.5, 3.0]]})
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0, 2, 4]}]}
    r = client.post("/v2/models/half/infer", json=body)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.0, 3.0, 4.0]
    # a shape the graph cannot take is refused with the op's text
    r = client.post("/v1/models/half:predict", json={
        "signature_name": "two_inputs", "inputs": {"a": [[1.0, 2.0]], "b": [[1, 2, 3]]}})
    status, text = _error(r)
    assert status == 400 and _incompatible(text), text
    code, details = _grpc_predict(server, "half", {
        "a": np.ones((1, 2), np.float32), "b": np.ones((1, 3), np.int64)}, "two_inputs")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and _incompatible(details), details


def _incompatible(text: str) -> bool:
    """TensorFlow's text for a + b of shapes [1,2] and [1,3] (in the op's order)."""
    return text.startswith(("Incompatible shapes: [1,2] vs. [1,3]",
                            "Incompatible shapes: [1,3] vs. [1,2]"))


# --- the batchers, in-process -------------------------------------------------------------


@pytest.fixture(scope="module")
def ecg(tmp_path_factory):
    from serve.runtime.load import load_servable

    path = write_lstm(Path(tmp_path_factory.mktemp("ecg")) / "1")
    servable = load_servable("ecg", 1, path, runtime="savedmodel")
    yield servable
    servable.close()


@pytest.mark.slow
def test_both_batchers_refuse_the_wrong_shape_with_the_servables_own_error(ecg) -> None:
    from serve.batching.adaptive import AdaptiveBatcher
    from serve.batching.scheduler import BatchingParams, BatchScheduler

    x = np.zeros((1, 20, 1), np.float32)
    with pytest.raises(ServingError) as direct:
        ecg.predict("", {"signal": x})
    assert (direct.value.code, direct.value.message) == (Code.INVALID_ARGUMENT,
                                                         _taken("[1, 20, 1]"))
    scheduler = BatchScheduler(BatchingParams(num_batch_threads=1))
    adaptive = AdaptiveBatcher(ecg)
    try:
        for batched in (scheduler.wrap(ecg), adaptive):
            with pytest.raises(ServingError) as info:
                batched.predict("", {"signal": x})
            assert (info.value.code, info.value.message) == (direct.value.code,
                                                             direct.value.message)
            assert batched.predict("", {"signal": np.zeros((2, 16, 1), np.float32)})[
                "forecast"].shape == (2, 4, 1)
    finally:
        scheduler.stop()
        adaptive.close()  # also closes `ecg`'s XLA job (none: runtime="savedmodel")


# --- which versions declare a window ------------------------------------------------------

ECG_DOC = {"channels": ["II"], "fs": 50.0, "input_steps": 16, "horizon": 4, "targets": ["II"]}


def _signatures(*shapes) -> dict[str, SignatureInfo]:
    inputs = {f"in{i}": TensorInfo(f"in{i}:0", "DT_FLOAT", shape) for i, shape in enumerate(shapes)}
    return {"serving_default": SignatureInfo("serving_default", "tensorflow/serving/predict",
                                             inputs, {})}


def test_a_version_with_pulsecast_json_declares_its_window() -> None:
    assert ModelWindow.of(ECG_DOC, _signatures((-1, 16, 1))) == ModelWindow(
        "in0", 16, ("II",), 50.0)
    assert ModelWindow.of(ECG_DOC, _signatures(None)) is not None  # unknown rank: fits


@pytest.mark.parametrize(("metadata", "shapes"), [
    (None, [(-1, 16, 1)]),                                    # not pulsecast's
    ({"model_name": "test"}, [(-1, 16, 1)]),                  # a partial document
    ({**ECG_DOC, "input_steps": 0}, [(-1, 16, 1)]),           # one that breaks the contract
    (ECG_DOC, [(-1, 16, 1), (-1, 1)]),                        # two inputs
    (ECG_DOC, [(-1, 20, 1)]),                                 # a signature it disagrees with
    (ECG_DOC, [(-1, 16)]),
])
def test_other_versions_declare_no_window_and_the_graph_judges_shapes(metadata, shapes) -> None:
    assert ModelWindow.of(metadata, _signatures(*shapes)) is None
