"""Access control on the real server: the bearer token on every route but health (enumerated from
the server's own OpenAPI description), the body size limit, path escapes in model names and
versions, the default bind address, and logs free of signal values and patient ids.
"""

from __future__ import annotations

import gzip
import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from live_server import TOKEN, LiveServer, ecg_window, write_store

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

MAX_BODY = 64 * 1024
HEALTH = {"/healthz", "/v2/health/live", "/v2/health/ready"}
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
PARAMS = {"model_name": "half", "version": "1", "label": "stable"}
# distinctive values: none may reach the log
SIGNAL_MARK = 987.654321
PATIENT_MARK = "p947361"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def server(store, tmp_path_factory) -> Iterator[LiveServer]:
    token_file = tmp_path_factory.mktemp("secrets") / "token"
    token_file.write_text(TOKEN + "\n")
    with LiveServer(store, "--max-body-bytes", str(MAX_BODY), token_file=token_file,
                    host=None) as srv:  # host=None: the default bind
        yield srv


@pytest.fixture(scope="module")
def authed(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def routes(authed) -> list[tuple[str, str]]:
    """(METHOD, concrete path) for every operation of /openapi.json, plus the docs routes."""
    doc = authed.get("/openapi.json").json()
    out = [("GET", "/openapi.json"), ("GET", "/docs")]
    for template, item in doc["paths"].items():
        path = template
        for name, value in PARAMS.items():
            path = path.replace("{" + name + "}", value)
        out += [(method.upper(), path) for method in item]
    assert len(out) >= 30
    return out


def test_without_the_token_every_route_but_health_is_401(server, routes):
    answered = {}
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}):
                r = anonymous.request(method, path, headers=headers,
                                      content=b'{"instances": [[1.0]]}' if method == "POST"
                                      else None)
                answered[(method, path)] = r.status_code
                if path in HEALTH:
                    assert r.status_code == 200, (method, path, r.status_code)
                else:
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    assert "error" in r.json()
    print(f"\nFIGURES access routes={len(routes)} checked_without_token={len(answered) * 4}")


def test_with_the_token_the_same_routes_are_not_401(authed, routes):
    for method, path in routes:
        body = b'{"instances": [[1.0]]}' if method == "POST" else None
        assert authed.request(method, path, content=body).status_code != 401, (method, path)


