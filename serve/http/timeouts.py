"""Read deadlines for the REST server: slow clients (slowloris, stalled bodies) are cut off.

uvicorn times only the idle wait between keep-alive requests, and even that timer is cancelled
by the first byte of the next request and never re-armed: a client trickling header bytes, a
connection that sends nothing, or a body held open after its headers would keep a socket (and
a file descriptor) forever. `make_protocol_class` returns uvicorn's HTTP protocol (httptools,
or h11 where httptools is missing) with two deadlines on *reading* a request:

    headers  complete within `header_timeout_s` of the request's first byte (of the connection
             being made, for its first request: a connection that sends nothing is cut too)
    body     complete within `body_timeout_s` of the end of the headers, a total deadline
             that a trickle of bytes does not extend

Past either the socket is closed: with `408 Request Timeout` first when the client has sent
part of a request and no answer has begun, silently for a connection that never sent a byte.
Only reading is timed: once a request is read, its app may take as long as it needs; uvicorn's
keep-alive timer between requests is left as it is. One INFO line (the client's address, no
payload) and `metrics.observe_slow_client(phase)` record each cut.

Fast clients pay one timer per connection, none per request: the phase is tracked in the
parser's callbacks, and a timer is armed only when a chunk of data ends inside a request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal, Protocol

import h11

log = logging.getLogger(__name__)

Phase = Literal["headers", "body"]
PARSERS = ("httptools", "h11")


class SlowClientCounter(Protocol):
    """What counts the cuts (`serve.metrics.ServingMetrics` is one); called on the event loop."""

    def observe_slow_client(self, phase: str) -> None: ...


class _ReadDeadlines:
    """The deadline machinery, mixed in ahead of a uvicorn HTTP protocol class.

    Each subclass keeps `_phase` up to date ("headers", "body", or None while no request is
    being read) and sets `_fresh` when a new phase begins; `_sync` then re-arms the timer.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    metrics: SlowClientCounter | None = None

    # set by uvicorn's protocol classes
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    flow: Any
    cycle: Any
    client: tuple[str, int] | None
    server_state: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._fresh = False
        self._timer: asyncio.TimerHandle | None = None
        self._bytes_seen = False  # False until the connection's first byte
        self._upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._phase, self._fresh = "headers", True
        self._sync()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._phase = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        self._bytes_seen = True
        super().data_received(data)  # type: ignore[misc]
        self._sync()

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # the transport moves to a WebSocket protocol, which this timer must not close
        self._upgraded = True
        self._cancel()
        self._phase = None
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def _sync(self) -> None:
        """Arm a timer for a phase that has just begun; cancel it once no request is being read.

        Called once per chunk of data, so a request read whole in one chunk arms nothing."""
        if self._upgraded:
            return
        if self._phase is None:
            self._cancel()
        elif self._fresh:
            self._fresh = False
            self._cancel()
            self._timer = self.loop.call_later(self._timeout_s(), self._deadline_passed)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout_s(self) -> float:
        return self.header_timeout_s if self._phase == "headers" else self.body_timeout_s

    def _deadline_passed(self) -> None:
        self._timer = None
        phase = self._phase
        if phase is None or self.transport.is_closing():
            return
        if self.flow.read_paused:
            # uvicorn stopped reading (back-pressure on a large body the app has not taken
            # yet, or a pipelined request waiting its turn): the wait is ours, not the client's
            self._timer = self.loop.call_later(self._timeout_s(), self._deadline_passed)
            return
        self._record(phase)
        # In the headers phase `cycle` is the previous request's; in the body phase, this one's.
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and (
            phase == "headers" or cycle.response_started
        ):
            # An answer is being made (to an earlier pipelined request) or written: let it
            # finish, then close, as uvicorn's own graceful shutdown() does.
            cycle.keep_alive = False
            return
        if phase == "body" and cycle is not None:
            if not cycle.response_started:  # else the app has answered already
                # the app's receive() now says http.disconnect and its send() writes nothing
                cycle.disconnected = True
                self.transport.write(self._timeout_response(phase))
        elif self._bytes_seen:
            self.transport.write(self._timeout_response(phase))
        self.transport.close()

    def _record(self, phase: Phase) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if not self._bytes_seen:
            what = f"sent nothing within {self.header_timeout_s:g} s of connecting"
        elif phase == "headers":
            what = f"did not complete request headers within {self.header_timeout_s:g} s"
        else:
            what = f"did not complete a request body within {self.body_timeout_s:g} s"
        log.info("closing slow REST connection from %s: it %s", client, what)
        if self.metrics is not None:
            self.metrics.observe_slow_client(phase)

    def _timeout_response(self, phase: Phase) -> bytes:
        timeout_s = self.header_timeout_s if phase == "headers" else self.body_timeout_s
        body = json.dumps(
            {"error": f"Request {phase} not received within {timeout_s:g} s"}
        ).encode()
        lines = [b"HTTP/1.1 408 Request Timeout\r\n"]
        lines += [name + b": " + value + b"\r\n"
                  for name, value in self.server_state.default_headers]
        lines += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        return b"".join(lines)


class _HttpToolsDeadlines(_ReadDeadlines):
    """Phases from httptools' parser callbacks, which fire for every pipelined request too."""

    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        if self._phase != "headers":  # a new connection's first request keeps its deadline
            self._phase, self._fresh = "headers", True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()  # type: ignore[misc]
        self._phase, self._fresh = "body", True

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        self._phase = None


class _H11Deadlines(_ReadDeadlines):
    """Phases from h11's state machine, after each round of event handling (h11 parses a
    pipelined request only once the previous answer is out, in `on_response_complete`)."""

    conn: h11.Connection

    def handle_events(self) -> None:
        super().handle_events()  # type: ignore[misc]
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            phase: Phase | None = "body"
        elif state is h11.IDLE and (self._phase == "headers" or self.conn.trailing_data[0]):
            phase = "headers"  # part of a request line or header is buffered
        else:
            phase = None
        if phase != self._phase:
            self._phase, self._fresh = phase, phase is not None
        self._sync()


def make_protocol_class(header_timeout_s: float, body_timeout_s: float,
                        metrics: SlowClientCounter | None = None,
                        parser: str = "httptools") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class for `parser` ("httptools" or "h11") with read deadlines
    in seconds; pass it as `uvicorn.Config(http=...)`. `metrics` counts the cuts by phase."""
    if not header_timeout_s > 0:
        raise ValueError(f"header_timeout_s must be > 0, got {header_timeout_s}")
    if not body_timeout_s > 0:
        raise ValueError(f"body_timeout_s must be > 0, got {body_timeout_s}")
    if parser == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        bases: tuple[type, ...] = (_HttpToolsDeadlines, HttpToolsProtocol)
    elif parser == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        bases = (_H11Deadlines, H11Protocol)
    else:
        raise ValueError(f"parser must be one of {', '.join(PARSERS)}, got {parser!r}")
    return type(f"{bases[1].__name__}WithDeadlines", bases, {
        "header_timeout_s": float(header_timeout_s),
        "body_timeout_s": float(body_timeout_s),
        "metrics": metrics,
    })
