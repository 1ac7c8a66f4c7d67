"""The OpenAPI description of the REST server, for `/openapi.json` and `/docs`.

The routes are served by the raw ASGI app in `serve.http` (no validation layer on the hot path);
this module declares the same routes as FastAPI stubs with pydantic bodies only to have FastAPI
write the OpenAPI document. The stubs are never called, except that `:forecast`'s body is the
very model that validates it (`serve.http.forecast.ForecastBody`). FastAPI is imported on the
first request for the docs, not at server start.

`:forecast`, the route for people, comes first (its tag too). Given the models the server holds
(`build_openapi(models=served_contracts(manager))`), `model_name` is an enum of their names and
`:forecast` has one example body per forecasting model that answers 200 as it stands
(`forecast_example`: a sine of `input_steps` samples of each channel at the model's `fs`), so
Swagger UI's "Try it out" works without editing.

`/docs` is Swagger UI served from the `swagger-ui-bundle-v2` package at `/docs/<file>`
(`DOCS_ASSETS`), never from a CDN, so it works offline. Swagger UI 5 is needed: FastAPI writes
OpenAPI 3.1, which Swagger UI 4 (the `swagger-ui-bundle` package) refuses to render.
"""

# No `from __future__ import annotations`: FastAPI must see the local pydantic classes.
import math
import re
from collections.abc import Mapping
from typing import Any

# URL path -> (file in the package's Swagger UI folder, Content-Type)
DOCS_ASSETS = {
    "/docs/swagger-ui.css": ("swagger-ui.css", b"text/css; charset=utf-8"),
    "/docs/swagger-ui-bundle.js": ("swagger-ui-bundle.js", b"text/javascript; charset=utf-8"),
}

SWAGGER_HTML = """<!DOCTYPE html>
<html><head><title>pulsecast serve: API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""


def read_docs_asset(path: str) -> bytes | None:
    """The bytes of the Swagger UI file `DOCS_ASSETS[path]` names; None without the package."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return (swagger_ui_path / DOCS_ASSETS[path][0]).read_bytes()

_MODEL_PATHS = (
    "/v1/models/{model_name}",
    "/v1/models/{model_name}/versions/{version}",
    "/v1/models/{model_name}/labels/{label}",
)


# A plausible level and swing of an example signal, by unit (else 0 +- 1).
_EXAMPLE_LEVELS = {"mmhg": (90.0, 20.0), "%": (97.0, 1.0), "bpm": (75.0, 5.0),
                   "/min": (75.0, 5.0), "mv": (0.0, 1.0)}
_TAGS = [
    {"name": "pulsecast", "description": "A raw signal in, a forecast out (`:forecast`), and "
     "the model's contract (channels, fs, input_steps) it needs."},
    {"name": "tf-serving", "description": "TensorFlow Serving's REST API, unchanged."},
    {"name": "kserve-v2", "description": "KServe V2 / Open Inference Protocol."},
    {"name": "health", "description": "Liveness and readiness (no token needed)."},
    {"name": "monitoring", "description": "Prometheus metrics."},
]


def served_contracts(manager: Any) -> dict[str, dict[str, Any]]:
    """Model name -> the pulsecast.json of the version it serves by default, for
    `build_openapi(models=...)`: every configured model, `{}` for one without a contract or
    without an available version yet."""
    from serve.errors import ServingError

    contracts: dict[str, dict[str, Any]] = {}
    for name in manager.model_names():
        try:
            with manager.acquire(name) as servable:
                contracts[name] = dict(servable.metadata or {})
        except ServingError:  # not loaded yet, or draining
            contracts[name] = {}
    return contracts