def test_bodies_over_the_limit_are_413_on_every_post_route(authed, routes):
    big = b'{"instances": [' + b"1.0," * (MAX_BODY // 4) + b"1.0]}"
    bomb = gzip.compress(b" " * (MAX_BODY * 64))  # small on the wire, huge inflated

    def chunks():  # no Content-Length: the limit must hold on a streamed body too
        for _ in range(MAX_BODY // 1024 + 8):
            yield b" " * 1024

    for method, path in routes:
        if method != "POST":
            continue
        assert authed.post(path, content=big).status_code == 413, path
        r = authed.post(path, content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413, path
        assert authed.post(path, content=chunks()).status_code == 413, path
    assert authed.post("/v1/models/half:predict", content=b'{"instances": [[1.0]]}').json() == {
        "predictions": [[2.5]]}


ESCAPED_NAMES = ["..", "%2e%2e", "%2E%2E", "..%2f..%2fetc", "a%2Fb", "%2Fetc%2Fpasswd",
                 "%5c..%5cetc", "a%00b", "%00", ".hidden", "~", "half%2f..%2fhalf",
                 "%252e%252e", "half%20", "%c0%ae%c0%ae", "../half", "./half", "half/..", "/"]
ESCAPED_VERSIONS = ["..", "%2e%2e", "1%2f..", "-1", "+1", "1e3", "0x1", "1.0", "%31%2f",
                    "99999999999999999999", "1%00", "%201"]


def raw_status(port: int, method: str, path: str) -> int:
    """Send `path` byte for byte (httpx would resolve `..` segments before sending)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, b'{"instances": [[1.0]]}' if method == "POST" else None,
                     {"Authorization": f"Bearer {TOKEN}"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_path_escapes_in_model_names_and_versions_are_rejected(server, routes, store):
    templates = sorted({(m, p) for m, p in routes if "/half" in p})
    checked = 0
    for method, path in templates:
        for name in ESCAPED_NAMES:
            status = raw_status(server.rest_port, method, path.replace("/half", "/" + name, 1))
            assert status in (400, 404), (method, path, name, status)
            checked += 1
        if "/versions/1" in path:
            for version in ESCAPED_VERSIONS:
                escaped = path.replace("/versions/1", "/versions/" + version)
                status = raw_status(server.rest_port, method, escaped)
                assert status in (400, 404), (method, escaped, status)
                checked += 1
    print(f"\nFIGURES escapes requests={checked}")
    assert sorted(p.name for p in store.iterdir()) == ["ecg", "half"]  # nothing made or moved


def _listening(port: int) -> list[str]:
    """Local addresses in LISTEN state on `port`, from /proc/net/tcp and tcp6 (hex, as stored)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_the_default_bind_is_loopback_only(server):
    for port in (server.rest_port, server.grpc_port):
        addresses = _listening(port)
        assert addresses, f"nothing listens on {port}"
        # 127.0.0.1 is 0100007F in /proc/net/tcp (little-endian); gRPC may hold it as the
        # v4-mapped ::ffff:127.0.0.1 in tcp6. Never 00000000 / :: (every interface).
        assert set(addresses) <= LOOPBACK, (port, addresses)
    outside = [ip for ip in _own_non_loopback_ips() if ip]
    for ip in outside:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect((ip, server.rest_port))


def _own_non_loopback_ips() -> list[str]:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent: picks the outward address
            ip = s.getsockname()[0]
    except OSError:
        return []
    return [] if ip.startswith("127.") else [ip]


def test_logs_at_info_carry_no_signal_values_and_no_patient_ids(server, authed):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serve.wire.tensor_proto import encode_tensor

    marked = [[SIGNAL_MARK]] * 16
    authed.post("/v1/models/ecg:predict", json={"instances": [marked], "patient_id": PATIENT_MARK})
    authed.post("/v1/models/ecg:forecast",
                json={"signal": {"II": [SIGNAL_MARK] * 100}, "fs": 50,
                      "patient_id": PATIENT_MARK, "record_id": PATIENT_MARK})
    # failures echo the value in the error body; the log must still not carry it
    authed.post("/v1/models/half:predict", json={"instances": [PATIENT_MARK, SIGNAL_MARK]})
    authed.post("/v1/models/ecg:forecast", json={"signal": {"II": [PATIENT_MARK]}, "fs": 50})
    authed.post("/v2/models/ecg/infer", json={"id": PATIENT_MARK, "inputs": [
        {"name": "signal", "shape": [1, 16, 1], "datatype": "FP32",
         "data": [SIGNAL_MARK] * 16}]})
    authed.post("/v1/models/half:regress",
                json={"examples": [{"x": SIGNAL_MARK, "patient_id": PATIENT_MARK}]})
    authed.post("/v1/models/ecg:predict", content=b'{"instances": [' + PATIENT_MARK.encode())
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "ecg"
        req.inputs["signal"].CopyFrom(encode_tensor(np.full((1, 16, 1), SIGNAL_MARK, np.float32)))
        token = (("authorization", f"Bearer {TOKEN}"),)
        stub.Predict(req, metadata=token, timeout=30)
        req.inputs["signal"].CopyFrom(encode_tensor(np.array([PATIENT_MARK.encode()])))
        with pytest.raises(grpc.RpcError) as failed:
            stub.Predict(req, metadata=token, timeout=30)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert authed.post("/v1/models/ecg:predict",
                       json={"instances": [ecg_window()]}).status_code == 200
    time.sleep(0.5)
    log = server.log_text()
    assert "INFO" in log  # the server does log at INFO: the check below is not vacuous
    for mark in (str(SIGNAL_MARK), "987.654", PATIENT_MARK):
        assert mark not in log, [line for line in server.lines if mark in line][:5]
