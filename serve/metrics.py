"""Request metrics: TF Serving's Prometheus names plus pulsecast's per-route latency histograms.

Exposed at `/monitoring/prometheus/metrics` (`specs/tf-serving.md` §1.8) in the Prometheus text
format:

    :tensorflow:serving:request_count{model_name,status}            counter (status = code name)
    :tensorflow:serving:request_latency{model_name,API,entrypoint}  histogram in microseconds,
                                                                    buckets 10 * 1.8^k (33)
    pulsecast_http_request_duration_seconds{model_name,route,code}  histogram in seconds
    pulsecast_http_slow_client_closed_total{phase}                  counter (phase = headers|body)
    pulsecast_grpc_unauthenticated_total                            counter (no token / wrong one)

The TF-named metrics are rendered here so they keep TF Serving's exact spelling
(prometheus-client's `Counter` would append `_total`); the rest is prometheus-client's. Each
`ServingMetrics` has its own registry: nothing global, nothing registered at import. Only
values cross here, never request payloads.
"""

from __future__ import annotations

import bisect
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# TF Serving's request_latency buckets: ExponentialBuckets(10, 1.8, 33), microseconds.
TF_LATENCY_BUCKETS_US = tuple(10 * 1.8**k for k in range(33))
HTTP_LATENCY_BUCKETS_S = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)
# What a REST connection was waiting for when serve.http.timeouts cut it off.
SLOW_CLIENT_PHASES = ("headers", "body")


class _TfServingCollector:
    """Counters and histograms with TF Serving's metric names, kept in plain dicts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}
        # (model, api, entrypoint) -> (bucket counts, sum, count)
        self.latency: dict[tuple[str, str, str], list] = {}

    def observe(self, model: str, api: str, status: str, latency_us: float,
                entrypoint: str, ok: bool) -> None:
        with self.lock:
            key = (model, status)
            self.counts[key] = self.counts.get(key, 0) + 1
            if not ok:  # TF Serving records REST latency for successful requests only
                return
            hist = self.latency.setdefault(
                (model, api, entrypoint), [[0] * (len(TF_LATENCY_BUCKETS_US) + 1), 0.0, 0]
            )
            hist[0][bisect.bisect_left(TF_LATENCY_BUCKETS_US, latency_us)] += 1
            hist[1] += latency_us
            hist[2] += 1

    def render(self) -> str:
        """The Prometheus text of these metrics, with TF Serving's exact names and TYPE lines
        (prometheus-client would print `# TYPE <name>_total` for a counter)."""
        with self.lock:
            counts = dict(self.counts)
            latency = {k: (list(v[0]), v[1], v[2]) for k, v in self.latency.items()}
        name = ":tensorflow:serving:request_count"
        lines = [f"# TYPE {name} counter"]
        for (model, status), n in sorted(counts.items()):
            lines.append(f"{name}{_labels(model_name=model, status=status)} {n}")
        name = ":tensorflow:serving:request_latency"
        lines.append(f"# TYPE {name} histogram")
        for (model, api, entry), (buckets, total, n) in sorted(latency.items()):
            labels = {"model_name": model, "API": api, "entrypoint": entry}
            cumulative = 0
            for bound, count in zip((*TF_LATENCY_BUCKETS_US, float("inf")), buckets, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:.6g}"
                lines.append(f"{name}_bucket{_labels(**labels, le=le)} {cumulative}")
            lines.append(f"{name}_sum{_labels(**labels)} {total:.6g}")
            lines.append(f"{name}_count{_labels(**labels)} {n}")
        return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


class ServingMetrics:
    """One server's request metrics; `observe` is thread-safe and cheap (a lock and a bisect)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._tf = _TfServingCollector()
        self._http = Histogram(
            "pulsecast_http_request_duration_seconds",
            "HTTP request latency by model and route",
            ("model_name", "route", "code"),
            buckets=HTTP_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._slow_clients = Counter(
            "pulsecast_http_slow_client_closed",
            "REST connections closed because a request's headers or body arrived too slowly",
            ("phase",),
            registry=self.registry,
        )
        for phase in SLOW_CLIENT_PHASES:  # both series from the start: a rate needs the zero
            self._slow_clients.labels(phase)
        self._grpc_denied = Counter(
            "pulsecast_grpc_unauthenticated",
            "gRPC calls refused for a missing or wrong bearer token (serve.grpc.auth)",
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._window: list[float] = []
        self._errors = 0
        self._total = 0

    def observe(self, model: str, route: str, http_status: int, status_name: str,
                latency_s: float, entrypoint: str = "REST") -> None:
        """Record one request. `route` is the API (`predict`, `metadata`, `infer`...)."""
        ok = http_status < 400
        if route in ("predict", "classify", "regress", "forecast", "infer", "metadata", "status"):
            self._tf.observe(model, route, status_name, latency_s * 1e6, entrypoint, ok)
        self._http.labels(model, route, str(http_status)).observe(latency_s)
        self._summarize(ok, latency_s)

    def observe_grpc(self, model: str, api: str, status_name: str, latency_s: float) -> None:
        """Record one gRPC call (`api` is the RPC: Predict, Classify, ...) in the TF Serving
        metrics with `entrypoint="GRPC"`, and in the logged summary."""
        ok = status_name == "OK"
        self._tf.observe(model, api, status_name, latency_s * 1e6, "GRPC", ok)
        self._summarize(ok, latency_s)

    def observe_grpc_denied(self, method: str) -> None:
        """Count one gRPC call refused UNAUTHENTICATED. `method` (the client's text) is not a
        label: unknown names from clients must not grow the label sets."""
        self._grpc_denied.inc()

    def observe_slow_client(self, phase: str) -> None:
        """Count one REST connection closed for reading a request too slowly; `phase` is what
        it was waiting for, "headers" or "body" (serve.http.timeouts)."""
        if phase not in SLOW_CLIENT_PHASES:
            raise ValueError(f"phase must be one of {', '.join(SLOW_CLIENT_PHASES)}, got {phase!r}")
        self._slow_clients.labels(phase).inc()

    def _summarize(self, ok: bool, latency_s: float) -> None:
        """Count one request for the periodic log summary (`take_summary`)."""
        with self._lock:
            self._total += 1
            self._errors += not ok
            if len(self._window) < 100_000:
                self._window.append(latency_s)

    def take_summary(self) -> tuple[int, int, int, float, float] | None:
        """(total so far, requests and errors since the last call, p50 and p99 in ms) or None."""
        with self._lock:
            window, self._window = self._window, []
            errors, self._errors = self._errors, 0
            total = self._total
        if not window:
            return None
        window.sort()
        p50 = window[len(window) // 2] * 1e3
        p99 = window[min(len(window) - 1, int(len(window) * 0.99))] * 1e3
        return total, len(window), errors, p50, p99

    def render(self) -> bytes:
        return self._tf.render().encode() + generate_latest(self.registry)
