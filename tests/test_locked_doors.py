"""Every probe of the locked-doors review (docs/reliability.md, threat model), replayed against a
real `pulsecast serve` with a token, on REST and gRPC alike.

Each probe must be answered with a 4xx / INVALID_ARGUMENT / UNAUTHENTICATED within 2 s, the
server's peak memory (VmHWM, `/proc/<pid>/status`) must grow by less than 200 MB over it, and a
normal request must be answered right after. The server runs the SavedModel runtime
(`--runtime savedmodel`) so no background XLA compile moves the peak while probes run.
Slow clients (header and body timeouts) are `tests/test_slow_clients.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from live_server import TOKEN, LiveServer, ecg_window, write_store

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GRPC_AUTH = (("authorization", f"Bearer {TOKEN}"),)
PEAK_GROWTH_MB = 200
ANSWER_S = 2.0


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process in KiB (`VmHWM`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError(f"no VmHWM line in /proc/{pid}/status")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = write_store(tmp_path_factory.mktemp("store"))
    # a version that cannot load (its status must not name the folder) and a version folder
    # linking out of its base path (refused)
    broken = root / "half" / "3"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory) -> Iterator[LiveServer]:
    token_file = tmp_path_factory.mktemp("secrets") / "token"
    token_file.write_text(TOKEN + "\n")
    with LiveServer(store, "--runtime", "savedmodel", token_file=token_file) as srv:
        yield srv


@pytest.fixture(scope="module")
def rest(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


def _normal_request_works(rest: httpx.Client) -> None:
    r = rest.post("/v1/models/ecg:predict", json={"instances": [ecg_window()]})
    assert r.status_code == 200, r.text[:300]


def probe(server: LiveServer, rest: httpx.Client, send: Callable[[], object]) -> object:
    """Run `send()`; check time, peak memory and a normal request after. Returns its answer."""
    before = vm_hwm_kib(server.pid)
    t0 = time.perf_counter()
    answer = send()
    took = time.perf_counter() - t0
    growth_mb = (vm_hwm_kib(server.pid) - before) / 1024
    assert took < ANSWER_S, f"answered in {took:.2f} s"
    assert growth_mb < PEAK_GROWTH_MB, f"peak memory grew {growth_mb:.0f} MB"
    assert server.alive()
    _normal_request_works(rest)
    print(f"\nFIGURES probe took={took:.3f}s peak_growth={growth_mb:.1f}MB")
    return answer


def _grpc_error(call, request, metadata=GRPC_AUTH) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, metadata=metadata, timeout=30)
    return info.value


# ------------------------------------------------------------------------- one access rule


def test_grpc_methods_without_the_token_are_unauthenticated(server, rest, channel) -> None:
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "ecg"
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "ecg"
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "ecg"
    reload = model_management_pb2.ReloadConfigRequest()
    config = reload.config.model_config_list.config.add()
    config.name, config.base_path, config.model_platform = "etc", "/etc", "tensorflow"
    for call, request in ((predictions.Predict, predict), (models.GetModelStatus, status),
                          (predictions.GetModelMetadata, metadata),
                          (models.HandleReloadConfigRequest, reload)):
        for bad in ((), (("authorization", "Bearer nope"),)):
            err = probe(server, rest, lambda c=call, r=request, m=bad: _grpc_error(c, r, m))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rest.get("/v1/models/ecg").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_reload_naming_etc_is_invalid_even_with_the_token(server, rest, channel) -> None:
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    reload = model_management_pb2.ReloadConfigRequest()
    config = reload.config.model_config_list.config.add()
    config.name, config.base_path, config.model_platform = "ecg", "/etc", "tensorflow"
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    err = probe(server, rest, lambda: _grpc_error(stub.HandleReloadConfigRequest, reload))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    time.sleep(1.0)  # several polls: the log must not fill with warnings about /etc
    assert "/etc" not in server.log_text().split("LISTENING", 1)[1]
    assert rest.get("/v1/models/ecg").json()["model_version_status"][0]["state"] == "AVAILABLE"


# --------------------------------------------------------------- a request costs what it weighs


@pytest.mark.parametrize("dtype,shape,field,value,code", [
    ("DT_FLOAT", [500000, 999, 1], "float_val", 1.0, "INVALID_ARGUMENT"),
    ("DT_FLOAT", [100000, 999, 1], "float_val", 1.0, "INVALID_ARGUMENT"),
    # the model's own window shape: refused past the receive limit (16 MiB), answered within
    ("DT_FLOAT", [300000, 16, 1], "float_val", 1.0, "INVALID_ARGUMENT"),
    ("DT_FLOAT", [50000, 16, 1], "float_val", 1.0, "OK"),
    ("DT_DOUBLE", [100000, 999, 1], "double_val", 1.0, "INVALID_ARGUMENT"),
    ("DT_INT32", [100000, 999, 1], "int_val", 1, "INVALID_ARGUMENT"),
    ("DT_STRING", [100000, 999, 1], "string_val", b"x", "INVALID_ARGUMENT"),
])
def test_a_44_byte_grpc_predict_cannot_cost_gigabytes(server, rest, channel, dtype, shape,
                                                       field, value, code) -> None:
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ecg"
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype))
    getattr(proto, field).append(value)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    request.inputs["signal"].CopyFrom(proto)
    assert request.ByteSize() < 64
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def send() -> grpc.StatusCode:
        try:
            stub.Predict(request, metadata=GRPC_AUTH, timeout=30)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    assert probe(server, rest, send) == grpc.StatusCode[code]


@pytest.mark.parametrize("fs", [5.813946611267183, 7.123456789, 49.999999, 0.51234567891])
def test_a_rate_with_a_huge_resampling_ratio_answers_fast(server, rest, fs) -> None:
    n = max(int(np.ceil(fs * 2)), 49)
    body = {"signal": {"II": [float(np.sin(i / 3)) for i in range(n)]}, "fs": fs}
    r = probe(server, rest, lambda: rest.post("/v1/models/ecg:forecast", json=body))
    assert r.status_code in (200, 400), r.text[:300]
    if r.status_code == 400:
        assert "fs" in r.json()["error"]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def test_an_amplifying_error_text_is_cut(server, rest) -> None:
    # ~2 MB of 64-deep single-element lists: TF Serving's quoting of the value once answered
    # 258 MB in 4.9 s
    rows = b",".join([_nested(62)] * (2_000_000 // 126))
    body = b'{"instances": [' + rows + b', "x"]}'
    assert 1_900_000 < len(body) < 2_100_000
    r = probe(server, rest, lambda: rest.post("/v1/models/ecg:predict", content=body))
    assert r.status_code == 400
    assert len(r.content) < 64 * 1024


@pytest.mark.parametrize("shape", [
    [4294967296, 4294967296], [2**62, 4], [1] * 65, [2**63 - 1, 2**63 - 1, 2],
])
def test_kserve_shapes_that_overflow_are_400s(server, rest, shape) -> None:
    body = {"inputs": [{"name": "signal", "shape": shape, "datatype": "FP32", "data": []}]}
    r = probe(server, rest, lambda: rest.post("/v2/models/ecg/infer", json=body))
    assert r.status_code == 400, r.text[:300]


def test_a_far_future_start_time_is_a_400_naming_it(server, rest) -> None:
    body = {"signal": {"II": [float(np.sin(i / 5)) for i in range(200)]}, "fs": 100,
            "start_time": "9999-12-31T23:59:59"}
    r = probe(server, rest, lambda: rest.post("/v1/models/ecg:forecast", json=body))
    assert r.status_code == 400
    assert "9999-12-31" in r.json()["error"]


def test_big_rest_tensors_are_refused_before_they_are_decoded(server, rest) -> None:
    # a 16 MiB body cannot exceed the 64 MiB budget as JSON; KServe's declared shape can claim
    # more than the data holds: the claim is checked first
    body = {"inputs": [{"name": "signal", "shape": [2**24, 16, 1], "datatype": "FP32",
                        "data": [0.0] * 16}]}
    r = probe(server, rest, lambda: rest.post("/v2/models/ecg/infer", json=body))
    assert r.status_code == 400


# ------------------------------------------------------------------------ no paths in answers


def test_status_answers_name_no_folder_on_rest_or_grpc(server, rest, channel, store) -> None:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    text = rest.get("/v1/models/half").text
    assert "<model half version 3>" in text or "version 3" in text
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half"
    answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        request, metadata=GRPC_AUTH, timeout=30)
    texts = [text] + [s.status.error_message for s in answer.model_version_status]
    for t in texts:
        assert str(store) not in t and "/tmp/" not in t, t
    assert any(s.version == 3 and s.status.error_code != 0
               for s in answer.model_version_status)
    assert str(store) in server.log_text()  # the log keeps the path for the operator


def test_a_version_folder_linking_out_of_the_base_path_is_not_served(server, rest, store,
                                                                     tmp_path) -> None:
    outside = tmp_path / "outside"
    from live_server import write_lstm

    write_lstm(outside)
    (store / "ecg" / "9").symlink_to(outside, target_is_directory=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            statuses = rest.get("/v1/models/ecg").json()["model_version_status"]
            nine = [s for s in statuses if s["version"] == "9"]
            if nine and nine[0]["state"] == "END":
                break
            time.sleep(0.2)
        assert nine and nine[0]["state"] == "END", statuses
        assert "outside the model's base path" in nine[0]["status"]["error_message"]
        assert str(outside) not in json.dumps(statuses)
        _normal_request_works(rest)
    finally:
        (store / "ecg" / "9").unlink()
