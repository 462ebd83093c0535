"""uvicorn's HTTP/1.1 protocol (httptools) with the request head bounded, for `serve`.

uvicorn's httptools protocol keeps every header byte a client sends until the head is
complete, and waits for it as long as the client likes: a 100 MB header, or a thousand
connections sending one byte a second (slowloris), would cost the worker memory and
sockets before the app could refuse anything. Here the request line and headers are
counted as they arrive and refused with 431 past MAX_HEADER_BYTES, and a head that is not
complete within REQUEST_READ_TIMEOUT is answered 408. After either answer the connection
lingers, as nginx's does: the server stops sending and drops what still arrives, for at
most LINGER_SECONDS, before closing, so a client still sending its request can read the
answer (a close with unread bytes would reset the connection under it). The app's edge
(`marketgraph.edge`) checks the same limit for servers run without this protocol.

The limits come from the app's lifespan state (`edge_limits`), so every worker applies
its own settings.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from marketgraph.errors import ErrorCode, error_body

_STATUS = {408: b"408 Request Timeout", 431: b"431 Request Header Fields Too Large"}
LINGER_SECONDS = 2.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """See the module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.app_state.get("edge_limits")
        self._max_head = limits.max_header_bytes if limits else 16 * 1024
        self._read_timeout = limits.read_timeout if limits else 10.0
        self._head_bytes = 0
        self._head_too_large = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._lingering:  # lingering: what arrives after the refusal is dropped
            super().data_received(data)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:  # the parser stopped at our callback's refusal
            self._refuse(431, f"Request headers are too large; at most {self._max_head} bytes")
        else:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._max_head:
            self._head_too_large = True
            raise ValueError("request head too large")  # httptools stops parsing

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._read_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(
                408,
                f"The request headers did not arrive within {self._read_timeout:g} seconds",
            )

    def _refuse(self, status: int, message: str) -> None:
        body = error_body(ErrorCode.BAD_USER_INPUT, message, None)
        head = b"HTTP/1.1 " + _STATUS[status] + b"\r\n"
        for name, value in self.server_state.default_headers:
            head += name + b": " + value + b"\r\n"
        head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        self.transport.write(head + b"connection: close\r\n\r\n" + body)
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