def forecast_example(name: str, metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """An OpenAPI example of a `:forecast` body model `name` answers with 200: `input_steps`
    samples of each of its channels at its `fs`, a sine (a 1 s period, or 30 samples for slow
    trends) around a level that fits the channel's unit; None when the model has no usable
    contract (`serve.http.forecast.check_metadata`)."""
    from serve.errors import ServingError
    from serve.http.forecast import check_metadata

    try:
        meta = check_metadata(name, metadata)
    except ServingError:
        return None
    period = meta.fs if meta.fs >= 2.0 else 30.0  # samples per cycle
    units = dict(zip(meta.channels, meta.units, strict=False))
    signal = {}
    for k, channel in enumerate(meta.channels):
        level, swing = _EXAMPLE_LEVELS.get(units.get(channel, "").strip().lower(), (0.0, 1.0))
        signal[channel] = [round(level + swing * math.sin(2 * math.pi * i / period + k), 4)
                           for i in range(meta.input_steps)]
    span_s = meta.input_steps / meta.fs
    span = f"{span_s:.3g} s" if span_s < 600 else f"{span_s / 60:.3g} min"
    return {"summary": f"{name}: {meta.input_steps} samples ({span}) of "
                       f"{', '.join(meta.channels)} at {meta.fs:.4g} Hz",
            "description": f"A sine the length of model {name}'s window; pick `{name}` as "
                           "model_name.",
            "value": {"signal": signal, "fs": meta.fs}}


def _shape_example() -> dict[str, Any]:
    """The example without known models: the body's shape, not a window any model fits."""
    return {"summary": "the shape of a body",
            "description": "Take channels, fs and input_steps from "
                           "GET /pulsecast/models/{model_name}: the signal must cover "
                           "input_steps / fs seconds of every channel.",
            "value": {"signal": {"II": [0.01, 0.02, 0.9, 0.05, -0.1, 0.0]}, "fs": 125.0}}


def build_openapi(models: Mapping[str, Mapping[str, Any] | None] | None = None
                  ) -> dict[str, Any]:
    """The OpenAPI 3 document of every route `serve.http.routes` serves, `:forecast` first.

    `models` (model name -> its pulsecast.json, `{}` or None without one; `served_contracts`)
    makes `model_name` an enum of the names (on `:forecast`, of the models that forecast) and
    gives `:forecast` a working example body per forecasting model (`forecast_example`).
    """
    from fastapi import FastAPI
    from pydantic import BaseModel, Field

    from serve.http.forecast_body import ForecastBody

    examples = {name: ex for name, meta in sorted((models or {}).items())
                if (ex := forecast_example(name, meta or {})) is not None}

    class ErrorBody(BaseModel):
        error: str = Field(description="TF Serving's error message")

    class PredictBody(BaseModel):
        signature_name: str | None = Field(None, description="default serving_default")
        instances: list[Any] | None = Field(None, description="row format")
        inputs: Any | None = Field(None, description="columnar format")

    class ExamplesBody(BaseModel):
        signature_name: str | None = None
        context: dict[str, Any] | None = None
        examples: list[dict[str, Any]]

    class ForecastReply(BaseModel):
        model_name: str
        version: int
        fs: float
        units: list[str]
        targets: list[str]
        forecast: dict[str, list[float]]
        timestamps: list[Any]
        quantiles: dict[str, dict[str, list[float]]] | None = None

    class InferTensor(BaseModel):
        name: str
        shape: list[int]
        datatype: str
        data: list[Any]

    class InferBody(BaseModel):
        id: str | None = None
        inputs: list[InferTensor]
        outputs: list[dict[str, str]] | None = None

    app = FastAPI(
        title="pulsecast serve",
        version="0.1.0",
        description=(
            "TensorFlow-Serving-compatible REST API (/v1), KServe V2 (/v2) and pulsecast's "
            ":forecast. Errors are {\"error\": message}. With --api-token-file every route "
            "except /healthz, /v2/health/live and /v2/health/ready needs "
            "`Authorization: Bearer <token>`."
        ),
        openapi_url=None, docs_url=None, redoc_url=None, openapi_tags=_TAGS,
    )
    errors = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 500, 503)}
    all_names = sorted(models or {})

    def route(method: str, path: str, summary: str, tag: str, body: Any = None,
              reply: Any = None, names: list[str] | None = None,
              body_examples: dict[str, Any] | None = None) -> None:
        stub = _stub(path, body, all_names if names is None else names, body_examples)
        app.add_api_route(path, stub, methods=[method],
                          summary=summary, tags=[tag], responses=errors, response_model=reply)

    for base in _MODEL_PATHS:  # the route for people first
        route("POST", base + ":forecast", "Forecast from a raw signal", "pulsecast",
              ForecastBody, ForecastReply, names=sorted(examples),
              body_examples=examples or {"shape": _shape_example()})
    route("GET", "/pulsecast/models/{model_name}", "The model's pulsecast.json contract",
          "pulsecast")
    route("GET", "/pulsecast/models/{model_name}/versions/{version}",
          "A version's pulsecast.json contract", "pulsecast")
    for base in _MODEL_PATHS:
        route("GET", base, "Model status (TF Serving)", "tf-serving")
        route("GET", base + "/metadata", "Model metadata (TF Serving)", "tf-serving")
        route("POST", base + ":predict", "Predict (TF Serving)", "tf-serving", PredictBody)
        route("POST", base + ":classify", "Classify (TF Serving)", "tf-serving", ExamplesBody)
        route("POST", base + ":regress", "Regress (TF Serving)", "tf-serving", ExamplesBody)
    for base in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{version}"):
        route("GET", base, "Model metadata (KServe V2)", "kserve-v2")
        route("GET", base + "/ready", "Model readiness (KServe V2)", "kserve-v2")
        route("POST", base + "/infer", "Inference (KServe V2)", "kserve-v2", InferBody)
    route("GET", "/v2", "Server metadata (KServe V2)", "kserve-v2")
    route("GET", "/v2/health/live", "Liveness (no token needed)", "health")
    route("GET", "/v2/health/ready", "Readiness: 200 when every model has an AVAILABLE version",
          "health")
    route("GET", "/healthz", "Liveness (no token needed)", "health")
    route("GET", "/monitoring/prometheus/metrics", "Prometheus metrics (text)", "monitoring")
    return app.openapi()


def _stub(path: str, body: Any, names: list[str], body_examples: dict[str, Any] | None) -> Any:
    """An endpoint FastAPI can describe: the path's parameters (`model_name` an enum of `names`
    when there are any) and a JSON body with `body_examples`; never called."""
    import inspect

    from fastapi import Body
    from fastapi import Path as PathParam

    def param(name: str) -> inspect.Parameter:
        extra = {"enum": names} if name == "model_name" and names else None
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                 annotation=int if name == "version" else str,
                                 default=PathParam(json_schema_extra=extra))

    params = [param(name) for name in re.findall(r"{(\w+)}", path)]
    if body is not None:
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body,
                                        default=Body(..., openapi_examples=body_examples)))

    def endpoint(**_: Any) -> None:
        return None

    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = re.sub(r"\W+", "_", path).strip("_") or "root"
    return endpoint
