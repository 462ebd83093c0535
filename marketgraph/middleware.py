"""ASGI middleware: the request id every log line and error answer carries."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketgraph.logs import request_id_var
from marketgraph.proxies import TrustedProxies, parse_trusted_proxies

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


def client_ip(scope: Scope, trusted_proxies: TrustedProxies | Sequence[str]) -> str:
    """The connection's peer or, when the peer is a trusted proxy (FORWARDED_ALLOW_IPS), the
    right-most X-Forwarded-For address that is not one: what a client prepends is ignored."""
    trusted = (
        trusted_proxies
        if isinstance(trusted_proxies, TrustedProxies)
        else parse_trusted_proxies(tuple(trusted_proxies))
    )
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    # Several X-Forwarded-For lines are one list, in order (RFC 9110, 5.3).
    forwarded = ", ".join(v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for")
    return trusted.client_address(peer, forwarded or None)
