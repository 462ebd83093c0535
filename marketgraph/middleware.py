"""ASGI middleware: the request id every log line and error answer carries."""

from __future__ import annotations

import re
import uuid

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
        incoming = header(scope, b"x-request-id") or ""
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        echoed = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the root path a proxy mounts the app under
    (uvicorn --root-path), as Starlette's router sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case, as ASGI gives names), or None."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def client_ip(scope: Scope, trusted_proxies: list[str]) -> str:
    """The connection's peer, or the first X-Forwarded-For address when the peer is a trusted
    proxy (FORWARDED_ALLOW_IPS; `*` trusts every peer)."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if peer in trusted_proxies or "*" in trusted_proxies:
        forwarded = header(scope, b"x-forwarded-for") or ""
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return peer
