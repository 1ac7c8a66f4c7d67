"""Canonical status codes and the one serving exception, mapped to HTTP as TensorFlow Serving does.

Every failure inside the server is a `ServingError(code, message)`; the REST layer turns it into
`{"error": message}` with `HTTP_STATUS[code]`, the gRPC layer into `context.abort(code, message)`.
Messages copy TensorFlow Serving's verbatim texts (clients match on them): see
`../shared/specs/tf-serving.md` §1.3. A message is cut to `MAX_ERROR_CHARS` here, once for every
protocol, so no request can make the server write (or send) a large error.
"""

from __future__ import annotations

import enum

# An error text is cut to this many characters, TF Serving's own text kept as its prefix. TF
# Serving quotes whole request values in its texts: unbounded, 2 MB of 64-deep lists answered
# 260 MB. A value is quoted with at most `serve.wire.json_tensor.text.QUOTE_CHARS` (4 KiB), so
# every text the server builds fits well inside 16 KiB; this is the backstop for any that does
# not (a gRPC status message travels in a trailer, where 16 KiB is also safe).
MAX_ERROR_CHARS = 16 * 1024


class Code(enum.IntEnum):
    """tensorflow.error.Code / grpc.StatusCode numbers."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# ToHTTPStatusCode() in tensorflow_serving/model_servers/http_server.cc
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request or servable failure with its canonical code and TF Serving's message text."""

    def __init__(self, code: Code, message: str) -> None:
        message = bounded_message(message)
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def bounded_message(message: str) -> str:
    """`message` cut to `MAX_ERROR_CHARS`, marker included; shorter texts come back unchanged."""
    if len(message) <= MAX_ERROR_CHARS:
        return message
    marker = f"... (error text cut at {MAX_ERROR_CHARS} characters)"
    return message[: MAX_ERROR_CHARS - len(marker)] + marker


def invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def unavailable(message: str) -> ServingError:
    return ServingError(Code.UNAVAILABLE, message)
