"""The REST app in-process against a fake manager (no TensorFlow): CORS, auth, limits, and the
pure :forecast helpers. The real server is exercised in `test_rest_server.py`."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

import numpy as np
import pytest

from models.conditioning import fill_gaps
from models.resampling import resample_channel
from serve.errors import ServingError, not_found
from serve.http import forecast as fc
from serve.http.app import RestApp
from serve.settings import ServerSettings
from serve.types import SignatureInfo, TensorInfo, VersionState, VersionStatus

testclient = pytest.importorskip("starlette.testclient")

META = {"channels": ["II"], "targets": ["II"], "units": ["mV"], "fs": 50.0, "input_steps": 4,
        "horizon": 2, "quantiles": [0.1, 0.9]}


class FakeServable:
    name, version, path, runtime = "m", 3, None, "fake"
    metadata = META
    signatures = {"serving_default": SignatureInfo(
        "serving_default", "tensorflow/serving/predict",
        {"signal": TensorInfo("signal:0", "DT_FLOAT", (-1, 4, 1))},
        {"forecast": TensorInfo("f:0", "DT_FLOAT", (-1, 2, 1)),
         "quantiles": TensorInfo("q:0", "DT_FLOAT", (-1, 2, 1, 2))},
    )}

    def predict(self, signature_name, inputs, output_filter=()):
        x = inputs["signal"]
        last = x[:, -1:, :]  # (B, 1, 1): a persistence forecast
        out = {"forecast": np.repeat(last, 2, axis=1),
               "quantiles": np.stack([np.repeat(last, 2, axis=1) - 1,
                                      np.repeat(last, 2, axis=1) + 1], axis=-1)}
        return {k: v for k, v in out.items() if not output_filter or k in output_filter}


class FakeManager:
    def model_names(self):
        return ["m"]

    @contextmanager
    def acquire(self, name, version=None, label=None):
        if name != "m":
            raise not_found(f"Servable not found for request: Latest({name})")
        yield FakeServable()

    def status(self, name, version=None, label=None):
        return [VersionStatus(3, VersionState.AVAILABLE)]

    def is_ready(self, name):
        return True

    def available_versions(self, name):
        return [3]


def client(**settings) -> testclient.TestClient:
    app = RestApp(FakeManager(), ServerSettings(rest_api_num_threads=2, **settings))
    return testclient.TestClient(app)


def test_cors_headers_and_preflight_when_enabled():
    with client(rest_api_enable_cors_support=True) as c:
        r = c.get("/v1/models/m")
        assert r.headers["access-control-allow-origin"] == "*"
        assert c.options("/v1/models/m:predict",
                         headers={"Origin": "https://x.org"}).status_code == 200
        r = c.options("/v1/models/m:predict")
        assert (r.status_code, r.json()) == (
            400, {"error": "Origin header is missing in CORS preflight"})


def test_without_cors_there_are_no_cors_headers():
    with client() as c:
        assert "access-control-allow-origin" not in c.get("/v1/models/m").headers


def test_bearer_token_is_required_except_for_health():
    with client(api_token="t0k") as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/v1/models/m")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/models/m", headers={"Authorization": "Basic t0k"}).status_code == 401
        assert c.get("/v1/models/m", headers={"Authorization": "Bearer t0k"}).status_code == 200


def test_declared_content_length_over_the_limit_is_413_before_reading():
    with client(max_body_bytes=10) as c:
        r = c.post("/v1/models/m:predict", content=b'{"instances": [[1, 2, 3, 4]]}')
        assert r.status_code == 413 and "limit of 10 bytes" in r.json()["error"]


def test_forecast_returns_quantiles_per_level_and_target():
    with client() as c:
        r = c.post("/v1/models/m:forecast", json={"signal": {"ii": [1, 2, 3, 4, 5]}, "fs": 50})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["version"] == 3 and doc["forecast"] == {"II": [5.0, 5.0]}
        assert doc["quantiles"] == {"0.1": {"II": [4.0, 4.0]}, "0.9": {"II": [6.0, 6.0]}}
        assert doc["timestamps"] == [0.02, 0.04]


def test_predict_through_the_fake_servable_and_an_unknown_model():
    with client() as c:
        r = c.post("/v1/models/m:predict", json={"instances": [[[1], [2], [3], [4]]]})
        assert r.json()["predictions"][0]["forecast"] == [[4.0], [4.0]]
        r = c.post("/v1/models/x:predict", json={"instances": [1]})
        assert (r.status_code, r.json()) == (
            404, {"error": "Servable not found for request: Latest(x)"})


# --- pure :forecast helpers ----------------------------------------------------------------


def test_short_gaps_are_filled_linearly_and_edges_held():
    x = np.array([np.nan, 1.0, np.nan, 3.0, np.nan])
    np.testing.assert_array_equal(fill_gaps(x, fs=10, max_gap_s=0.1, channel="II"),
                                  [1.0, 1.0, 2.0, 3.0, 3.0])


def test_a_long_gap_in_the_window_is_a_400_naming_the_channel_and_its_length():
    signal = np.r_[np.ones(20), np.full(6, np.nan), np.ones(2)]  # 0.12 s gap at 50 Hz
    req = fc.parse_forecast_request({"signal": {"II": signal.tolist()}, "fs": 50,
                                     "max_gap_s": 0.1})
    with pytest.raises(ServingError, match=r"channel 'II' has a gap of 0.120 s \(6 samples\)") as e:
        fc.make_window(req, META)
    assert e.value.http_status == 400


def test_resampling_keeps_a_slow_sine_and_the_duration():
    t_in = np.arange(0, 4, 1 / 360)
    y = resample_channel(np.sin(2 * np.pi * t_in), 360, 250)
    t_out = np.arange(len(y)) / 250
    assert len(y) == 1000
    np.testing.assert_allclose(y[50:-50], np.sin(2 * np.pi * t_out)[50:-50], atol=1e-3)


def test_window_is_the_tail_at_the_models_rate():
    req = fc.parse_forecast_request({"signal": {"II": list(range(8))}, "fs": 50,
                                     "start_time": "2024-01-01T00:00:00"})
    assert req.start_time == datetime(2024, 1, 1)
    np.testing.assert_array_equal(fc.make_window(req, META)[:, 0], [4, 5, 6, 7])


def test_too_short_a_signal_names_the_seconds_needed():
    req = fc.parse_forecast_request({"signal": {"II": [1, 2]}, "fs": 50})
    with pytest.raises(ServingError, match=r"needs at least 0.080 s \(4 samples at 50 Hz\)"):
        fc.make_window(req, META)


def test_docs_load_swagger_ui_from_this_server_not_a_cdn():
    import re

    with client() as c:
        page = c.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        urls = re.findall(r'<(?:script|link)\b[^>]*?(?:src|href)="([^"]+)"', page.text)
        assert len(urls) == 2, urls  # the stylesheet and the bundle
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), url
            r = c.get(url)
            assert r.status_code == 200, url
            kind = "css" if url.endswith(".css") else "javascript"
            assert kind in r.headers["content-type"]
            assert len(r.content) > 10_000  # the real Swagger UI file, not a stub
        assert b"SwaggerUIBundle" in c.get("/docs/swagger-ui-bundle.js").content
        assert c.get("/openapi.json").json()["openapi"].startswith("3.1")
        assert c.get("/docs/index.html").status_code == 404  # only the two files are served
