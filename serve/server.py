"""The server process: model manager + REST (uvicorn) + gRPC, with a graceful drain.

`run_server(settings)` (a `serve.settings.ServerSettings`) does, in order:

1. build the model configs: `--model_config_file`, or pulsecast's `--model-store DIR` (every
   model in the store), or `--model_name` + `--model_base_path` (TF Serving's single model);
2. start the `ModelManager` (first load synchronous, as TF Serving opens its ports after it);
3. start gRPC on `--port` through `serve.grpc.server.make_grpc_server` (skipped with a warning
   when the port is 0 or grpcio is missing) and REST on `--rest_api_port` (0 = no REST, as
   in TF Serving) with uvicorn (uvloop + httptools when installed);
4. log one parseable line: `LISTENING {"rest": "http://host:port", "grpc": "host:port", ...}`;
5. on SIGTERM/SIGINT: stop accepting, let in-flight requests finish (`drain_timeout_s`), stop
   gRPC, drain and stop the manager; return 0.

Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

from serve.settings import ServerSettings

log = logging.getLogger(__name__)


def build_configs(settings: ServerSettings) -> list[Any]:
    """The ModelConfigs the settings name: exactly one of `model_base_path` (with
    `model_name`, "default" when None), `model_config_file` or `model_store`."""
    from serve import model_config

    sources = [settings.model_config_file is not None, settings.model_store is not None,
               settings.model_base_path is not None]
    if sum(sources) != 1:
        raise ValueError(
            "give exactly one of --model_base_path (with --model_name), "
            "--model_config_file or --model-store"
        )
    if settings.model_config_file is not None:
        return model_config.read_model_config_file(settings.model_config_file)
    if settings.model_store is not None:
        configs = model_config.configs_from_store(settings.model_store)
        if not configs:
            log.warning("model store %s holds no model with a version yet", settings.model_store)
        return configs
    return model_config.single_model_config(settings.model_name or "default",
                                            settings.model_base_path)


def build_batching(settings: ServerSettings) -> Any:
    """BatchingParams from the file and/or the flags (flags win), or None when batching is off."""
    if not settings.enable_batching:
        return None
    import dataclasses

    from serve import model_config
    from serve.types import BatchingParams

    params = (model_config.read_batching_parameters_file(settings.batching_parameters_file)
              if settings.batching_parameters_file else BatchingParams())
    overrides = {
        k: getattr(settings, k)
        for k in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                  "max_enqueued_batches", "allowed_batch_sizes")
        if getattr(settings, k) is not None
    }
    return dataclasses.replace(params, **overrides) if overrides else params


def configure_tensorflow_threads(settings: ServerSettings) -> None:
    """TF's intra/inter-op pools, set before any model loads (no TF import when both are 0)."""
    intra = settings.tensorflow_intra_op_parallelism
    inter = settings.tensorflow_inter_op_parallelism
    if not intra and not inter:
        return
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    log.info("TensorFlow threads: intra-op %d, inter-op %d (0 = TensorFlow picks)", intra, inter)


# The cyclic collector, run at Python's default thresholds (700, 10, 10), took ~18% of the event
# loop under load while finding almost nothing (request garbage is acyclic and freed by
# reference counts): ~600 young collections/s at 64 clients. Collecting after 100,000 net
# allocations instead measured +10-20% requests/s on 2 cores (bench/serve.py, 64 clients).
# The loaded models themselves are frozen out of every pass (serve.versions.manager.freeze_heap).
SERVER_GC_THRESHOLDS = (100_000, 50, 100)


