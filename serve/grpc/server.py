"""The gRPC server: `make_grpc_server` / `start_grpc_server` around `serve.grpc.service`.

The caller owns the lifecycle: `make_grpc_server(...)` returns an unstarted `grpc.Server`;
`start_grpc_server(...)` starts one and returns it with its bound port (port 0 = a free one).
Defaults follow TF Serving: `--grpc_max_threads` 4 x CPUs, messages up to INT32_MAX bytes both
ways, and a port already in use is an error (no SO_REUSEPORT sharing).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from serve.grpc.service import ModelServicer, PredictionServicer

log = logging.getLogger(__name__)

# TF Serving sets the server's max message size to INT32_MAX (server.cc).
DEFAULT_MAX_MESSAGE_BYTES = 2**31 - 1


def _default_workers() -> int:
    return 4 * (os.cpu_count() or 1)  # --grpc_max_threads defaults to 4 x CPUs


def _build(manager: Any, host: str, port: int, max_workers: int | None,
           max_message_bytes: int, tensor_content_outputs: bool,
           metrics: Any = None) -> tuple[grpc.Server, int]:
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers or _default_workers(),
                           thread_name_prefix="grpc-serve"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port already in use is an error, not shared
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, tensor_content_outputs, max_tensor_bytes=max_message_bytes,
                           metrics=metrics),
        server,
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager, metrics),
                                                              server)
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
) -> grpc.Server:
    """An unstarted gRPC server bound to `host:port` serving `manager`'s models.

    `max_workers` defaults to 4 x CPUs (TF Serving's `--grpc_max_threads`); `max_message_bytes`
    bounds requests and responses both ways (TF Serving: INT32_MAX). `tensor_content_outputs`
    mirrors `--enable_serialization_as_tensor_content`. `metrics` (a ServingMetrics, shared with
    the REST side) records each call with `entrypoint="GRPC"`. Raises OSError when the port is
    taken.
    Call `.start()`, and `.stop(grace_s)` to shut down.
    """
    server, _ = _build(manager, host, port, max_workers, max_message_bytes,
                       tensor_content_outputs, metrics)
    return server


def start_grpc_server(
    manager: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    tensor_content_outputs: bool = False,
    metrics: Any = None,
) -> tuple[grpc.Server, int]:
    """`make_grpc_server`, started; returns the server and its bound port (port 0 = a free one)."""
    server, bound = _build(manager, host, port, max_workers, max_message_bytes,
                           tensor_content_outputs, metrics)
    server.start()
    log.info("gRPC server listening on %s:%d", host, bound)
    return server, bound
