"""The standard gRPC health service (`grpc.health.v1.Health`), open without a token.

`Check` with service "" answers SERVING when every configured model has an AVAILABLE version
(readiness, as REST's `/v2/health/ready`), NOT_SERVING otherwise; with a model name it answers
for that model, and NOT_FOUND for a name the server does not serve. `Watch` is not offered
(UNIMPLEMENTED, which health clients read as "poll Check"). Kubernetes' gRPC probes and
`grpc_health_probe` speak this protocol.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Readiness from the model manager, computed on each Check."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        names = self.manager.model_names()
        if request.service:
            if request.service not in names:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
            ready = self.manager.is_ready(request.service)
        else:
            ready = bool(names) and all(self.manager.is_ready(n) for n in names)
        status = (health_pb2.HealthCheckResponse.SERVING if ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Watch is not supported; poll Check")


def add_health_servicer(manager: Any, server: grpc.Server) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(manager), server)
