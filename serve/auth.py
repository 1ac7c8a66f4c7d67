"""The one access rule of every protocol: `Authorization: Bearer <token>`, in constant time.

REST (`serve.http.plumbing.BearerAuth`) and gRPC (`serve.grpc.auth.TokenInterceptor`) both ask
`BearerToken.admits(value)` with the request's `authorization` header or metadata value. What
stays open without a token is the same short list on both protocols: liveness and readiness
(`OPEN_REST_PATHS`, and on gRPC the standard health service, `serve.grpc.auth.OPEN_METHODS`).
docs/reliability.md (threat model) says what the token protects and how each door is tested.
"""

from __future__ import annotations

import hashlib
import hmac

# REST routes answered without the token: liveness and readiness only.
OPEN_REST_PATHS = frozenset({"/healthz", "/v2/health/live", "/v2/health/ready"})


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class BearerToken:
    """A configured bearer token; `admits` says whether a header value carries it."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("a bearer token must be non-empty")
        self._digest = _digest(token.encode("utf-8"))

    def admits(self, authorization: bytes | str | None) -> bool:
        """Whether `authorization` is `Bearer <token>` (the scheme case-insensitive).

        Constant-time in the token: both sides are hashed first, so `compare_digest` compares
        equal-length values and a wrong guess learns nothing from the time it took.
        """
        if not authorization:
            return False
        if isinstance(authorization, str):
            authorization = authorization.encode("utf-8", "replace")
        scheme, _, presented = authorization.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            _digest(presented.strip()), self._digest
        )
