"""serve.grpc end to end: a real gRPC server on 127.0.0.1 over a real ModelManager,
serving tiny SavedModels made here, talked to with the stock tensorflow-serving-api stubs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serve.grpc.server import make_grpc_server, start_grpc_server
from serve.types import ModelConfig, VersionPolicy
from serve.versions.manager import ModelManager

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


# --------------------------------------------------------------------------------- fixtures


class HalfPlusN(tf.Module):
    """TF Serving's half_plus_two testdata model, rebuilt: y = 0.5 x + n."""

    def __init__(self, n: float) -> None:
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(n)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b, "x_twice": 2.0 * x}

    def _parse(self, inputs):
        feats = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        return self.a * feats["x"] + self.b

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        return {"scores": self._parse(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": self._parse(inputs)}


def _write_half_plus(path: Path, n: float) -> None:
    module = HalfPlusN(n)
    tf.saved_model.save(module, str(path), signatures={
        "serving_default": module.predict,
        "classify_x_to_y": module.classify,
        "regress_x_to_y": module.regress,
    })
    # TF2's saver writes every signature as predict; TF Serving's testdata has the real methods
    pb = path / "saved_model.pb"
    proto = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    defs = proto.meta_graphs[0].signature_def
    defs["classify_x_to_y"].method_name = CLASSIFY
    defs["regress_x_to_y"].method_name = REGRESS
    pb.write_bytes(proto.SerializeToString())


@pytest.fixture(scope="module")
def half_plus_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`hpt` version 1 is y = 0.5 x + 2, version 2 is y = 0.5 x + 3."""
    base = tmp_path_factory.mktemp("models") / "hpt"
    _write_half_plus(base / "1", 2.0)
    _write_half_plus(base / "2", 3.0)
    return base


def _hpt_config(base: Path, name: str = "hpt") -> ModelConfig:
    return ModelConfig(name, base, policy=VersionPolicy("all"),
                       labels={"stable": 1, "canary": 2})


@pytest.fixture(scope="module")
def manager(half_plus_base: Path) -> Iterator[ModelManager]:
    mgr = ModelManager([_hpt_config(half_plus_base)], poll_wait_s=0).start()
    yield mgr
    mgr.stop()


@pytest.fixture(scope="module")
def channel(manager: ModelManager) -> Iterator[grpc.Channel]:
    server, port = start_grpc_server(manager, "127.0.0.1", 0, max_workers=8)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(None)


@pytest.fixture
def predictions(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _float_tensor(values: list[list[float]]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    arr = np.asarray(values, dtype=np.float32)
    for size in arr.shape:
        proto.tensor_shape.dim.add(size=size)
    proto.float_val.extend(arr.ravel().tolist())
    return proto


def _predict_request(name: str = "hpt", x: list[list[float]] | None = None, **spec
                     ) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(_float_tensor(x if x is not None else [[1.0], [2.0], [5.0]]))
    return request


def _rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def _examples(*xs: float) -> list[tf.train.Example]:
    return [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})) for x in xs]


# --------------------------------------------------------------------------------- predict


def test_predict_answers_the_savedmodel_numbers_in_float_val(predictions) -> None:
    response = predictions.Predict(_predict_request(), timeout=10)
    y = response.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in y.tensor_shape.dim] == [3, 1]
    assert y.tensor_content == b""
    assert list(y.float_val) == [3.5, 4.0, 5.5]  # latest version: 0.5 x + 3
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["x_twice"]), [[2], [4], [10]])


def test_predict_echoes_the_model_spec_with_the_resolved_signature(predictions) -> None:
    spec = predictions.Predict(_predict_request(), timeout=10).model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("hpt", 2, "serving_default")


def test_predict_honors_a_version_and_a_label(predictions) -> None:
    v1 = predictions.Predict(_predict_request(version=1), timeout=10)
    assert list(v1.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert v1.model_spec.version.value == 1
    stable = predictions.Predict(_predict_request(version_label="stable"), timeout=10)
    assert list(stable.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert stable.model_spec.version.value == 1
    canary = predictions.Predict(_predict_request(version_label="canary"), timeout=10)
    assert canary.model_spec.version.value == 2


def test_predict_accepts_tensor_content_and_a_broadcast_scalar(predictions) -> None:
    request = _predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[4.0], [6.0]], np.float32)))
    assert request.inputs["x"].tensor_content
    assert list(predictions.Predict(request, timeout=10).outputs["y"].float_val) == [5.0, 6.0]
    broadcast = _predict_request()
    broadcast.inputs["x"].CopyFrom(tf.make_tensor_proto(2.0, dtype=tf.float32, shape=[3, 1]))
    assert list(broadcast.inputs["x"].float_val) == [2.0]
    assert list(predictions.Predict(broadcast, timeout=10).outputs["y"].float_val) == [4.0] * 3


def test_output_filter_selects_outputs(predictions) -> None:
    request = _predict_request()
    request.output_filter.append("x_twice")
    assert list(predictions.Predict(request, timeout=10).outputs) == ["x_twice"]


def test_an_unknown_output_filter_alias_is_invalid_with_tf_text(predictions) -> None:
    request = _predict_request()
    request.output_filter.append("z")
    err = _rpc_error(predictions.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "output tensor alias not found in signature: z Outputs expected to be in the set "
        "{x_twice,y}."
    )


def test_unknown_model_version_and_label_get_tf_serving_errors(predictions) -> None:
    err = _rpc_error(predictions.Predict, _predict_request("nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Latest(nope)"
    err = _rpc_error(predictions.Predict, _predict_request(version=7))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Specific(hpt, 7)"
    err = _rpc_error(predictions.Predict, _predict_request(version_label="beta"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Unrecognized servable version label: beta"


def test_an_unknown_signature_is_a_failed_precondition(predictions) -> None:
    err = _rpc_error(predictions.Predict, _predict_request(signature_name="nope"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == 'Serving signature key "nope" not found.'


def test_wrong_input_names_are_invalid_with_tf_text(predictions) -> None:
    request = _predict_request()
    request.inputs["z"].CopyFrom(_float_tensor([[1.0]]))
    err = _rpc_error(predictions.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). "
        "Sent extra: {z}. Missing but required: {}."
    )


def test_malformed_tensor_protos_are_invalid_and_the_server_keeps_serving(predictions) -> None:
    bad = [
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 7),
        tensor_pb2.TensorProto(dtype=types_pb2.DT_INVALID),
        tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE),
        _float_tensor([[1.0], [2.0]]),
        _float_tensor([[1.0]]),
        _float_tensor([[1.0]]),
    ]
    bad[0].tensor_shape.dim.add(size=2)
    bad[3].tensor_shape.dim[0].size = 3  # 2 values for 3 elements
    bad[4].tensor_shape.dim[0].size = -1
    bad[5].tensor_shape.dim[0].size = 1 << 40  # a broadcast asking for 4 TiB
    for proto in bad:
        request = _predict_request()
        request.inputs["x"].CopyFrom(proto)
        err = _rpc_error(predictions.Predict, request)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert err.details().startswith("tensor parsing error: x: ")
    string_input = _predict_request()
    string_input.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[b"a"]], dtype=object)))
    err = _rpc_error(predictions.Predict, string_input)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Expects arg[x] to be float but string is provided"
    assert predictions.Predict(_predict_request(), timeout=10).outputs["y"].float_val


def test_bytes_that_are_not_a_request_do_not_kill_the_server(channel, predictions) -> None:
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff\xff garbage", timeout=10)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert predictions.Predict(_predict_request(), timeout=10).outputs["y"].float_val


def test_outputs_can_be_sent_as_tensor_content(manager) -> None:
    server, port = start_grpc_server(manager, port=0, tensor_content_outputs=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            y = stub.Predict(_predict_request(), timeout=10).outputs["y"]
        assert not y.float_val
        np.testing.assert_array_equal(tf.make_ndarray(y), [[3.5], [4.0], [5.5]])
    finally:
        server.stop(None)


# ------------------------------------------------------------------------- classify/regress


def test_regress_answers_one_value_per_example(predictions) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "hpt"
    request.model_spec.version.value = 1
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.extend(_examples(80.0, 1.0))
    response = predictions.Regress(request, timeout=10)
    assert [r.value for r in response.result.regressions] == [42.0, 2.5]
    assert (response.model_spec.name, response.model_spec.version.value) == ("hpt", 1)
    assert response.model_spec.signature_name == "regress_x_to_y"


def test_classify_answers_scores_with_empty_labels(predictions) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "hpt"
    request.model_spec.version_label = "stable"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.extend(_examples(20.0))
    response = predictions.Classify(request, timeout=10)
    (only,) = response.result.classifications
    assert [(c.label, c.score) for c in only.classes] == [("", 12.0)]
    assert response.model_spec.version.value == 1


def test_classify_on_a_predict_signature_and_empty_input_are_invalid(predictions) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "hpt"
    request.input.example_list.examples.extend(_examples(20.0))
    err = _rpc_error(predictions.Classify, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    empty = regression_pb2.RegressionRequest()
    empty.model_spec.name = "hpt"
    empty.model_spec.signature_name = "regress_x_to_y"
    err = _rpc_error(predictions.Regress, empty)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty")


def test_multi_inference_is_unimplemented(predictions) -> None:
    err = _rpc_error(predictions.MultiInference, inference_pb2.MultiInferenceRequest())
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


# --------------------------------------------------------------------------- metadata/status


def test_metadata_returns_the_signature_def_map(predictions) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "hpt"
    response = predictions.GetModelMetadata(request, timeout=10)
    assert (response.model_spec.name, response.model_spec.version.value) == ("hpt", 2)
    assert response.model_spec.signature_name == ""
    any_ = response.metadata["signature_def"]
    assert any_.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert any_.Unpack(sig_map)
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y"} <= set(sig_map.signature_def)
    default = sig_map.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    x = default.inputs["x"]
    assert x.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in x.tensor_shape.dim] == [-1, 1]
    assert x.name == "serving_default_x:0"
    assert sig_map.signature_def["classify_x_to_y"].method_name == CLASSIFY
    assert sig_map.signature_def["classify_x_to_y"].inputs["inputs"].dtype == types_pb2.DT_STRING


def test_metadata_needs_the_signature_def_field(predictions) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "hpt"
    err = _rpc_error(predictions.GetModelMetadata, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "GetModelMetadataRequest must specify at least one metadata_field"
    request.metadata_field.append("graph")
    err = _rpc_error(predictions.GetModelMetadata, request)
    assert err.details() == "Metadata field graph is not supported"
    unknown = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    unknown.model_spec.name = "nope"
    err = _rpc_error(predictions.GetModelMetadata, unknown)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Latest(nope)"


def test_status_lists_every_version_newest_first(models) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "hpt"
    response = models.GetModelStatus(request, timeout=10)
    got = [(s.version, s.state, s.status.error_code, s.status.error_message)
           for s in response.model_version_status]
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert got == [(2, available, 0, ""), (1, available, 0, "")]
    request.model_spec.version_label = "stable"
    (one,) = models.GetModelStatus(request, timeout=10).model_version_status
    assert one.version == 1


def test_status_of_unknown_models_and_versions_is_not_found(models) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    err = _rpc_error(models.GetModelStatus, request)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Could not find any versions of model nope"
    request.model_spec.name = "hpt"
    request.model_spec.version.value = 9
    err = _rpc_error(models.GetModelStatus, request)
    assert err.details() == "Could not find version 9 of model hpt"


# ------------------------------------------------------------------------------ reload/server


def _reload_request(name: str, base: Path) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    model = request.config.model_config_list.config.add(
        name=name, base_path=str(base), model_platform="tensorflow")
    model.model_version_policy.specific.versions.append(1)
    return request


def test_reload_config_swaps_the_served_models(half_plus_base: Path) -> None:
    mgr = ModelManager([_hpt_config(half_plus_base)], poll_wait_s=0).start()
    server, port = start_grpc_server(mgr, port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            response = model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(
                _reload_request("renamed", half_plus_base), timeout=60)
            assert response.status.error_code == 0
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            answer = stub.Predict(_predict_request("renamed"), timeout=10)
            assert answer.model_spec.version.value == 1
            err = _rpc_error(stub.Predict, _predict_request("hpt"))
            assert err.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(None)
        mgr.stop()


class _FixedManager:
    """A manager that cannot reload: only what the servicers read."""

    def __init__(self, manager: ModelManager) -> None:
        self.acquire, self.status = manager.acquire, manager.status


def test_reload_is_unimplemented_when_the_manager_cannot(manager, half_plus_base) -> None:
    server, port = start_grpc_server(_FixedManager(manager), port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = model_service_pb2_grpc.ModelServiceStub(ch)
            err = _rpc_error(stub.HandleReloadConfigRequest,
                             _reload_request("hpt", half_plus_base))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(None)


def test_a_port_in_use_is_an_error(manager) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="cannot bind the gRPC server"):
            make_grpc_server(manager, "127.0.0.1", taken.getsockname()[1])


# ------------------------------------------------------------------------------ keras model


@pytest.mark.slow
def test_a_pulsecast_lstm_export_predicts_its_savedmodel_numbers(tmp_path: Path) -> None:
    import keras

    from models.export import export_savedmodel

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(16, 1), name="signal")
    hidden = keras.layers.LSTM(4)(inputs)
    outputs = keras.layers.Reshape((4, 1), name="forecast")(keras.layers.Dense(4)(hidden))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).standard_normal((3, 16, 1)).astype(np.float32)
    version = tmp_path / "lstm" / "1"
    export_savedmodel(model, version, {"model_name": "lstm", "input_steps": 16}, x[:2])
    want = tf.saved_model.load(str(version)).signatures["serving_default"](
        signal=tf.constant(x))["forecast"].numpy()

    mgr = ModelManager([ModelConfig("lstm", tmp_path / "lstm")], poll_wait_s=0).start()
    server, port = start_grpc_server(mgr, port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "lstm"
            request.inputs["signal"].CopyFrom(tf.make_tensor_proto(x))
            response = stub.Predict(request, timeout=30)
    finally:
        server.stop(None)
        mgr.stop()
    forecast = response.outputs["forecast"]
    assert list(response.outputs) == ["forecast"]
    assert [d.size for d in forecast.tensor_shape.dim] == [3, 4, 1]
    got = np.asarray(forecast.float_val, dtype=np.float32).reshape(3, 4, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert response.model_spec.signature_name == "serving_default"


def test_concurrent_predicts_each_get_their_own_answer(predictions) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> list[float]:
        response = predictions.Predict(_predict_request(x=[[float(i)]], version=1), timeout=10)
        return list(response.outputs["y"].float_val)

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(64)))
    assert got == [[0.5 * i + 2.0] for i in range(64)]


def test_failures_are_logged_without_tensor_values(predictions, caplog) -> None:
    caplog.set_level("DEBUG", logger="serve")
    request = _predict_request(x=[[12345.678]])
    request.output_filter.append("z")
    _rpc_error(predictions.Predict, request)
    assert "Predict failed" in caplog.text
    assert "12345" not in caplog.text


def test_a_bad_reload_config_is_invalid_and_an_empty_one_changes_nothing(manager, models,
                                                                        predictions) -> None:
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.model_config_list.config.add(name="x", base_path="/m", model_platform="onnx")
    err = _rpc_error(models.HandleReloadConfigRequest, bad)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "ReloadConfigRequest: config #1 (x): model_platform must be 'tensorflow', got 'onnx'"
    )
    response = models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(),
                                                timeout=10)
    assert response.status.error_code == 0
    assert predictions.Predict(_predict_request(), timeout=10).model_spec.name == "hpt"
