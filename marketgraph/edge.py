"""The edge: what every HTTP request meets before any work is done for it.

- **Load shedding.** A worker serves at most MAX_IN_FLIGHT requests at once; past that it
  answers 503 with `Retry-After` at once, rather than queueing until clients time out.
  Health probes and metrics are exempt, so an orchestrator still sees a busy worker live.
- **Draining.** While the worker shuts down (`marketgraph.draining`), a new request is
  answered 503 with `Retry-After` and `Connection: close`, answers of the requests still
  running close their connections, and a request cut at the end of SHUTDOWN_GRACE before
  its answer began is answered 503 (health and metrics are still served).
- **Header and body limits.** Headers (with the request line) over MAX_HEADER_BYTES are
  431; a body over MAX_BODY_BYTES (WEBHOOK_MAX_BODY_BYTES for the payment webhook) is 413,
  never buffered beyond the limit (`_Body`), and refused before it is sent when the client
  asked `Expect: 100-continue`. A body that does not arrive within REQUEST_READ_TIMEOUT is
  408. The body read here is handed on to the app, which reads it as if from the
  connection (and finds it in `scope["state"]["body"]`).
- **A JSON answer, whatever happens.** An exception that escapes the app is logged and
  answered as a JSON `INTERNAL_SERVER_ERROR` (a bug), so the client never gets a plain
  text 500 or a dropped connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketgraph.draining import Draining, Running
from marketgraph.errors import ErrorCode, error_body
from marketgraph.metrics import Metrics
from marketgraph.middleware import header, route_path
from marketgraph.settings import Settings

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/payments"
_EXEMPT = ("/health", "/health/ready", "/health/detailed", "/metrics")
_WITHOUT_BODY = ("GET", "HEAD", "OPTIONS", "DELETE")


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_in_flight: int
    max_header_bytes: int
    max_body_bytes: int
    webhook_max_body_bytes: int
    read_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            max_in_flight=settings.max_in_flight,
            max_header_bytes=settings.max_header_bytes,
            max_body_bytes=settings.max_body_bytes,
            webhook_max_body_bytes=settings.webhook_max_body_bytes,
            read_timeout=settings.request_read_timeout,
        )


class _Refusal(Exception):  # noqa: N818 - an answer, sent by the middleware
    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        reason: str,
        retry_after: int = 0,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.reason, self.retry_after = reason, retry_after
        self.close = close or status in (408, 413, 431)  # the rest of the request is unread


class Edge:
    """The ASGI middleware described in the module's docstring."""

    def __init__(
        self, app: ASGIApp, limits: EdgeLimits, metrics: Metrics, draining: Draining
    ) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics
        self.draining = draining  # the requests in flight, and whether the worker drains

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        draining = self.draining
        running: Running | None = None
        started = False

        async def send_watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if running is not None:
                    running.started = True
                if draining.active:  # the client's next request is for another worker
                    headers = [*message.get("headers", ()), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            if path not in _EXEMPT:
                if draining.active:
                    draining.refused += 1
                    raise _Refusal(
                        503,
                        ErrorCode.SERVICE_UNAVAILABLE,
                        "The server is shutting down; try again",
                        "draining",
                        retry_after=1,
                        close=True,
                    )
                if draining.in_flight >= self.limits.max_in_flight:
                    raise _Refusal(
                        503,
                        ErrorCode.SERVICE_UNAVAILABLE,
                        "The server is busy; try again shortly",
                        "busy",
                        retry_after=1,
                    )
                running = draining.enter()
            try:
                receive = await self._bounded(scope, receive, path)
                await self.app(scope, receive, send_watched)
            except asyncio.CancelledError:
                if running is None or not running.cut or started:
                    raise
                running.uncancel()
                raise _Refusal(
                    503,
                    ErrorCode.SERVICE_UNAVAILABLE,
                    "The server shut down before this request finished; try again",
                    "shutdown",
                    retry_after=1,
                    close=True,
                ) from None
            finally:
                if running is not None:
                    draining.leave(running)
        except _Refusal as refusal:
            self.metrics.refused(refusal.reason)
            await _send_refusal(scope, send, refusal)
        except Exception:
            log.exception("unhandled error", path=path)
            if not started:
                await _send_refusal(
                    scope,
                    send,
                    _Refusal(500, ErrorCode.INTERNAL_SERVER_ERROR, "Internal server error", ""),
                )

    async def _bounded(self, scope: Scope, receive: Receive, path: str) -> Receive:
        """`receive` for the app, once headers and body are within the limits."""
        limits = self.limits
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        size = len(scope.get("raw_path") or b"") + len(scope["query_string"])
        size += sum(len(name) + len(value) for name, value in headers)
        if size > limits.max_header_bytes:
            raise _Refusal(
                431,
                ErrorCode.BAD_USER_INPUT,
                f"Request headers are too large; at most {limits.max_header_bytes} bytes",
                "headers",
            )
        if scope["method"] in _WITHOUT_BODY:
            return receive
        limit = limits.webhook_max_body_bytes if path == WEBHOOK_PATH else limits.max_body_bytes
        too_large = _Refusal(
            413,
            ErrorCode.BAD_USER_INPUT,
            f"The request body is too large; at most {limit} bytes",
            "body",
        )
        declared = header(scope, b"content-length")
        expects_continue = (header(scope, b"expect") or "").lower() == "100-continue"
        if expects_continue and declared and declared.isdigit() and int(declared) > limit:
            raise too_large  # refused before the client sends the body
        body = _Body(limit)
        try:
            async with asyncio.timeout(limits.read_timeout):
                await body.read(receive)
        except TimeoutError:
            if body.size <= limit:
                raise _Refusal(
                    408,
                    ErrorCode.BAD_USER_INPUT,
                    f"The request body did not arrive within {limits.read_timeout:g} seconds",
                    "body_timeout",
                ) from None
        if body.size > limit:
            raise too_large
        whole = b"".join(body.chunks)
        scope.setdefault("state", {})["body"] = whole  # for the planner's middleware
        return _replay(whole, receive)


class _Body:
    """A request body read up to `limit` bytes; past it, the rest is read and dropped, so
    memory stays bounded and the client, done sending, can read the answer (closing a
    connection with unread bytes resets it). REQUEST_READ_TIMEOUT bounds the reading."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    async def read(self, receive: Receive) -> None:
        """Until the body ends (or the client leaves: the app sees its disconnect next)."""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size <= self.limit:
                self.chunks.append(chunk)
            elif self.chunks:
                self.chunks.clear()
            if not message.get("more_body", False):
                return


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app: the body read here, then the connection's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _send_refusal(scope: Scope, send: Send, refusal: _Refusal) -> None:
    request_id = scope.get("state", {}).get("request_id")
    extensions = {"retryAfter": refusal.retry_after} if refusal.retry_after else {}
    body = error_body(refusal.code, refusal.message, request_id, **extensions)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if refusal.retry_after:
        headers.append((b"retry-after", str(refusal.retry_after).encode()))
    if refusal.close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
