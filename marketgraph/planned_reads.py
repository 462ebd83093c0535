"""The planner's place in the request path: an ASGI middleware in front of Starlette's routing.

A plain GraphQL request to `/graphql` (a JSON POST, or a GET with `query`) whose operation
the planner serves is answered here, after the request id, metrics and CORS middleware and
before the router, Strawberry's view and their request and response objects, which would
cost a planned read more than its statement. Every other request, and every planned run
that raises, goes on to Strawberry with its body intact: Strawberry answers errors, with
their paths and codes, and executes what the planner does not know. Two failures are
answered here instead, as Strawberry would only meet them again after the same wait: a
caller refused before execution (bad credentials, an unknown market, the key-value store
or an API key's store down), and a store that is down during the planned run.

`QUERY_PLANNER=shadow` answers with Strawberry and logs any difference from the plan. In
development, a planned answer to a request with `X-Explain: 1` carries its plan in
`extensions.plan` (what `marketgraph plan explain` prints).
"""

from __future__ import annotations

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketgraph import tracing
from marketgraph.context import request_context
from marketgraph.errors import DomainError, ServiceUnavailableError, is_unavailable, refusal_body
from marketgraph.graphql_http import (
    Answer,
    GraphQLParams,
    RequestRefused,
    executed_answer,
    read_request,
    refusal_answer,
)
from marketgraph.metrics import Metrics
from marketgraph.middleware import header, route_path
from marketgraph.persisted import PersistedDocuments
from marketgraph.planner import Fallback, Planner
from marketgraph.planner.explain import describe
from marketgraph.services import Services

log = structlog.get_logger(__name__)

# A GET that asks for an operation (not GraphiQL's page): by text or by persisted id.
_GET_OPERATION = (b"query=", b"extensions=", b"documentId=")


class PlannedReads:
    """Answers the planner's operations; hands everything else to `app` unchanged."""

    def __init__(
        self,
        app: ASGIApp,
        planner: Planner,
        metrics: Metrics,
        shadow: bool,
        max_depth: int,
        persisted: PersistedDocuments,
        explain: bool = False,
    ) -> None:
        self.app = app
        self.persisted = persisted
        self.explain = explain  # development: `X-Explain: 1` adds the plan to the answer
        self.planner = planner
        self.metrics = metrics
        self.shadow = shadow
        self.max_depth = max_depth  # of variables (MAX_VARIABLES_DEPTH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) != "/graphql":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and _media_type(scope) == "application/json":
            body = scope["state"]["body"]  # read, within its limit, by the edge
        elif scope["method"] == "GET" and any(p in scope["query_string"] for p in _GET_OPERATION):
            body = None
        else:
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        try:
            params = await read_request(scope, body, self.max_depth, self.persisted, services.kv)
        except (RequestRefused, DomainError):
            await self.app(scope, receive, send)  # Strawberry's view words the refusal
            return
        answer = await self._answer(scope, params)
        if answer is None:
            await self.app(scope, receive, send)
        elif self.shadow:
            await self._compare(scope, receive, send, params, answer.body)
        else:
            await _send(send, answer)

    async def _answer(self, scope: Scope, params: GraphQLParams) -> Answer | None:
        """The planned answer, or None for Strawberry to answer."""
        if params.query is None:
            return None
        await self.planner.check(params.query)  # a new document's checks leave the loop free
        prepared = self.planner.prepare(params.query, params.operation_name, params.variables)
        if prepared is None:
            self.metrics.planner_outcome("strawberry")
            return None
        services: Services = scope["app"].state.services
        request_id = scope["state"].get("request_id")
        try:
            context = await request_context(scope, services)
        except DomainError as exc:  # a refused credential, an unknown market, a store down
            return refusal_answer(scope, exc, request_id)
        scope["state"]["context"] = context  # should Strawberry answer, it needs no other
        try:
            with tracing.planned_operation(prepared.name):
                data = await self.planner.execute(prepared, context)
            if self.explain and header(scope, b"x-explain"):
                plan = describe(prepared.operation, context.market.code)
                answer = orjson.dumps({"data": data, "extensions": {"plan": plan}})
            else:
                answer = orjson.dumps({"data": data})
        except Exception as exc:
            if is_unavailable(exc):  # ServiceUnavailableError included
                # Strawberry would wait for the same store again: answer now.
                log.warning("store unavailable", error=repr(exc))
                self.metrics.planner_outcome("planned")
                unavailable = exc if isinstance(exc, ServiceUnavailableError) else None
                failure = unavailable or ServiceUnavailableError()
                body = refusal_body(failure, request_id, executed=True)
                return executed_answer(scope, params, body, False, 0)
            self._fell_back(exc, params, request_id)
            return None
        self.metrics.planner_outcome("planned")
        return executed_answer(scope, params, answer, True, self.persisted.cache_seconds)

    def _fell_back(self, exc: Exception, params: GraphQLParams, request_id: str | None) -> None:
        """Count a planned run Strawberry will re-run; log it when it was not an answer the
        plan leaves Strawberry to word (a GraphQL error, a `Fallback`'s known reason)."""
        if isinstance(exc, DomainError):
            self.metrics.planner_fallback("error")
            return
        if isinstance(exc, Fallback):
            self.metrics.planner_fallback(str(exc))
            return
        self.metrics.planner_fallback(type(exc).__name__)
        log.warning(
            "planned run failed; Strawberry answers",
            request_id=request_id,
            error=repr(exc),
            query=params.query,
            exc_info=exc,
        )

    async def _compare(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        params: GraphQLParams,
        planned: bytes,
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
                query=params.query,
                planned=planned.decode(),
                strawberry=served.decode(),
            )
        for message in messages:
            await send(message)


def _media_type(scope: Scope) -> str:
    return (header(scope, b"content-type") or "").split(";")[0].strip()


async def _send(send: Send, answer: Answer) -> None:
    raw = [(name.encode(), value.encode("latin-1")) for name, value in answer.headers.items()]
    raw.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": raw})
    await send({"type": "http.response.body", "body": answer.body})
