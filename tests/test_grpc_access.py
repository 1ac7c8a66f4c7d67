"""The locked doors of gRPC: the bearer token on every method but health, config reloads only
with the token and only under the allowed roots, requests that cost what they weigh, and answers
that name no file. A real gRPC server on 127.0.0.1 over a real ModelManager serving TF Serving's
half_plus_two, talked to with the stock tensorflow-serving-api stubs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serve_models import half_plus_two_dir
from tensorflow.core.framework import tensor_pb2, types_pb2
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

from serve.grpc.auth import DENIED_TEXT
from serve.grpc.server import start_grpc_server
from serve.grpc.service import INTERNAL_TEXT
from serve.types import ModelConfig
from serve.versions.manager import ModelManager

TOKEN = "grpc-door-token-31d9"
GOOD = (("authorization", f"Bearer {TOKEN}"),)
BAD_METADATA = {
    "none": (),
    "wrong token": (("authorization", "Bearer wrong"),),
    "no scheme": (("authorization", TOKEN),),
    "basic": (("authorization", f"Basic {TOKEN}"),),
    "token in another key": (("x-api-key", TOKEN),),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """`<root>/store/half/1`, and a SavedModel outside the store (`<root>/outside/half/1`)."""
    root = tmp_path_factory.mktemp("doors")
    half_plus_two_dir(root / "store" / "half" / "1")
    half_plus_two_dir(root / "outside" / "half" / "1", offset=100.0)
    return root


@pytest.fixture()
def served(store) -> Iterator[tuple[ModelManager, grpc.Channel]]:
    """A fresh manager and token-guarded server per test (reloads change what is served)."""
    manager = ModelManager([ModelConfig("half", store / "store" / "half")], poll_wait_s=0)
    manager.start()
    server, port = start_grpc_server(manager, port=0, api_token=TOKEN,
                                     max_receive_bytes=1 << 20,
                                     max_request_tensor_bytes=4 << 20)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield manager, channel
    finally:
        channel.close()
        server.stop(None)
        manager.stop()


def _x(values: list[float]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values)
    proto.tensor_shape.dim.add(size=len(values))
    proto.tensor_shape.dim.add(size=1)
    return proto


def _predict(x: tensor_pb2.TensorProto | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].CopyFrom(x if x is not None else _x([1.0, 2.0]))
    return request


def _reload(base: Path, name: str = "half") -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    config = request.config.model_config_list.config.add()
    config.name, config.base_path, config.model_platform = name, str(base), "tensorflow"
    return request


def _every_method(channel: grpc.Channel) -> dict[str, tuple]:
    """(callable, request) for every method of PredictionService and ModelService."""
    predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "half"
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "half"
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half"
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half"
    return {
        "Predict": (predictions.Predict, _predict()),
        "Classify": (predictions.Classify, classify),
        "Regress": (predictions.Regress, regress),
        "MultiInference": (predictions.MultiInference, inference_pb2.MultiInferenceRequest()),
        "GetModelMetadata": (predictions.GetModelMetadata, metadata),
        "GetModelStatus": (models.GetModelStatus, status),
        "HandleReloadConfigRequest": (models.HandleReloadConfigRequest,
                                      model_management_pb2.ReloadConfigRequest()),
    }


def _code(call, request, metadata=GOOD) -> grpc.StatusCode:
    try:
        call(request, metadata=metadata, timeout=30)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _error(call, request, metadata=GOOD) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, metadata=metadata, timeout=30)
    return info.value


def test_every_method_without_the_token_is_unauthenticated(served) -> None:
    _, channel = served
    for method, (call, request) in _every_method(channel).items():
        for variant, metadata in BAD_METADATA.items():
            err = _error(call, request, metadata)
            assert (err.code(), err.details()) == (
                grpc.StatusCode.UNAUTHENTICATED, DENIED_TEXT), (method, variant)


def test_with_the_token_no_method_is_unauthenticated(served) -> None:
    _, channel = served
    codes = {method: _code(call, request) for method, (call, request)
             in _every_method(channel).items()}
    assert grpc.StatusCode.UNAUTHENTICATED not in codes.values(), codes
    assert codes["Predict"] == codes["GetModelStatus"] == grpc.StatusCode.OK


def test_the_token_also_works_as_call_credentials(served) -> None:
    _, channel = served
    call, request = _every_method(channel)["Predict"]
    # what grpc's own bearer credential sends: `authorization: Bearer <token>`
    credentials = grpc.access_token_call_credentials(TOKEN)
    local = grpc.local_channel_credentials()
    with grpc.secure_channel(channel._channel.target().decode(),  # noqa: SLF001
                             grpc.composite_channel_credentials(local, credentials)) as secure:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(secure)
        answer = stub.Predict(request, timeout=30)
    assert list(answer.outputs["y"].float_val) == [2.5, 3.0]


def test_health_is_open_without_the_token_and_says_serving(served) -> None:
    _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING)
    assert health.Check(health_pb2.HealthCheckRequest(service="half"), timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING)
    assert _error(health.Check, health_pb2.HealthCheckRequest(service="nope"), ()).code() == (
        grpc.StatusCode.NOT_FOUND)


def test_a_reload_without_the_token_unloads_nothing(served, store) -> None:
    manager, channel = served
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    for metadata in BAD_METADATA.values():
        err = _error(models.HandleReloadConfigRequest,
                     _reload(store / "store" / "half", "other"), metadata)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert manager.model_names() == ["half"] and manager.available_versions("half") == [1]


@pytest.mark.parametrize("where", ["/etc", "outside", "dotdot", "link"])
def test_a_reload_outside_the_allowed_roots_is_invalid_and_unloads_nothing(
    served, store, where
) -> None:
    manager, channel = served
    base = {
        "/etc": Path("/etc"),
        "outside": store / "outside" / "half",
        "dotdot": store / "store" / ".." / "outside" / "half",
        "link": store / "store" / "link-out",
    }[where]
    if where == "link":
        base.unlink(missing_ok=True)
        base.symlink_to(store / "outside" / "half", target_is_directory=True)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    err = _error(models.HandleReloadConfigRequest, _reload(base))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        f"ReloadConfigRequest: config #1 (half): base_path {str(base)!r} is outside the "
        "folders this server may load models from (--model_config_roots)")
    assert manager.model_names() == ["half"] and manager.available_versions("half") == [1]
    answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        _predict(), metadata=GOOD, timeout=30)
    assert list(answer.outputs["y"].float_val) == [2.5, 3.0]  # still the store's half, not +100


def test_a_reload_under_the_allowed_roots_works_with_the_token(served, store) -> None:
    manager, channel = served
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    response = models.HandleReloadConfigRequest(_reload(store / "store" / "half", "renamed"),
                                                metadata=GOOD, timeout=60)
    assert response.status.error_code == 0
    assert manager.model_names() == ["renamed"]


def test_explicit_roots_replace_the_default_ones(store) -> None:
    manager = ModelManager([ModelConfig("half", store / "store" / "half")], poll_wait_s=0)
    manager.start()
    server, port = start_grpc_server(manager, port=0, config_roots=[store / "outside"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            err = _error(models.HandleReloadConfigRequest, _reload(store / "store" / "half"))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert models.HandleReloadConfigRequest(
                _reload(store / "outside" / "half", "far"), timeout=60).status.error_code == 0
            request = _predict()
            request.model_spec.name = "far"
            answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=30)
            assert list(answer.outputs["y"].float_val) == [100.5, 101.0]
    finally:
        server.stop(None)
        manager.stop()


BROADCASTS = {
    "float [500000, 999, 1]": ("DT_FLOAT", [500000, 999, 1], {"float_val": [1.0]}),
    "float [100000, 999, 1]": ("DT_FLOAT", [100000, 999, 1], {"float_val": [1.0]}),
    "double [2**20, 1]": ("DT_DOUBLE", [2**20, 1], {"double_val": [1.0]}),
    "int64 [2**40, 1]": ("DT_INT64", [2**40, 1], {"int64_val": [1]}),
    "half [2**22, 2**10]": ("DT_HALF", [2**22, 2**10], {"half_val": [1]}),
    "complex128 [2**30]": ("DT_COMPLEX128", [2**30], {"dcomplex_val": [1.0, 2.0]}),
    "string [2**28]": ("DT_STRING", [2**28], {"string_val": [b"x"]}),
    "bool [2**31]": ("DT_BOOL", [2**31], {"bool_val": [True]}),
    "float [2**62, 2**62]": ("DT_FLOAT", [2**62, 2**62], {"float_val": [1.0]}),
}


@pytest.mark.parametrize("probe", sorted(BROADCASTS))
def test_a_tiny_broadcast_predict_is_refused_before_it_allocates(served, probe) -> None:
    _, channel = served
    dtype, shape, values = BROADCASTS[probe]
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype), **values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    request = _predict(proto)
    assert request.ByteSize() < 100
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    t0 = time.perf_counter()
    err = _error(stub.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert time.perf_counter() - t0 < 2.0
    assert err.details().startswith("tensor parsing error: x: ")
    assert "over the limit of" in err.details()
    answer = stub.Predict(_predict(), metadata=GOOD, timeout=30)
    assert list(answer.outputs["y"].float_val) == [2.5, 3.0]


def test_a_broadcast_within_the_receive_limit_still_fills_the_shape(served) -> None:
    _, channel = served
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[4.0])
    proto.tensor_shape.dim.add(size=1000)
    proto.tensor_shape.dim.add(size=1)
    answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        _predict(proto), metadata=GOOD, timeout=30)
    assert np.allclose(answer.outputs["y"].float_val, 4.0)
    assert len(answer.outputs["y"].float_val) == 1000


def test_tensors_over_the_request_budget_are_refused_and_messages_over_the_limit_too(
    served,
) -> None:
    _, channel = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    # 5 MiB of declared float32 in tensor_content form, budget 4 MiB: refused before decoding
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 16)
    proto.tensor_shape.dim.add(size=5 * 2**18)
    proto.tensor_shape.dim.add(size=1)
    err = _error(stub.Predict, _predict(proto))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "5242880 bytes, over the limit of 4194304 bytes" in err.details()
    # a message over the 1 MiB receive limit never reaches the servicer
    big = _x([0.5] * (300_000))
    assert _error(stub.Predict, _predict(big)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_status_texts_name_the_model_and_version_not_the_folder(store, tmp_path) -> None:
    base = tmp_path / "m"
    half_plus_two_dir(base / "1")
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"garbage")
    manager = ModelManager([ModelConfig("m", base)], poll_wait_s=0)
    manager.start()
    server, port = start_grpc_server(manager, port=0, api_token=TOKEN)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "m"
            answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                request, metadata=GOOD, timeout=30)
    finally:
        server.stop(None)
        manager.stop()
    texts = [s.status.error_message for s in answer.model_version_status]
    broken = next(s for s in answer.model_version_status if s.version == 2)
    assert broken.status.error_code != 0 and "<model m version 2>" in broken.status.error_message
    assert not any(str(tmp_path) in t or "/tmp" in t for t in texts), texts


class _BrokenManager:
    """A manager whose lookups fail with a bug's exception text (naming a file)."""

    def model_names(self) -> list[str]:
        return ["m"]

    def status(self, *args):
        raise RuntimeError("bug while reading /srv/secret/models/m/1/pulsecast.json")


def test_an_unexpected_error_answers_internal_without_its_text() -> None:
    server, port = start_grpc_server(_BrokenManager(), port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "m"
            err = _error(model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus,
                         request, ())
    finally:
        server.stop(None)
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, INTERNAL_TEXT)
