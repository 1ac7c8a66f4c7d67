"""Slow clients are cut off: read deadlines on REST requests (`serve.http.timeouts`).

A real `pulsecast serve` with `--header-timeout-s 1 --body-timeout-s 1` and raw sockets: a
slowloris trickling header bytes, a body stalled after its headers, a connection that sends
nothing, 50 of them at once; the cuts counted in the metrics by phase; keep-alive reuse past
the header timeout untouched. Then uvicorn in this process with a tiny app, on both parsers
(httptools and the h11 fallback), for what the model store cannot show: an app slower than
both deadlines is not cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import re
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from live_server import LiveServer

from serve.http.timeouts import make_protocol_class
from serve.metrics import ServingMetrics

pytestmark = pytest.mark.slow

TIMEOUT_S = 1.0  # both deadlines of the live server
SLACK_S = 3.0  # a cut may come this late on a busy 2-core machine
EARLY_S = 0.5  # ...and this much early (the timer starts at connect, the clock here later)
PARSERS = [
    "h11",
    pytest.param("httptools", marks=pytest.mark.skipif(
        importlib.util.find_spec("httptools") is None, reason="httptools is not installed")),
]


def body_head(path: str = "/v1/models/half:predict", length: int = 1000) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def wait_closed(sock: socket.socket, limit_s: float, trickle: bytes = b"",
                every_s: float = 0.2) -> tuple[float, bytes]:
    """Seconds until the peer closes `sock` (EOF or reset), and what it sent before.

    With `trickle`, one byte of it is sent every `every_s` while the socket stays open."""
    t0 = time.monotonic()
    received = b""
    while time.monotonic() - t0 < limit_s:
        readable, _, _ = select.select([sock], [], [], every_s)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return time.monotonic() - t0, received
            if not chunk:
                return time.monotonic() - t0, received
            received += chunk
        elif trickle:
            try:
                sock.send(trickle[:1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0, received
            trickle = trickle[1:] or trickle
    raise AssertionError(f"socket still open after {limit_s:g} s; received {received[:200]!r}")


def read_responses(sock: socket.socket, n: int = 1) -> list[bytes]:
    """The next `n` whole responses (status line to the end of a Content-Length body)."""
    data, responses = b"", []
    while len(responses) < n:
        head, sep, rest = data.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length: *(\d+)", head) if sep else None
        if match and len(rest) >= int(match.group(1)):
            end = len(head) + len(sep) + int(match.group(1))
            responses.append(data[:end])
            data = data[end:]
            continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(responses)} responses: {data!r}")
        data += chunk
    return responses


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def get_status(port: int, path: str = "/v1/models/half") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def slow_client_counts(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/monitoring/prometheus/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    pattern = r'^pulsecast_http_slow_client_closed_total\{phase="(\w+)"\} (\S+)$'
    return {phase: float(n) for phase, n in re.findall(pattern, text, re.MULTILINE)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from serve_models import half_plus_two_dir

    store = tmp_path_factory.mktemp("store")
    half_plus_two_dir(store / "half" / "1")
    with LiveServer(store, "--header-timeout-s", str(TIMEOUT_S),
                    "--body-timeout-s", str(TIMEOUT_S)) as srv:
        yield srv


# -- the live server ---------------------------------------------------------------------------


def test_a_socket_trickling_header_bytes_is_closed_at_the_header_deadline(
        server: LiveServer) -> None:
    with connect(server.rest_port) as sock:
        sock.send(b"G")
        took, _ = wait_closed(sock, TIMEOUT_S + SLACK_S, trickle=b"ET /v1/models/half HTTP/1.1\r\n")
    assert TIMEOUT_S - EARLY_S <= took <= TIMEOUT_S + SLACK_S


def test_a_body_stalled_after_its_headers_gets_408_at_the_body_deadline(
        server: LiveServer) -> None:
    with connect(server.rest_port) as sock:
        sock.sendall(body_head(length=1000) + b'{"instance')
        took, received = wait_closed(sock, TIMEOUT_S + SLACK_S)
    assert TIMEOUT_S - EARLY_S <= took <= TIMEOUT_S + SLACK_S
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in received
    assert received.endswith(b'{"error": "Request body not received within 1 s"}')


def test_a_body_trickled_a_byte_at_a_time_does_not_extend_the_body_deadline(
        server: LiveServer) -> None:
    with connect(server.rest_port) as sock:
        sock.sendall(body_head(length=1000))
        took, _ = wait_closed(sock, TIMEOUT_S + SLACK_S, trickle=b" " * 1000, every_s=0.1)
    assert TIMEOUT_S - EARLY_S <= took <= TIMEOUT_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: LiveServer) -> None:
    with connect(server.rest_port) as sock:
        took, received = wait_closed(sock, TIMEOUT_S + SLACK_S)
    assert TIMEOUT_S - EARLY_S <= took <= TIMEOUT_S + SLACK_S
    assert received == b""


def test_fifty_slow_sockets_are_all_closed_while_requests_are_answered(
        server: LiveServer) -> None:
    port = server.rest_port
    socks = [connect(port) for _ in range(50)]
    try:
        t0 = time.monotonic()
        for i, sock in enumerate(socks):
            if i % 3 == 1:
                sock.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: te")
            elif i % 3 == 2:
                sock.sendall(body_head(length=1000) + b"{}")
        assert get_status(port) == 200  # served while all 50 are held open
        open_socks = set(socks)
        closed_at: list[float] = []
        while open_socks and time.monotonic() - t0 < TIMEOUT_S + SLACK_S + 2:
            readable, _, _ = select.select(list(open_socks), [], [], 0.2)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    open_socks.discard(sock)
                    closed_at.append(time.monotonic() - t0)
        assert not open_socks, f"{len(open_socks)} of 50 slow sockets still open"
        assert max(closed_at) <= TIMEOUT_S + SLACK_S + 2
    finally:
        for sock in socks:
            sock.close()
    assert get_status(port) == 200
    assert server.alive()


def test_cuts_are_counted_by_phase_and_logged_without_payload(server: LiveServer) -> None:
    port = server.rest_port
    before = slow_client_counts(port)
    with connect(port) as silent, connect(port) as headers_sock, connect(port) as body_sock:
        headers_sock.sendall(b"GET /v1/models/secret-path-123 HTTP/1.1\r\n")
        body_sock.sendall(body_head(length=1000) + b'{"instances": [[4242.0]')
        for sock in (silent, headers_sock, body_sock):
            wait_closed(sock, TIMEOUT_S + SLACK_S)
    after = slow_client_counts(port)
    assert after["headers"] - before["headers"] == 2  # a silent connection counts as headers
    assert after["body"] - before["body"] == 1
    log = server.log_text()
    assert "did not complete request headers within 1 s" in log
    assert "did not complete a request body within 1 s" in log
    assert "sent nothing within 1 s of connecting" in log
    assert "secret-path-123" not in log and "4242" not in log


def test_a_keep_alive_connection_idle_past_the_header_timeout_is_reused(
        server: LiveServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    try:
        conn.request("GET", "/v1/models/half")
        first = conn.getresponse()
        first.read()
        first_sock = conn.sock
        time.sleep(TIMEOUT_S + 0.5)  # idle between requests is keep-alive's (30 s), not ours
        conn.request("GET", "/v1/models/half")
        second = conn.getresponse()
        second.read()
        second_sock = conn.sock
    finally:
        conn.close()
    assert (first.status, second.status) == (200, 200)
    assert first_sock is not None and second_sock is first_sock  # not reconnected


def test_a_request_started_after_keep_alive_still_has_a_header_deadline(
        server: LiveServer) -> None:
    with connect(server.rest_port) as sock:
        sock.sendall(b"GET /v1/models/half HTTP/1.1\r\nHost: test\r\n\r\n")
        [response] = read_responses(sock)
        assert response.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /v1/models/ha")
        took, received = wait_closed(sock, TIMEOUT_S + SLACK_S)
    assert TIMEOUT_S - EARLY_S <= took <= TIMEOUT_S + SLACK_S
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


# -- uvicorn in this process, on both parsers --------------------------------------------------

APP_SLEEP_S = 0.8  # longer than both deadlines of the tiny server
TINY_TIMEOUT_S = 0.3


async def tiny_app(scope: dict, receive, send) -> None:
    """Reads the whole body, sleeps APP_SLEEP_S for /slow, answers 200 with the body's length."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(APP_SLEEP_S)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def tiny_server(parser: str) -> Iterator[tuple[int, ServingMetrics]]:
    import uvicorn

    metrics = ServingMetrics()
    protocol = make_protocol_class(TINY_TIMEOUT_S, TINY_TIMEOUT_S, metrics, parser=parser)
    config = uvicorn.Config(tiny_app, http=protocol, loop="asyncio", lifespan="off",
                            log_config=None, access_log=False, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield sock.getsockname()[1], metrics
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_an_app_slower_than_both_deadlines_is_not_cut(parser: str) -> None:
    with tiny_server(parser) as (port, metrics), connect(port) as sock:
        sock.sendall(body_head("/slow", length=5) + b"hello")
        t0 = time.monotonic()
        [response] = read_responses(sock)
        took = time.monotonic() - t0
        # and the connection stays usable for a fast request after it
        sock.sendall(body_head("/fast", length=2) + b"hi")
        [again] = read_responses(sock)
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\n5")
    assert took >= APP_SLEEP_S - 0.05
    assert again.startswith(b"HTTP/1.1 200 ") and again.endswith(b"\r\n\r\n2")
    text = metrics.render().decode()
    assert 'pulsecast_http_slow_client_closed_total{phase="headers"} 0.0' in text
    assert 'pulsecast_http_slow_client_closed_total{phase="body"} 0.0' in text


@pytest.mark.parametrize("parser", PARSERS)
def test_each_parser_cuts_slow_headers_stalled_bodies_and_silent_connections(
        parser: str) -> None:
    limit_s = TINY_TIMEOUT_S + SLACK_S
    with tiny_server(parser) as (port, metrics):
        with connect(port) as silent, connect(port) as trickle, connect(port) as stalled:
            trickle.sendall(b"POST /fast HTTP/1.1\r\n")
            stalled.sendall(body_head("/fast", length=100) + b"0123456789")
            silent_s, silent_got = wait_closed(silent, limit_s)
            trickle_s, _ = wait_closed(trickle, limit_s, trickle=b"X-Slow: 1\r\n", every_s=0.05)
            stalled_s, stalled_got = wait_closed(stalled, limit_s)
        # a pipelined pair read whole in one chunk is answered twice
        with connect(port) as sock:
            sock.sendall((body_head("/fast", length=1) + b"a") * 2)
            both = b"".join(read_responses(sock, 2))
        text = metrics.render().decode()
    assert max(silent_s, trickle_s, stalled_s) <= limit_s
    assert silent_got == b""
    assert stalled_got.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert both.count(b"HTTP/1.1 200 ") == 2
    assert 'pulsecast_http_slow_client_closed_total{phase="headers"} 2.0' in text
    assert 'pulsecast_http_slow_client_closed_total{phase="body"} 1.0' in text


def test_make_protocol_class_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="header_timeout_s must be > 0, got 0"):
        make_protocol_class(0, 1)
    with pytest.raises(ValueError, match="parser must be one of httptools, h11, got 'zttp'"):
        make_protocol_class(1, 1, parser="zttp")


def test_serving_metrics_count_slow_clients_by_phase_from_zero() -> None:
    metrics = ServingMetrics()
    text = metrics.render().decode()
    assert 'pulsecast_http_slow_client_closed_total{phase="headers"} 0.0' in text
    assert 'pulsecast_http_slow_client_closed_total{phase="body"} 0.0' in text
    metrics.observe_slow_client("body")
    assert 'pulsecast_http_slow_client_closed_total{phase="body"} 1.0' in metrics.render().decode()
    with pytest.raises(ValueError, match="phase must be one of headers, body, got 'url'"):
        metrics.observe_slow_client("url")