def run_server(settings: ServerSettings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 after a clean drain)."""
    from serve.http.app import RestApp
    from serve.metrics import ServingMetrics
    from serve.versions.manager import ModelManager

    configs = build_configs(settings)
    gc.set_threshold(*SERVER_GC_THRESHOLDS)
    configure_tensorflow_threads(settings)
    manager = ModelManager(
        configs,
        poll_wait_s=settings.file_system_poll_wait_seconds,
        batching=build_batching(settings),
        runtime=settings.runtime,
        enable_warmup=settings.enable_model_warmup,
        auto_batching=settings.auto_batching,
        allow_version_links=settings.allow_version_links,
    )
    stop = threading.Event()
    # bind first: a taken port fails in milliseconds, not after loading every model
    rest_sock = _bind(settings.host, settings.rest_api_port) if settings.rest_api_port else None
    with _signals_to(stop) as captured:
        manager.start()
        log.info("models: %s", ", ".join(manager.model_names()) or "(none)")
        metrics = ServingMetrics()  # one set for both front ends, as TF Serving's
        grpc_server, grpc_address = _start_grpc(manager, settings, metrics)
        rest_address = None
        if rest_sock is not None:
            host, port = rest_sock.getsockname()[:2]
            rest_address = f"http://{_host_text(host)}:{port}"
        log.info("LISTENING %s", json.dumps({
            "rest": rest_address, "grpc": grpc_address, "models": manager.model_names(),
            "pid": os.getpid(),
        }))
        try:
            if rest_sock is not None:
                app = RestApp(manager, settings, metrics=metrics)
                _serve_rest(app, rest_sock, settings, stop, captured, metrics)
            else:
                stop.wait()
        finally:
            log.info("draining: stopping gRPC, waiting for in-flight requests")
            if grpc_server is not None:
                grpc_server.stop(settings.drain_timeout_s).wait()
            drained = manager.drain(settings.drain_timeout_s)
            manager.stop()
            log.info("stopped (%s)", "drained" if drained else "drain timed out")
    return 0


def _serve_rest(app: Any, sock: socket.socket, settings: ServerSettings,
                stop: threading.Event, captured: list[int], metrics: Any = None) -> None:
    import uvicorn

    from serve.http.timeouts import make_protocol_class

    # uvicorn's protocol with read deadlines: slow clients are cut off (serve.http.timeouts)
    protocol = make_protocol_class(
        settings.header_timeout_s, settings.body_timeout_s, metrics,
        parser="httptools" if importlib.util.find_spec("httptools") else "h11",
    )
    config = uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=protocol,
        ws="none",  # no route speaks WebSocket: an upgrade is not an untimed door
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        timeout_keep_alive=30,
    )
    server = _Server(config, stop)
    server.run(sockets=[sock])


class _Server:
    """uvicorn's Server without its signal handling: ours sets `stop`, a watcher exits."""

    def __init__(self, config: Any, stop: threading.Event) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # signals go to `_signals_to`; uvicorn would re-raise them at exit

        self.server = Server(config)
        self.stop = stop

    def run(self, sockets: list[socket.socket]) -> None:
        watcher = threading.Thread(target=self._watch, name="rest-stop", daemon=True)
        watcher.start()
        self.server.run(sockets=sockets)
        self.stop.set()

    def _watch(self) -> None:
        self.stop.wait()
        self.server.should_exit = True


@contextlib.contextmanager
def _signals_to(stop: threading.Event) -> Iterator[list[int]]:
    """SIGTERM/SIGINT set `stop` (a second SIGINT while stopping is left to the default)."""
    captured: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield captured
        return

    def handler(signum: int, _frame: Any) -> None:
        captured.append(signum)
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield captured
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _start_grpc(manager: Any, settings: ServerSettings,
                metrics: Any = None) -> tuple[Any, str | None]:
    if settings.port == 0:
        log.warning("gRPC disabled (--port 0)")
        return None, None
    if importlib.util.find_spec("grpc") is None:
        log.warning("gRPC disabled: grpcio is not installed")
        return None, None
    from serve.grpc.server import make_grpc_server
    from serve.model_config import default_config_roots

    roots = settings.model_config_roots
    if roots is None:
        configs = [manager.config(name) for name in manager.model_names()]
        roots = default_config_roots(configs, [settings.model_store] if settings.model_store
                                     else ())
    token = settings.api_token
    server = make_grpc_server(
        manager, settings.host, settings.port, metrics=metrics,
        max_receive_bytes=settings.grpc_receive_bytes,
        max_request_tensor_bytes=settings.max_request_tensor_bytes,
        api_token=token.get_secret_value() if token is not None else None,
        config_roots=roots,
        handshake_timeout_s=settings.header_timeout_s,
    )
    server.start()
    return server, f"{_host_text(settings.host)}:{settings.port}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot bind the REST server to {host}:{port}: {err}") from err
    # listen now: connections made once the LISTENING line is out queue until uvicorn accepts
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
