"""HTTP plumbing shared by every REST route: errors, outcomes, auth, body limits, worker threads.

- `HttpError`: a non-TF-Serving HTTP error (401, 404 outside /v1, 405, 413) with its text;
  TF Serving's own errors are `serve.errors.ServingError`. Both become `{"error": message}`.
- `Outcome`: what a handler produced (status, body, and the model and route for the metrics).
- `BearerAuth`: the optional `Authorization: Bearer <token>` check, constant-time.
- `read_body`: the request body, gunzipped when sent gzipped; 413 past the limit, before and
  after decompression (a small gzip bomb is refused as early as a large body).
- `Workers`: the thread pool handlers run on, bounded by the REST timeout (504 past it).
- `model_ref`: model name, version and label from a URL, unescaped and checked.

No route knows another's internals: the TF Serving routes (`serve.http.tf_serving`), KServe V2
(`serve.http.kserve`) and the router (`serve.http.routes`) all import from here.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from serve.auth import BearerToken
from serve.errors import Code, ServingError, invalid

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]

_INT64_MAX = 2**63 - 1
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


class HttpError(Exception):
    """A non-TF-Serving HTTP error (401, 413, 404 outside /v1) with its `{"error"}` text."""

    def __init__(self, status: int, message: str, headers: tuple = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass
class Outcome:
    """What a handler produced, for the response and the metrics."""

    status: int
    body: bytes
    model: str = ""
    route: str = "other"
    code: str = "OK"
    content_type: bytes = b"application/json"
    headers: tuple = ()


def json_outcome(status: int, doc: Any, model: str = "", route: str = "other") -> Outcome:
    """An `Outcome` whose body is `doc` as JSON (numpy arrays allowed)."""
    return Outcome(status, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), model, route)


def header(scope: dict, name: bytes) -> bytes:
    """The first value of a request header (lower-case `name`), b"" when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


def printable(path: str) -> str:
    """A URL path cut to 512 characters and safe to log or echo."""
    return path[:512].encode("latin-1", "replace").decode("utf-8", "replace")


class BearerAuth:
    """`Authorization: Bearer <token>` on every route that asks, when a token is set (the rule
    gRPC applies too: `serve.auth`)."""

    def __init__(self, token: str | None) -> None:
        self._token = BearerToken(token) if token else None

    def check(self, scope: dict) -> None:
        """Raises 401 (with `WWW-Authenticate: Bearer`) unless the request carries the token."""
        if self._token is not None and not self._token.admits(header(scope, b"authorization")):
            raise HttpError(401, "Missing or invalid bearer token in the Authorization header",
                            ((b"www-authenticate", b"Bearer"),))


async def read_body(scope: dict, receive: Receive, limit: int) -> bytes:
    """The request body, gunzipped when `Content-Encoding` says gzip; 413 past `limit` bytes."""
    length = header(scope, b"content-length")
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
    if b"gzip" in header(scope, b"content-encoding").lower():
        body = _gunzip(body, limit)
    return body


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


class Workers:
    """The worker threads handlers run on, so the event loop never runs a model; every wait is
    bounded by the REST timeout (DEADLINE_EXCEEDED, a 504, past it)."""

    def __init__(self, num_threads: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="rest")

    async def run(self, fn: Callable[..., Outcome], *args: Any) -> Outcome:
        """`fn(*args)` on a worker thread."""
        loop = asyncio.get_running_loop()
        return await self.bounded(loop.run_in_executor(self._pool, fn, *args))

    async def bounded(self, future: Awaitable[Any]) -> Any:
        """`future`'s result within the REST timeout (a batched task is cancelled and dropped
        from its batch past it)."""
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise ServingError(
                Code.DEADLINE_EXCEEDED,
                f"Deadline Exceeded: request took longer than {self.timeout_s:g} s",
            ) from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def model_ref(name: str, version: str | None, label: str | None,
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
