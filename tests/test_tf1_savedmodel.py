"""TF1 SavedModels (placeholder graphs written here with `tf.compat.v1`) served by the real server
over REST and gRPC: a request's shape is the graph's to judge, as in TF Serving.

TF Serving checks a request tensor's aliases and dtype (and, in the row format, that every
instance has the same shape, so all inputs share one batch size), then feeds it to the graph
whatever shape the SignatureDef declares: its own tests send [2,2] and [2] to half_plus_two's
x, declared [-1,1] (`specs/tf-serving.md` §1.6). Neither TF Serving's session nor TensorFlow's
function call checks a fed tensor against its placeholder's static shape, so a shape fails
only where an op cannot take it, with TensorFlow's message, as INVALID_ARGUMENT / HTTP 400.

    loose  x: placeholder [None, None], signature says [-1, 1];   y = 0.5 x + 2 (elementwise)
    tight  x: placeholder [None, 1],    signature says [-1, -1];  y = x @ [[0.5]] + 2 (a dense
           layer: its matmul takes only [n, 1])
    pair   a, b: placeholders [None, None], signature says [-1, 1] each;  y = a + b

Pulsecast's own exports keep their XLA runtime for the shapes it was compiled for; any other
shape takes the plain SavedModel, which answers or refuses it the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from live_server import LiveServer

tf = pytest.importorskip("tensorflow")
grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")


def write_tf1_savedmodel(path: Path, placeholders: dict[str, list], declared: dict[str, list],
                         body) -> Path:
    """A TF1 SavedModel: `placeholders` {alias: placeholder shape} -> `body(tensors)` = y,
    under `serving_default` whose TensorInfo for each alias declares `declared[alias]`."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        xs = {k: v1.placeholder(tf.float32, shape=s, name=k) for k, s in placeholders.items()}
        y = tf.identity(body(xs), name="y")
        sess.run(v1.global_variables_initializer())
        inputs = {}
        for alias, x in xs.items():
            info = v1.saved_model.utils.build_tensor_info(x)
            info.tensor_shape.CopyFrom(tf.TensorShape(declared[alias]).as_proto())
            inputs[alias] = info
        signature = v1.saved_model.signature_def_utils.build_signature_def(
            inputs=inputs, outputs={"y": v1.saved_model.utils.build_tensor_info(y)},
            method_name="tensorflow/serving/predict")
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(
            sess, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    return path


def _loose(xs):
    return tf.compat.v1.Variable(0.5, name="a") * xs["x"] + tf.compat.v1.Variable(2.0, name="b")


def _tight(xs):
    kernel = tf.compat.v1.Variable([[0.5]], name="kernel")
    return tf.matmul(xs["x"], kernel) + tf.compat.v1.Variable(2.0, name="bias")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf1_store")
    write_tf1_savedmodel(root / "loose" / "1", {"x": [None, None]}, {"x": [None, 1]}, _loose)
    write_tf1_savedmodel(root / "tight" / "1", {"x": [None, 1]}, {"x": [None, None]}, _tight)
    write_tf1_savedmodel(root / "pair" / "1", {"a": [None, None], "b": [None, None]},
                         {"a": [None, 1], "b": [None, 1]}, lambda xs: xs["a"] + xs["b"])
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[LiveServer]:
    with LiveServer(store) as srv:
        yield srv


@pytest.fixture(scope="module")
def rest(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server: LiveServer):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict(rest: httpx.Client, model: str, body: dict) -> tuple[int, dict]:
    r = rest.post(f"/v1/models/{model}:predict", json=body)
    assert r.headers["content-type"].startswith("application/json")
    return r.status_code, r.json()


def _grpc_predict(stub, model: str, inputs: dict, output_filter: tuple[str, ...] = ()):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, value in inputs.items():
        proto = value if not isinstance(value, np.ndarray) else tf.make_tensor_proto(value)
        request.inputs[alias].CopyFrom(proto)
    request.output_filter.extend(output_filter)
    return stub.Predict(request, timeout=30)


def _grpc_error(stub, model: str, inputs: dict, output_filter: tuple[str, ...] = ()):
    with pytest.raises(grpc.RpcError) as info:
        _grpc_predict(stub, model, inputs, output_filter)
    return info.value


# --- REST ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, expected", [
    # TF Serving's own half_plus_two cases (http_rest_api_handler_test.cc), x declared [-1,1]
    ({"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    ({"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    ({"signature_name": "serving_default", "inputs": [3.0, 4.0]}, {"outputs": [3.5, 4.0]}),
    ({"inputs": [[1.0], [2.0]]}, {"outputs": [[2.5], [3.0]]}),
    ({"inputs": 2.0}, {"outputs": 3.0}),
])
def test_a_looser_placeholder_takes_shapes_the_signature_does_not_declare(rest, body, expected):
    assert _predict(rest, "loose", body) == (200, expected)


def test_a_tighter_placeholder_answers_what_its_graph_takes(rest):
    # declared [-1,-1]; the matmul takes [n, 1]
    assert _predict(rest, "tight", {"instances": [[1.0], [3.0]]}) == (
        200, {"predictions": [[2.5], [3.5]]})


@pytest.mark.parametrize("body, message", [
    ({"instances": [[1.0, 2.0], [3.0, 4.0]]},
     "Matrix size-incompatible: In[0]: [2,2], In[1]: [1,1]"),
    ({"instances": [1.0, 2.0]}, "In[0] ndims must be >= 2"),  # a rank-1 x into the matmul
])
def test_a_shape_the_graph_refuses_is_a_400_with_tensorflows_message(rest, body, message):
    status, doc = _predict(rest, "tight", body)
    assert status == 400 and list(doc) == ["error"]
    # the op's text first, as TF Serving answers it: no Python frames naming server files
    assert doc["error"].startswith(message + "\n\t [[{{node MatMul}}]]"), doc["error"]
    assert "File " not in doc["error"] and "Graph execution error" not in doc["error"]


def test_wrong_dtypes_are_still_refused_before_the_graph(rest):
    status, doc = _predict(rest, "loose", {"instances": [["a", "b"]]})
    assert (status, doc) == (400, {"error": (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "a" Type: String is not of expected type: float')})
    status, doc = _predict(rest, "loose", {"instances": [[True]]})
    assert status == 400 and "is not of expected type: float" in doc["error"]


def test_row_format_inputs_share_one_batch_but_columnar_ones_go_to_the_graph(rest):
    ok = {"instances": [{"a": [1.0], "b": [10.0]}, {"a": [2.0], "b": [20.0]}]}
    assert _predict(rest, "pair", ok) == (200, {"predictions": [[11.0], [22.0]]})
    # every instance must have the same shape for each input (TF Serving's AddInstanceItem)
    status, doc = _predict(rest, "pair", {"instances": [{"a": [1.0], "b": [10.0]},
                                                        {"a": [2.0, 3.0], "b": [20.0]}]})
    assert status == 400
    assert doc["error"].startswith("Failed to process element: 1 key: a of 'instances' list.")
    # columnar inputs may differ in dim 0: the graph decides (a + b broadcasts [2,1] + [1,1])
    assert _predict(rest, "pair", {"inputs": {"a": [[1.0], [2.0]], "b": [[10.0]]}}) == (
        200, {"outputs": [[11.0], [12.0]]})
    status, doc = _predict(rest, "pair", {"inputs": {"a": [[1.0], [2.0]], "b": [[1.0], [2.0],
                                                                                [3.0]]}})
    assert status == 400 and "Incompatible shapes: [2,1] vs. [3,1]" in doc["error"]


def test_kserve_v2_infer_shares_the_predict_path(rest):
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                        "data": [1.0, 2.0, 3.0, 4.0]}]}
    r = rest.post("/v2/models/loose/infer", json=body)
    assert r.status_code == 200
    (out,) = r.json()["outputs"]
    assert (out["name"], out["shape"], out["data"]) == ("y", [2, 2], [2.5, 3.0, 3.5, 4.0])
    r = rest.post("/v2/models/tight/infer", json=body)
    assert r.status_code == 400 and "Matrix size-incompatible" in r.json()["error"]


# --- gRPC (tensorflow-serving-api's stub) ----------------------------------------------------


def test_grpc_predict_feeds_undeclared_shapes_to_the_graph(stub):
    reply = _grpc_predict(stub, "loose", {"x": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)})
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["y"]), [[2.5, 3.0], [3.5, 4.0]])
    reply = _grpc_predict(stub, "loose", {"x": np.array([1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["y"]), [2.5, 3.0])
    assert reply.model_spec.signature_name == "serving_default"


def test_grpc_scalar_input_answers_like_tf_servings_prediction_success(stub):
    from tensorflow.core.framework import tensor_pb2

    # predict_util_test.cc PredictionSuccess: float_val 2.0 with no shape -> y float_val 3
    x = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum, float_val=[2.0])
    y = _grpc_predict(stub, "loose", {"x": x}).outputs["y"]
    expected = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum, float_val=[3.0])
    expected.tensor_shape.SetInParent()
    assert y == expected


