"""The REST server: a raw ASGI app speaking TensorFlow Serving's HTTP API, and a little more.

`RestApp(manager, settings)` is the ASGI application uvicorn runs (`serve.server`). It owns the
request's life around the routes: the lifespan (a periodic summary line in the log), the
response (status, headers, CORS), the metrics of every request, and turning every failure into
`{"error": message}` with TF Serving's status mapping (`serve.errors`); any unexpected exception
is a logged 500 that leaves the worker alive. Which handler answers a path is
`serve.http.routes`; the shared plumbing (auth, body limits, worker threads) is
`serve.http.plumbing`. Logs carry counts and latencies, never payloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from serve.errors import ServingError
from serve.http.plumbing import HttpError, Outcome, Receive, Send, Workers, printable
from serve.http.routes import Routes
from serve.metrics import ServingMetrics
from serve.settings import ServerSettings
from serve.wire.json_tensor import error_body

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 60.0  # a "requests: ..." log line this often (0: none)
_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type, Authorization"),
]


class RestApp:
    """The ASGI application. `manager` is a `serve.versions.manager.ModelManager` (or one like
    it); `settings` gives the token, body and tensor limits, CORS, timeout and worker
    threads."""

    def __init__(self, manager: Any, settings: ServerSettings | None = None,
                 metrics: ServingMetrics | None = None,
                 summary_interval_s: float = SUMMARY_INTERVAL_S) -> None:
        self.manager = manager
        self.settings = settings or ServerSettings()
        self.metrics = metrics or ServingMetrics()
        self.summary_interval_s = summary_interval_s
        token = self.settings.api_token
        self._workers = Workers(self.settings.rest_api_num_threads, self.settings.rest_timeout_s)
        self.routes = Routes(
            manager, self._workers, self.metrics,
            api_token=token.get_secret_value() if token is not None else None,
            max_body_bytes=self.settings.max_body_bytes,
            enable_cors=self.settings.rest_api_enable_cors_support,
            max_tensor_bytes=self.settings.max_request_tensor_bytes,
        )
        self._summary_task: asyncio.Task | None = None

    # -- ASGI entry ------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.summary_interval_s > 0:
                    self._summary_task = asyncio.get_running_loop().create_task(
                        self._log_summaries()
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._summary_task is not None:
                    self._summary_task.cancel()
                self._log_summary()
                self._workers.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _log_summaries(self) -> None:
        while True:
            await asyncio.sleep(self.summary_interval_s)
            self._log_summary()

    def _log_summary(self) -> None:
        summary = self.metrics.take_summary()
        if summary is not None:
            total, n, errors, p50, p99 = summary
            log.info("requests: %d total, %d since last (%d errors), p50 %.2f ms, p99 %.2f ms",
                     total, n, errors, p50, p99)

    # -- one request -----------------------------------------------------------------------

    async def _http(self, scope: dict, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        method = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        path = raw.split(b"?", 1)[0].decode("latin-1")
        try:
            outcome = await self.routes.dispatch(method, path, scope, receive)
        except HttpError as err:
            outcome = self._failure(scope, err.status, err.message, "HTTP", err.headers)
        except ServingError as err:
            outcome = self._failure(scope, err.http_status, err.message, err.code.name)
        except Exception:  # a bug: answer 500, keep the worker
            log.exception("internal error on %s %s", method, printable(path)[:200])
            outcome = self._failure(scope, 500, "Internal server error", "INTERNAL")
        headers = [
            (b"content-type", outcome.content_type),
            (b"content-length", str(len(outcome.body)).encode()),
            *outcome.headers,
        ]
        if self.settings.rest_api_enable_cors_support:
            headers += _CORS_HEADERS
        await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
        await send({"type": "http.response.body", "body": outcome.body})
        latency = time.perf_counter() - t0
        self.metrics.observe(outcome.model, outcome.route, outcome.status, outcome.code, latency)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s model=%s -> %d in %.2f ms", method, outcome.route, outcome.model,
                      outcome.status, latency * 1e3)

    def _failure(self, scope: dict, status: int, message: str, code: str,
                 headers: tuple = ()) -> Outcome:
        """`{"error": message}`; the model label only for a served model, so unknown names
        from the URL cannot grow the metrics' label sets."""
        model = scope.get("pulsecast.model", "")
        if model and model not in self.manager.model_names():
            model = ""
        return Outcome(status, error_body(message), model,
                       scope.get("pulsecast.route", "other"), code, headers=headers)
