"""The bearer token on gRPC: a server interceptor in front of every servicer.

Every method needs metadata `authorization: Bearer <token>` (what gRPC clients send for a
bearer credential, e.g. `grpc.access_token_call_credentials` or plain call metadata) when the
server has a token; otherwise it answers UNAUTHENTICATED before the request is even parsed.
The open methods are the standard health service's (`grpc.health.v1.Health`, see
`serve.grpc.health`), as REST leaves only its health routes open (`serve.auth`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from serve.auth import BearerToken

# Answered without a token: liveness/readiness, as REST's /healthz and /v2/health/*.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
DENIED_TEXT = "Missing or invalid bearer token in the authorization metadata"


class TokenInterceptor(grpc.ServerInterceptor):
    """Lets a call through when it carries the token (or its method is open); otherwise the
    call ends UNAUTHENTICATED. `on_denied(method)` is told of each refusal (metrics)."""

    def __init__(self, token: str, on_denied: Callable[[str], None] | None = None) -> None:
        self._token = BearerToken(token)
        self._on_denied = on_denied

        def deny(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED_TEXT)

        # no deserializer: a refused request's bytes are never parsed
        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Callable, details: Any) -> Any:
        method = details.method
        if method in OPEN_METHODS:
            return continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and self._token.admits(value):
                return continuation(details)
        if self._on_denied is not None:
            self._on_denied(method)
        return self._deny