def test_grpc_shapes_the_graph_refuses_are_invalid_argument_with_tensorflows_message(stub):
    err = _grpc_error(stub, "tight", {"x": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Matrix size-incompatible: In[0]: [2,2], In[1]: [1,1]" in err.details()
    reply = _grpc_predict(stub, "tight", {"x": np.array([[1.0], [3.0]], np.float32)})
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["y"]), [[2.5], [3.5]])


def test_grpc_keeps_tf_servings_dtype_and_output_filter_checks(stub):
    err = _grpc_error(stub, "loose", {"x": np.array([b"any_value"], dtype=object)})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be float but string is provided" in err.details()  # InputTensorsHaveWrongType
    x = {"x": np.array([[1.0]], np.float32)}
    err = _grpc_error(stub, "loose", x, ("y", "y"))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "duplicate output tensor alias: y")
    assert list(_grpc_predict(stub, "loose", x, ("y",)).outputs) == ["y"]


# --- pulsecast's own exports: the XLA runtime only for the shapes it was compiled for ---------


def test_a_pulsecast_export_serves_other_window_lengths_through_the_savedmodel(
        tmp_path: Path) -> None:
    from serve_models import write_pulsecast_lstm

    from serve.errors import Code, ServingError
    from serve.runtime.load import load_servable

    path = write_pulsecast_lstm(tmp_path / "1")  # Input (16, 1)
    fast = load_servable("lstm", 1, path)
    assert fast.wait_for_runtime(120) == "xla"  # compiled in the background after the load
    plain = tf.saved_model.load(str(path)).signatures["serving_default"]
    rng = np.random.default_rng(0)
    for steps in (16, 17):  # 17: the graph takes it, so TF Serving answers it too
        x = rng.standard_normal((3, steps, 1)).astype(np.float32)
        got = fast.predict("", {"signal": x})["forecast"]
        want = plain(signal=tf.constant(x))["forecast"].numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ServingError) as info:
        fast.predict("", {"signal": np.zeros((1, 15, 1), np.float32)})
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "Trying to access element 15 in a list with 15 elements" in info.value.message
