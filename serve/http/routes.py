"""Every REST route: the URL grammar, the token check, and which handler answers.

    /v1/...            exactly TF Serving: status, metadata, :predict, :classify, :regress; plus
                       POST /v1/models/<m>[...]:forecast (a raw signal in, a forecast out)
                       -> `serve.http.tf_serving`
    /v2/...            KServe V2 / Open Inference Protocol -> `serve.http.kserve`
    /pulsecast/models/<m>[/versions/<v>]   the model's pulsecast.json contract (channels, fs, ...)
    /healthz, /v2/health/live, /v2/health/ready   liveness and readiness (never need the token)
    /monitoring/prometheus/metrics         Prometheus text (`serve.metrics`)
    /openapi.json, /docs, /docs/<asset>    the API description, Swagger UI from a package
                                           (`serve.http.openapi`)

The `/v1` grammar is TF Serving's (`http_rest_api_util.cc`): `/v1/models/<m>` with an optional
`/versions/<n>` or `/labels/<l>`, then `:verb` (POST) or `/metadata` (GET); anything else under
`/v1` is TF Serving's 400 `Malformed request`, elsewhere a 404.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from serve.auth import OPEN_REST_PATHS
from serve.errors import invalid
from serve.http.kserve import KServeRoutes
from serve.http.openapi import DOCS_ASSETS, SWAGGER_HTML, read_docs_asset
from serve.http.plumbing import (
    BearerAuth,
    HttpError,
    Outcome,
    Receive,
    Workers,
    header,
    model_ref,
    printable,
    read_body,
)
from serve.http.tf_serving import TfServingHandlers
from serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serve.metrics import ServingMetrics
from serve.wire import json_tensor as jt

METRICS_PATH = "/monitoring/prometheus/metrics"
_V1 = re.compile(r"(?i)/v1/.*", re.S)
_V1_POST = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict|forecast)"
)
_V1_GET = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)
_PULSECAST = re.compile(r"/pulsecast/models/([^/:]+)(?:/versions/(\d+))?")


class Routes:
    """Dispatches one request to its handler. `scope` gets `pulsecast.model` and
    `pulsecast.route` set as soon as they are known (for the metrics of failures too)."""

    def __init__(self, manager: Any, workers: Workers, metrics: ServingMetrics, *,
                 api_token: str | None, max_body_bytes: int, enable_cors: bool,
                 max_tensor_bytes: int = jt.MAX_REQUEST_TENSOR_BYTES) -> None:
        self.workers = workers
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.enable_cors = enable_cors
        self.auth = BearerAuth(api_token)
        self.v1 = TfServingHandlers(manager, workers, max_tensor_bytes)
        self.v2 = KServeRoutes(manager, workers, max_body_bytes, max_tensor_bytes)
        self._openapi: bytes | None = None
        self._assets: dict[str, bytes] = {}

    async def dispatch(self, method: str, path: str, scope: dict, receive: Receive) -> Outcome:
        if method == "OPTIONS" and self.enable_cors:
            return _preflight(scope)
        if path in OPEN_REST_PATHS:
            return self._public(method, path)
        self.auth.check(scope)
        if _V1.fullmatch(path):
            return await self._v1(method, path, scope, receive)
        if path == "/v2" or path.startswith("/v2/"):
            return await self.v2.handle(method, path, scope, receive)
        if path == METRICS_PATH and method == "GET":
            return Outcome(200, self.metrics.render(), route="metrics",
                           content_type=METRICS_CONTENT_TYPE.encode())
        if method == "GET" and (match := _PULSECAST.fullmatch(path)):
            return await self.workers.run(self.v1.pulsecast_metadata, *match.groups())
        if method == "GET" and (path in ("/openapi.json", "/docs") or path in DOCS_ASSETS):
            return self._docs(path)
        raise HttpError(404, f"Not found: {method} {printable(path)}")

    def _public(self, method: str, path: str) -> Outcome:
        if method != "GET":
            raise HttpError(405, f"Method not allowed: {method} {path}")
        if path == "/v2/health/ready":
            return self.v2.server_ready()
        body = b'{"live":true}' if path == "/v2/health/live" else b'{"status":"ok"}'
        return Outcome(200, body, route="health")

    async def _v1(self, method: str, path: str, scope: dict, receive: Receive) -> Outcome:
        malformed = invalid(f"Malformed request: {method} {printable(path)}")
        if method == "POST" and (match := _V1_POST.fullmatch(path)):
            name, version, label, verb = match.groups()
            if verb not in ("predict", "classify", "regress", "forecast"):  # `:PREDICT`
                raise malformed
            name, version_num, label = model_ref(name, version, label, malformed)
            scope["pulsecast.model"], scope["pulsecast.route"] = name, verb
            body = await read_body(scope, receive, self.max_body_bytes)
            if verb == "predict":
                return await self.v1.predict(name, version_num, label, body)
            if verb == "forecast":
                return await self.workers.run(self.v1.forecast, name, version_num, label, body)
            return await self.workers.run(self.v1.examples, verb, name, version_num, label, body)
        if method == "GET" and (match := _V1_GET.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid("Missing model name in request.")
            name, version_num, label = model_ref(name, version, label, malformed)
            scope["pulsecast.model"] = name
            scope["pulsecast.route"] = "metadata" if metadata else "status"
            if metadata:
                return await self.workers.run(self.v1.metadata, name, version_num, label)
            return self.v1.status(name, version_num, label)
        raise malformed

    def _docs(self, path: str) -> Outcome:
        if path in DOCS_ASSETS:
            return self._docs_asset(path)
        if path == "/docs":
            return Outcome(200, SWAGGER_HTML.encode(), route="docs",
                           content_type=b"text/html; charset=utf-8")
        if self._openapi is None:
            from serve.http.openapi import build_openapi, served_contracts

            self._openapi = orjson.dumps(build_openapi(models=served_contracts(self.v1.manager)))
        return Outcome(200, self._openapi, route="docs")

    def _docs_asset(self, path: str) -> Outcome:
        """A Swagger UI file from the installed package, read once."""
        body = self._assets.get(path)
        if body is None:
            body = read_docs_asset(path)
            if body is None:
                raise HttpError(404, "Swagger UI is not installed (pip install "
                                     "swagger-ui-bundle-v2); /openapi.json has the API")
            self._assets[path] = body
        return Outcome(200, body, route="docs", content_type=DOCS_ASSETS[path][1])


def _preflight(scope: dict) -> Outcome:
    if not re.match(rb"https?://", header(scope, b"origin")):
        raise invalid("Origin header is missing in CORS preflight")
    return Outcome(200, b"", route="cors")
