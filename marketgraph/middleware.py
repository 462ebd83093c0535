"""ASGI middleware: the request id every log line and error answer carries."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketgraph.logs import request_id_var

# A client's id is echoed only when it is short and plain: it ends up in logs.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    """Take `X-Request-ID` (or make one), expose it to logs and resolvers, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def client_ip(scope: Scope, trusted_proxies: list[str]) -> str:
    """The connection's peer, or the first X-Forwarded-For address when the peer is a trusted
    proxy (FORWARDED_ALLOW_IPS; `*` trusts every peer)."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if peer in trusted_proxies or "*" in trusted_proxies:
        forwarded = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"), ""
        )
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return peer
