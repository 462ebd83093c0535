"""The planner's place in the request path: an ASGI middleware in front of Starlette's routing.

A plain GraphQL request to `/graphql` (a JSON POST, or a GET with `query`) whose operation
the planner serves is answered here, after the request id, metrics and CORS middleware and
before the router, Strawberry's view and their request and response objects, which would
cost a planned read more than its statement. Every other request, and every planned run
that raises, goes on to Strawberry with its body intact: Strawberry answers errors, with
their paths and codes, and executes what the planner does not know.

`QUERY_PLANNER=shadow` answers with Strawberry and logs any difference from the plan.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketgraph.context import request_context
from marketgraph.errors import DomainError
from marketgraph.metrics import Metrics
from marketgraph.middleware import header, route_path
from marketgraph.planner import Planner
from marketgraph.services import Services

log = structlog.get_logger(__name__)

Params = tuple[str, str | None, dict[str, Any] | None]

_JSON_HEADERS = (b"content-type", b"application/json")


class PlannedReads:
    """Answers the planner's operations; hands everything else to `app` unchanged."""

    def __init__(self, app: ASGIApp, planner: Planner, metrics: Metrics, shadow: bool) -> None:
        self.app = app
        self.planner = planner
        self.metrics = metrics
        self.shadow = shadow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) != "/graphql":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST":
            if _media_type(scope) != "application/json":
                await self.app(scope, receive, send)
                return
            body = await _read_body(receive)
            if body is None:
                return  # the client left before sending its request: nobody to answer
            receive = _replay(body, receive)
            params = _post_params(body)
        elif scope["method"] == "GET":
            params = _get_params(scope["query_string"])
        else:
            params = None
        answer = await self._answer(scope, params)
        if answer is None:
            await self.app(scope, receive, send)
        elif self.shadow:
            await self._compare(scope, receive, send, params, answer)
        else:
            await _send_json(send, answer)

    async def _answer(self, scope: Scope, params: Params | None) -> bytes | None:
        """The planned response body, or None for Strawberry to answer."""
        prepared = self.planner.prepare(*params) if params is not None else None
        if prepared is None:
            self.metrics.planner_outcome("strawberry")
            return None
        services: Services = scope["app"].state.services
        try:
            context = await request_context(scope, services)
        except DomainError:  # a refused credential or market: Strawberry's view words it
            return None
        try:
            data = await self.planner.execute(prepared, context)
            answer = orjson.dumps({"data": data})
        except Exception as exc:
            log.debug("planned run fell back", reason=repr(exc))
            self.metrics.planner_outcome("fallback")
            return None
        self.metrics.planner_outcome("planned")
        return answer

    async def _compare(
        self, scope: Scope, receive: Receive, send: Send, params: Params | None, planned: bytes
    ) -> None:
        """Serve Strawberry's answer; log the plan's when it differs."""
        messages: list[Message] = []

        async def keep(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        served = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        if served != planned:
            log.warning(
                "planner differs from Strawberry",
                query=params[0] if params else None,
                planned=planned.decode(),
                strawberry=served.decode(),
            )
        for message in messages:
            await send(message)


def _media_type(scope: Scope) -> str:
    return (header(scope, b"content-type") or "").split(";")[0].strip()


def _post_params(body: bytes) -> Params | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return _params(payload)


def _get_params(query_string: bytes) -> Params | None:
    # As Starlette reads a query string (the last of repeated names wins).
    payload: dict[str, Any] = dict(
        parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    )
    if "query" not in payload:
        return None  # GraphiQL's page, or a request Strawberry refuses
    if "variables" in payload:
        try:
            payload["variables"] = orjson.loads(payload["variables"])
        except orjson.JSONDecodeError:
            return None
    return _params(payload)


def _params(payload: Any) -> Params | None:
    """(query, operationName, variables) of a single request; batches and odd shapes are
    Strawberry's to answer."""
    if not isinstance(payload, dict):
        return None
    query, name, variables = (
        payload.get("query"),
        payload.get("operationName"),
        payload.get("variables"),
    )
    if not isinstance(query, str) or not isinstance(name, str | None):
        return None
    if not isinstance(variables, dict | None):
        return None
    return query, name, variables


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app behind: the body read here, then the connection's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _send_json(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
