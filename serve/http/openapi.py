"""The OpenAPI description of the REST server, for `/openapi.json` and `/docs`.

The routes are served by the raw ASGI app in `serve.http` (no validation layer on the hot path);
this module declares the same routes as FastAPI stubs with pydantic bodies only to have FastAPI
write the OpenAPI document. The stubs are never called, except that `:forecast`'s body is the
very model that validates it (`serve.http.forecast.ForecastBody`). FastAPI is imported on the
first request for the docs, not at server start.

`/docs` is Swagger UI served from the `swagger-ui-bundle-v2` package at `/docs/<file>`
(`DOCS_ASSETS`), never from a CDN, so it works offline. Swagger UI 5 is needed: FastAPI writes
OpenAPI 3.1, which Swagger UI 4 (the `swagger-ui-bundle` package) refuses to render.
"""

# No `from __future__ import annotations`: FastAPI must see the local pydantic classes.
import re
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


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3 document of every route `serve.http.routes` serves."""
    from fastapi import FastAPI
    from pydantic import BaseModel, Field

    from serve.http.forecast import ForecastBody

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
        openapi_url=None, docs_url=None, redoc_url=None,
    )
    errors = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 500, 503)}

    def route(method: str, path: str, summary: str, tag: str, body: Any = None,
              reply: Any = None) -> None:
        app.add_api_route(path, _stub(path, body), methods=[method], summary=summary,
                          tags=[tag], responses=errors, response_model=reply)

    for base in _MODEL_PATHS:
        route("GET", base, "Model status (TF Serving)", "tf-serving")
        route("GET", base + "/metadata", "Model metadata (TF Serving)", "tf-serving")
        route("POST", base + ":predict", "Predict (TF Serving)", "tf-serving", PredictBody)
        route("POST", base + ":classify", "Classify (TF Serving)", "tf-serving", ExamplesBody)
        route("POST", base + ":regress", "Regress (TF Serving)", "tf-serving", ExamplesBody)
        route("POST", base + ":forecast", "Forecast from a raw signal", "pulsecast",
              ForecastBody, ForecastReply)
    for base in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{version}"):
        route("GET", base, "Model metadata (KServe V2)", "kserve-v2")
        route("GET", base + "/ready", "Model readiness (KServe V2)", "kserve-v2")
        route("POST", base + "/infer", "Inference (KServe V2)", "kserve-v2", InferBody)
    route("GET", "/v2", "Server metadata (KServe V2)", "kserve-v2")
    route("GET", "/v2/health/live", "Liveness (no token needed)", "health")
    route("GET", "/v2/health/ready", "Readiness: 200 when every model has an AVAILABLE version",
          "health")
    route("GET", "/healthz", "Liveness (no token needed)", "health")
    route("GET", "/pulsecast/models/{model_name}", "The model's pulsecast.json contract",
          "pulsecast")
    route("GET", "/pulsecast/models/{model_name}/versions/{version}",
          "A version's pulsecast.json contract", "pulsecast")
    route("GET", "/monitoring/prometheus/metrics", "Prometheus metrics (text)", "monitoring")
    return app.openapi()


def _stub(path: str, body: Any) -> Any:
    """An endpoint FastAPI can describe: the path's parameters (+ a JSON body); never called."""
    import inspect

    from fastapi import Body

    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                          annotation=int if name == "version" else str)
        for name in re.findall(r"{(\w+)}", path)
    ]
    if body is not None:
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY,
                                        annotation=body, default=Body(...)))

    def endpoint(**_: Any) -> None:
        return None

    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = re.sub(r"\W+", "_", path).strip("_") or "root"
    return endpoint
