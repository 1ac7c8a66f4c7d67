"""The REST server: a raw ASGI app speaking TensorFlow Serving's HTTP API, and a little more.

Routes (`specs/tf-serving.md` §1, §5; the OpenAPI document at `/openapi.json` lists them too):

    /v1/...            exactly TF Serving: status, metadata, :predict, :classify, :regress; plus
                       POST /v1/models/<m>[...]:forecast (a raw signal in, a forecast out)
    /v2/...            KServe V2 / Open Inference Protocol (`serve.kserve`)
    /pulsecast/models/<m>[/versions/<v>]   the model's pulsecast.json contract (channels, fs, ...)
    /healthz           liveness (never needs the token)
    /monitoring/prometheus/metrics         Prometheus text (`serve.metrics`)
    /openapi.json, /docs                   the API description (`serve.openapi`)

Every error is `{"error": message}` with TF Serving's status mapping (`serve.errors`). The hot
path (`:predict`) is a plain coroutine: read the body, then one hop to a worker thread that
parses, decodes, runs the model and encodes, so the event loop never runs a model. Safe by
default: optional bearer token (constant-time comparison), a body limit (before and after gzip),
model names checked, and any unexpected exception is a logged 500 that leaves the worker alive.
Logs carry counts and latencies, never payloads.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from serve import forecast as forecast_mod
from serve import json_tensor as jt
from serve.errors import Code, ServingError, invalid
from serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serve.metrics import ServingMetrics

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * MIB
# :predict bodies up to this size are decoded on the event loop (tens of microseconds), and
# for a batching servable queued from there: no worker-thread hand-off per request.
INLINE_BODY_BYTES = 64 * 1024
METRICS_PATH = "/monitoring/prometheus/metrics"
_INT64_MAX = 2**63 - 1

# TF Serving's URL grammar (http_rest_api_util.cc), plus pulsecast's :forecast verb.
_V1 = re.compile(r"(?i)/v1/.*", re.S)
_V1_POST = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict|forecast)"
)
_V1_GET = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)
_PULSECAST = re.compile(r"/pulsecast/models/([^/:]+)(?:/versions/(\d+))?")
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
_PUBLIC_PATHS = frozenset({"/healthz", "/v2/health/live", "/v2/health/ready"})
# pulsecast.json keys the metadata route exposes (not local paths, configs or param tables)
PUBLIC_METADATA_KEYS = (
    "model_name", "channels", "units", "targets", "target_units", "fs", "input_steps",
    "horizon", "quantiles", "created_at", "exported_at", "parent_version", "metrics",
    "serving_signature",
)

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]


@dataclass(frozen=True)
class RestSettings:
    """REST-layer options (TF Serving flag names in comments)."""

    api_token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    enable_cors: bool = False  # --rest_api_enable_cors_support
    timeout_s: float = 30.0  # --rest_api_timeout_in_ms / 1000
    num_threads: int = field(default_factory=lambda: 4 * (os.cpu_count() or 1))
    summary_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.api_token is not None and not self.api_token:
            raise ValueError("api_token must be non-empty when set")


class HttpError(Exception):
    """A non-TF-Serving HTTP error (401, 413, 404 outside /v1) with its `{"error"}` text."""

    def __init__(self, status: int, message: str, headers: tuple = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass
class _Outcome:
    """What a handler produced, for the response and the metrics."""

    status: int
    body: bytes
    model: str = ""
    route: str = "other"
    code: str = "OK"
    content_type: bytes = b"application/json"
    headers: tuple = ()


class RestApp:
    """The ASGI application. `manager` is a `serve.manager.ModelManager` (or one like it)."""

    def __init__(self, manager: Any, settings: RestSettings | None = None,
                 metrics: ServingMetrics | None = None) -> None:
        self.manager = manager
        self.settings = settings or RestSettings()
        self.metrics = metrics or ServingMetrics()
        self._token = self.settings.api_token.encode() if self.settings.api_token else None
        self._pool = ThreadPoolExecutor(self.settings.num_threads, thread_name_prefix="rest")
        self._openapi: bytes | None = None
        self._summary_task: asyncio.Task | None = None
        from serve import kserve

        self._kserve = kserve.KServeRoutes(self)

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
                if self.settings.summary_interval_s > 0:
                    self._summary_task = asyncio.get_running_loop().create_task(
                        self._log_summaries()
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._summary_task is not None:
                    self._summary_task.cancel()
                self._log_summary()
                self._pool.shutdown(wait=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _log_summaries(self) -> None:
        while True:
            await asyncio.sleep(self.settings.summary_interval_s)
            self._log_summary()

    def _log_summary(self) -> None:
        summary = self.metrics.take_summary()
        if summary is not None:
            total, n, errors, p50, p99 = summary
            log.info("requests: %d total, %d since last (%d errors), p50 %.2f ms, p99 %.2f ms",
                     total, n, errors, p50, p99)

    async def _http(self, scope: dict, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        method = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        path = raw.split(b"?", 1)[0].decode("latin-1")
        try:
            outcome = await self._dispatch(method, path, scope, receive)
        except HttpError as err:
            outcome = self._failure(scope, err.status, err.message, "HTTP", err.headers)
        except ServingError as err:
            outcome = self._failure(scope, err.http_status, err.message, err.code.name)
        except Exception:  # a bug: answer 500, keep the worker
            log.exception("internal error on %s %s", method, _printable(path)[:200])
            outcome = self._failure(scope, 500, "Internal server error", "INTERNAL")
        headers = [
            (b"content-type", outcome.content_type),
            (b"content-length", str(len(outcome.body)).encode()),
            *outcome.headers,
        ]
        if self.settings.enable_cors:
            headers += _CORS_HEADERS
        await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
        await send({"type": "http.response.body", "body": outcome.body})
        latency = time.perf_counter() - t0
        self.metrics.observe(outcome.model, outcome.route, outcome.status, outcome.code, latency)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s model=%s -> %d in %.2f ms", method, outcome.route, outcome.model,
                      outcome.status, latency * 1e3)

    def _failure(self, scope: dict, status: int, message: str, code: str,
                 headers: tuple = ()) -> _Outcome:
        model = scope.get("pulsecast.model", "")
        if model and model not in self.manager.model_names():
            model = ""  # unknown names from the URL must not grow the metrics' label sets
        return _Outcome(status, jt.error_body(message), model,
                        scope.get("pulsecast.route", "other"), code, headers=headers)

    # -- routing ---------------------------------------------------------------------------

    async def _dispatch(self, method: str, path: str, scope: dict, receive: Receive) -> _Outcome:
        if method == "OPTIONS" and self.settings.enable_cors:
            return self._preflight(scope)
        if path in _PUBLIC_PATHS:
            return self._public(method, path)
        self._authorize(scope)
        if _V1.fullmatch(path):
            return await self._v1(method, path, scope, receive)
        if path == "/v2" or path.startswith("/v2/"):
            return await self._kserve.handle(method, path, scope, receive)
        if path == METRICS_PATH and method == "GET":
            return _Outcome(200, self.metrics.render(), route="metrics",
                            content_type=METRICS_CONTENT_TYPE.encode())
        if method == "GET" and (match := _PULSECAST.fullmatch(path)):
            return await self.run_sync(self._pulsecast_metadata, *match.groups())
        if method == "GET" and path in ("/openapi.json", "/docs"):
            return self._docs(path)
        raise HttpError(404, f"Not found: {method} {_printable(path)}")

    def _public(self, method: str, path: str) -> _Outcome:
        if method != "GET":
            raise HttpError(405, f"Method not allowed: {method} {path}")
        if path == "/v2/health/ready":
            return self._kserve.server_ready()
        body = b'{"live":true}' if path == "/v2/health/live" else b'{"status":"ok"}'
        return _Outcome(200, body, route="health")

    def _authorize(self, scope: dict) -> None:
        if self._token is None:
            return
        given = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        # compare_digest on equal-length inputs is constant-time; a hash keeps lengths equal
        ok = scheme.lower() == b"bearer" and hmac.compare_digest(
            _digest(token.strip()), _digest(self._token)
        )
        if not ok:
            raise HttpError(401, "Missing or invalid bearer token in the Authorization header",
                            ((b"www-authenticate", b"Bearer"),))

    def _preflight(self, scope: dict) -> _Outcome:
        origin = _header(scope, b"origin")
        if not re.match(rb"https?://", origin):
            raise invalid("Origin header is missing in CORS preflight")
        return _Outcome(200, b"", route="cors")

    async def _v1(self, method: str, path: str, scope: dict, receive: Receive) -> _Outcome:
        malformed = invalid(f"Malformed request: {method} {_printable(path)}")
        if method == "POST" and (match := _V1_POST.fullmatch(path)):
            name, version, label, verb = match.groups()
            if verb not in ("predict", "classify", "regress", "forecast"):  # `:PREDICT`
                raise malformed
            name, version_num, label = _model_ref(name, version, label, malformed)
            scope["pulsecast.model"], scope["pulsecast.route"] = name, verb
            body = await self.read_body(scope, receive)
            if verb == "predict":
                return await self._predict_async(name, version_num, label, body)
            handler = {
                "classify": self._classify, "regress": self._regress,
                "forecast": self._forecast,
            }[verb]
            return await self.run_sync(handler, name, version_num, label, body)
        if method == "GET" and (match := _V1_GET.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid("Missing model name in request.")
            name, version_num, label = _model_ref(name, version, label, malformed)
            scope["pulsecast.model"] = name
            scope["pulsecast.route"] = "metadata" if metadata else "status"
            if metadata:
                return await self.run_sync(self._metadata, name, version_num, label)
            return self._status(name, version_num, label)
        raise malformed

    # -- plumbing --------------------------------------------------------------------------

    async def run_sync(self, fn: Callable[..., _Outcome], *args: Any) -> _Outcome:
        """Run `fn(*args)` on the worker pool, bounded by the REST timeout (504 past it)."""
        loop = asyncio.get_running_loop()
        return await self._bounded(loop.run_in_executor(self._pool, fn, *args))

    async def _bounded(self, future: Awaitable[Any]) -> Any:
        """`future`'s result within the REST timeout (DEADLINE_EXCEEDED past it; a batched
        task is cancelled and dropped from its batch)."""
        try:
            return await asyncio.wait_for(future, self.settings.timeout_s)
        except TimeoutError:
            raise ServingError(
                Code.DEADLINE_EXCEEDED,
                f"Deadline Exceeded: request took longer than {self.settings.timeout_s:g} s",
            ) from None

    async def read_body(self, scope: dict, receive: Receive) -> bytes:
        """The request body, gunzipped when `Content-Encoding` says gzip; 413 past the limit."""
        limit = self.settings.max_body_bytes
        length = _header(scope, b"content-length")
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "Client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if b"gzip" in _header(scope, b"content-encoding").lower():
            body = _gunzip(body, limit)
        return body

    # -- TF Serving handlers (run on the worker pool) ----------------------------------------

    async def _predict_async(self, name: str, version: int | None, label: str | None,
                             body: bytes) -> _Outcome:
        """:predict. A small body is decoded here on the loop; for a batching servable the
        request is queued from here and its batch awaited, so no worker thread is involved.
        Otherwise the servable runs on the worker pool."""
        if len(body) > INLINE_BODY_BYTES:
            return await self.run_sync(self._predict, name, version, label, body)
        doc = jt.parse_json(body)
        jt.signature_name_of(doc)
        fast = _fast_decode(body)
        with self.manager.acquire(name, version, label) as servable:
            submit = getattr(servable, "submit_async", None)
            if submit is not None:
                request = jt.decode_predict_request(
                    doc, lambda sig: _signature(servable, sig).inputs, fast=fast)
                future = submit(request.signature_name, request.inputs)
                if future is not None:
                    outputs = await self._bounded(future)
                    return _Outcome(200, jt.encode_predict_response(outputs, request.row),
                                    name, "predict")
        return await self.run_sync(self._predict_doc, name, version, label, doc, fast)

    def _predict(self, name: str, version: int | None, label: str | None,
                 body: bytes) -> _Outcome:
        doc = jt.parse_json(body)
        jt.signature_name_of(doc)
        return self._predict_doc(name, version, label, doc, _fast_decode(body))

    def _predict_doc(self, name: str, version: int | None, label: str | None, doc: Any,
                     fast: bool) -> _Outcome:
        with self.manager.acquire(name, version, label) as servable:
            request = jt.decode_predict_request(
                doc, lambda sig: _signature(servable, sig).inputs, fast=fast)
            outputs = servable.predict(request.signature_name, request.inputs)
        return _Outcome(200, jt.encode_predict_response(outputs, request.row), name, "predict")

    def _examples(self, method: str, name: str, version: int | None, label: str | None,
                  body: bytes) -> Any:
        doc = jt.parse_json(body)
        jt.signature_name_of(doc)
        with self.manager.acquire(name, version, label) as servable:
            request = jt.decode_examples_request(doc, method)
            run = servable.classify if method == "classify" else servable.regress
            return run(request.signature_name, request.examples, request.context)

    def _classify(self, name: str, version: int | None, label: str | None,
                  body: bytes) -> _Outcome:
        result = self._examples("classify", name, version, label, body)
        return _Outcome(200, jt.encode_classify_response(result), name, "classify")

    def _regress(self, name: str, version: int | None, label: str | None,
                 body: bytes) -> _Outcome:
        result = self._examples("regress", name, version, label, body)
        return _Outcome(200, jt.encode_regress_response(result), name, "regress")

    def _forecast(self, name: str, version: int | None, label: str | None,
                  body: bytes) -> _Outcome:
        request = forecast_mod.parse_forecast_request(jt.parse_json(body))
        with self.manager.acquire(name, version, label) as servable:
            metadata = forecast_mod.check_metadata(name, servable.metadata)
            window = forecast_mod.make_window(request, metadata)
            signature = _signature(servable, jt.DEFAULT_SIGNATURE)
            if len(signature.inputs) != 1:
                raise invalid(f"model {name} must take one input tensor for :forecast")
            alias = next(iter(signature.inputs))
            outputs = servable.predict(jt.DEFAULT_SIGNATURE, {alias: window[None]})
            served_version = servable.version
        doc = forecast_mod.make_forecast_response(name, served_version, metadata, outputs,
                                                  request)
        return _Outcome(200, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), name,
                        "forecast")

    def _status(self, name: str, version: int | None, label: str | None) -> _Outcome:
        statuses = self.manager.status(name, version, label)
        doc = {"model_version_status": [
            {
                "version": str(s.version),
                "state": s.state.name,
                "status": {"error_code": s.error_code.name, "error_message": s.error_message},
            }
            for s in statuses
        ]}
        return _Outcome(200, orjson.dumps(doc, option=orjson.OPT_INDENT_2), name, "status")

    def _metadata(self, name: str, version: int | None, label: str | None) -> _Outcome:
        with self.manager.acquire(name, version, label) as servable:
            doc = {
                "model_spec": {"name": name, "signature_name": "",
                               "version": str(servable.version)},
                "metadata": {"signature_def": {"signature_def": {
                    key: signature_def_json(sig) for key, sig in servable.signatures.items()
                }}},
            }
        return _Outcome(200, orjson.dumps(doc, option=orjson.OPT_INDENT_2), name, "metadata")

    def _pulsecast_metadata(self, name: str, version: str | None) -> _Outcome:
        name, version_num, _ = _model_ref(name, version, None, invalid("Malformed model name"))
        with self.manager.acquire(name, version_num, None) as servable:
            meta = servable.metadata
            served = servable.version
        if not meta:
            raise ServingError(Code.NOT_FOUND, f"model {name} version {served} has no "
                                               "pulsecast.json metadata")
        doc = {"model_name": name, "version": served,
               "metadata": {k: meta[k] for k in PUBLIC_METADATA_KEYS if k in meta}}
        return _Outcome(200, orjson.dumps(doc), name, "pulsecast")

    def _docs(self, path: str) -> _Outcome:
        if self._openapi is None:
            from serve.openapi import build_openapi

            self._openapi = orjson.dumps(build_openapi())
        if path == "/openapi.json":
            return _Outcome(200, self._openapi, route="docs")
        from serve.openapi import SWAGGER_HTML

        return _Outcome(200, SWAGGER_HTML.encode(), route="docs",
                        content_type=b"text/html; charset=utf-8")


# ---------------------------------------------------------------------------------------------
# helpers

def _fast_decode(body: bytes) -> bool:
    """Whether the body has no JSON booleans (numbers only: the fast numeric decode applies)."""
    return b"true" not in body and b"false" not in body


_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type, Authorization"),
]


def _digest(value: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(value).digest()


def _header(scope: dict, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


def _printable(path: str) -> str:
    return path[:512].encode("latin-1", "replace").decode("utf-8", "replace")


def _too_large(limit: int) -> HttpError:
    return HttpError(413, f"Request body is larger than the limit of {limit} bytes")


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise invalid(f"Failed to decompress the gzip request body: {err}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    return out


def _model_ref(name: str, version: str | None, label: str | None,
               malformed: ServingError) -> tuple[str, int | None, str | None]:
    """URL-unescaped model name and label, numeric version; no path tricks in names."""
    name = unquote(name) if "%" in name else name
    if label is not None and "%" in label:
        label = unquote(label)
    for text in (name, label):
        if text is not None and (_BAD_NAME.search(text) or text in (".", "..")
                                 or len(text) > 255):
            raise malformed
    version_num = None
    if version is not None:
        version_num = int(version)
        if version_num > _INT64_MAX:
            raise invalid(f"Failed to convert version: {version} to numeric.")
    return name, version_num, label


def _signature(servable: Any, name: str) -> Any:
    sig = servable.signatures.get(name)
    if sig is None:
        raise invalid(f'Serving signature name: "{name}" not found in signature def')
    return sig


def signature_def_json(sig: Any) -> dict:
    """A SignatureDef as protobuf JSON (preserved field names, int64 as strings)."""
    return {
        "inputs": {k: _tensor_info_json(v) for k, v in sig.inputs.items()},
        "outputs": {k: _tensor_info_json(v) for k, v in sig.outputs.items()},
        "method_name": sig.method_name,
        "defaults": {},
    }


def _tensor_info_json(info: Any) -> dict:
    if info.shape is None:
        shape = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(d), "name": ""} for d in info.shape],
                 "unknown_rank": False}
    return {"dtype": info.dtype, "tensor_shape": shape, "name": info.name}
