"""The gRPC server: `make_grpc_server` / `start_grpc_server` around `serve.grpc.service`.

The caller owns the lifecycle: `make_grpc_server(...)` returns an unstarted `grpc.Server`;
`start_grpc_server(...)` starts one and returns it with its bound port (port 0 = a free one).
Defaults follow TF Serving where they are safe: `--grpc_max_threads` 4 x CPUs, responses up to
INT32_MAX bytes, and a port already in use is an error (no SO_REUSEPORT sharing). Where TF
Serving's defaults let a small request cost gigabytes, pulsecast is stricter (docs/reliability.md,
threat model):

- requests are received up to `max_receive_bytes` (the server passes the REST body limit,
  16 MiB by default; TF Serving: INT32_MAX);
- one request's tensors may decode to at most `max_request_tensor_bytes` in all, and a one-value
  broadcast may fill at most `max_receive_bytes` (what a request could carry as values), both
  checked on the declared shapes before anything is allocated;
- with `api_token`, every method but the standard health service needs `authorization: Bearer
  <token>` metadata (`serve.grpc.auth`);
- a config reload may only name base paths under `config_roots` (`serve.grpc.service`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from serve.grpc.service import ModelServicer, PredictionServicer
from serve.wire.tensor_proto import DEFAULT_MAX_TENSOR_BYTES

log = logging.getLogger(__name__)

# TF Serving sets the server's max message size to INT32_MAX (server.cc): kept for responses.
DEFAULT_MAX_MESSAGE_BYTES = 2**31 - 1
# Requests: the REST body limit's default (serve.settings), not INT32_MAX.
DEFAULT_MAX_RECEIVE_BYTES = 16 * 1024 * 1024
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0  # the REST header time-out's default
CONNECTION_IDLE_S = 300
CONNECTION_AGE_S = 1800
CONNECTION_GRACE_S = 60


def _default_workers() -> int:
    return 4 * (os.cpu_count() or 1)  # --grpc_max_threads defaults to 4 x CPUs


def _build(manager: Any, host: str, port: int, *, max_workers: int | None = None,
           max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
           tensor_content_outputs: bool = False, metrics: Any = None,
           max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES,
           max_request_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
           api_token: str | None = None,
           config_roots: Sequence[Path] | None = None,
           handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S) -> tuple[grpc.Server, int]:
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    from serve.grpc.health import add_health_servicer

    interceptors = []
    if api_token is not None:
        from serve.grpc.auth import TokenInterceptor

        on_denied = getattr(metrics, "observe_grpc_denied", None)
        interceptors.append(TokenInterceptor(api_token, on_denied))
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers or _default_workers(),
                           thread_name_prefix="grpc-serve"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port already in use is an error, not shared
            # slow clients: a connection must finish its HTTP/2 set-up within the REST header
            # time-out, is closed after CONNECTION_IDLE_S without a call, and is asked to go
            # (GOAWAY; clients reconnect) after CONNECTION_AGE_S, calls then given
            # CONNECTION_GRACE_S: a message trickled byte by byte cannot hold a socket forever
            ("grpc.server_handshake_timeout_ms", int(handshake_timeout_s * 1000)),
            ("grpc.max_connection_idle_ms", CONNECTION_IDLE_S * 1000),
            ("grpc.max_connection_age_ms", CONNECTION_AGE_S * 1000),
            ("grpc.max_connection_age_grace_ms", CONNECTION_GRACE_S * 1000),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, tensor_content_outputs,
                           max_tensor_bytes=max_request_tensor_bytes, metrics=metrics,
                           max_broadcast_bytes=max_receive_bytes),
        server,
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(manager, metrics, config_roots), server)
    add_health_servicer(manager, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as err:
        raise OSError(f"cannot bind the gRPC server to {address}: {err}") from err
    if not bound:
        raise OSError(f"cannot bind the gRPC server to {address}")
    return server, bound


def make_grpc_server(
    manager: Any,
    host: str = "127.0.0.1",
    port: int = 8500,
    max_workers: int | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    tensor_content_outputs: bool = False,
    metrics: Any = None,
    *,
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES,
    max_request_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    api_token: str | None = None,
    config_roots: Sequence[Path] | None = None,
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
) -> grpc.Server:
    """An unstarted gRPC server bound to `host:port` serving `manager`'s models.

    `max_workers` defaults to 4 x CPUs (TF Serving's `--grpc_max_threads`); `max_message_bytes`
    bounds responses (TF Serving: INT32_MAX) and `max_receive_bytes` requests;
    `max_request_tensor_bytes` bounds one request's decoded tensors. `tensor_content_outputs`
    mirrors `--enable_serialization_as_tensor_content`. `metrics` (a ServingMetrics, shared with
    the REST side) records each call with `entrypoint="GRPC"`. `api_token`: the bearer token
    every method but health needs (None: open). `config_roots`: where a reload may point base
    paths (None: the folders of the base paths configured now). `handshake_timeout_s`: a new
    connection's HTTP/2 set-up deadline. Raises OSError when the port is taken.
    Call `.start()`, and `.stop(grace_s)` to shut down.
    """
    server, _ = _build(manager, host, port, max_workers=max_workers,
                       max_message_bytes=max_message_bytes,
                       tensor_content_outputs=tensor_content_outputs, metrics=metrics,
                       max_receive_bytes=max_receive_bytes,
                       max_request_tensor_bytes=max_request_tensor_bytes, api_token=api_token,
                       config_roots=config_roots, handshake_timeout_s=handshake_timeout_s)
    return server


def start_grpc_server(manager: Any, host: str = "127.0.0.1", port: int = 0,
                      **options: Any) -> tuple[grpc.Server, int]:
    """`make_grpc_server(manager, host, port, **options)`, started; returns the server and its
    bound port (port 0 = a free one)."""
    server, bound = _build(manager, host, port, **options)
    server.start()
    log.info("gRPC server listening on %s:%d", host, bound)
    return server, bound
