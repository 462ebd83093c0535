"""The Starlette app factory: the lifespan opens stores and the key-value store; routes."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from cross_web import HTTPException, StarletteRequestAdapter
from graphql import GraphQLError, OperationType
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from marketgraph import tracing
from marketgraph.context import RequestContext, request_context
from marketgraph.draining import Draining
from marketgraph.edge import Edge, EdgeLimits
from marketgraph.errors import DomainError, format_error
from marketgraph.graphiql import asset_routes, graphiql_page
from marketgraph.graphql_http import (
    RequestRefused,
    executed_answer,
    known_params,
    read_request,
    refusal_answer,
    refused_answer,
    request_error_answer,
)
from marketgraph.health import health_routes
from marketgraph.logs import configure_logging
from marketgraph.metrics import Metrics, MetricsMiddleware, count_statements, metrics_endpoint
from marketgraph.middleware import RequestIdMiddleware
from marketgraph.persisted import PersistedDocuments
from marketgraph.planned_reads import PlannedReads
from marketgraph.planner import Planner
from marketgraph.schema import Schema, build_schema
from marketgraph.schema.documents import DocumentRules
from marketgraph.services import Services, open_services
from marketgraph.settings import Settings, refuse_unshared_workers
from marketgraph.webhooks import webhook_routes

log = structlog.get_logger(__name__)

SWITCH_INTERVAL = 0.0005


_OUTCOME = "graphql_outcome"


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What `process_result` saw, for `run` to set the answer's status and headers."""

    request_error: bool
    ok: bool
    code: str | None
    extensions: dict[str, Any]


class _RequestAdapter(StarletteRequestAdapter):
    """Strawberry's view of a Starlette request, with its ASGI scope (where the request's
    parameters are kept once read)."""

    @property
    def scope(self) -> Scope:
        return self._request.scope


class GraphQLView(GraphQL[RequestContext, None]):
    """Strawberry over Starlette: builds the typed context, reads the request's parameters
    once (`graphql_http`), formats errors, encodes with orjson, answers in the negotiated
    media type with GraphQL over HTTP's statuses; every refusal is JSON."""

    request_adapter_class = _RequestAdapter

    def __init__(self, schema: Schema, settings: Settings, persisted: PersistedDocuments) -> None:
        super().__init__(
            schema,
            graphql_ide=None if settings.is_production else "graphiql",
            allow_queries_via_get=True,
        )
        self.documents = schema.documents
        self.persisted = persisted
        self.max_variables_depth = settings.max_variables_depth

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        # A planned run that fell back authenticated the caller already: once per request.
        known: RequestContext | None = request.scope.get("state", {}).get("context")
        if known is not None:
            return known
        return await request_context(request.scope, request.app.state.services)

    async def render_graphql_ide(self, request: Request) -> Response:
        """The self-hosted GraphiQL (`marketgraph.graphiql`): Strawberry's page loads its
        scripts from a CDN, and stays at "Loading..." without internet access."""
        services: Services = request.app.state.services
        return graphiql_page(services.settings.default_market)

    def should_render_graphql_ide(self, request: Any) -> bool:
        """GraphiQL's page for a browser's GET (`text/html`) that names no operation: not
        for `*/*` (curl, a CDN) nor for a persisted read sent by id."""
        params = request.query_params
        return (
            request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and not any(name in params for name in ("query", "extensions", "documentId"))
        )

    async def parse_http_body(self, request: _RequestAdapter) -> GraphQLRequestData:  # type: ignore[override]
        if request.method == "POST" and "application/json" not in (request.content_type or ""):
            raise RequestRefused(
                "Send the request as JSON (Content-Type: application/json)", status=415
            )
        body = await request.get_body() if request.method == "POST" else None
        services: Services = request.scope["app"].state.services
        params = await read_request(
            request.scope, body, self.max_variables_depth, self.persisted, services.kv
        )
        if request.method == "GET" and params.query is not None:
            await self._refuse_mutation(params.query, params.operation_name)
        return GraphQLRequestData(
            query=params.query,
            variables=params.variables,
            operation_name=params.operation_name,
            extensions=params.extensions,
            protocol="http",
        )

    async def run(  # type: ignore[override]
        self, request: Request, context: Any = UNSET, root_value: Any = UNSET
    ) -> Response:
        """Strawberry's run, plus: a request refused before execution (bad credentials, an
        unknown market, a store that is down, a malformed request) still answers JSON."""
        request_id = request.scope.get("state", {}).get("request_id")
        try:
            response = await super().run(request, context, root_value)
        except DomainError as exc:
            answer = refusal_answer(request.scope, exc, request_id)
        except RequestRefused as exc:
            answer = refused_answer(request.scope, exc, request_id)
        except HTTPException as exc:  # Strawberry's own refusals: no query, a bad method, ...
            headers = {"allow": "GET, POST"} if exc.status_code == 405 else {}
            refused = RequestRefused(exc.reason, exc.status_code, headers)
            answer = refused_answer(request.scope, refused, request_id)
        else:
            outcome = request.scope["state"].pop(_OUTCOME, None)
            params = known_params(request.scope)
            if outcome is None or params is None:
                return response  # GraphiQL's page
            if outcome.request_error:
                answer = request_error_answer(
                    request.scope, params.media_type, outcome.code, outcome.extensions, b""
                )
            else:
                cache_seconds = self.persisted.cache_seconds
                answer = executed_answer(request.scope, params, b"", outcome.ok, cache_seconds)
            response.status_code = answer.status
            response.headers.update(answer.headers)
            return response
        return Response(answer.body, status_code=answer.status, headers=answer.headers)

    async def _refuse_mutation(self, query: str, operation_name: str | None) -> None:
        """GET runs queries only (a link or a prefetch must not change anything): a
        mutation is refused with 405, as GraphQL over HTTP says."""
        checked = await self.documents.check_async(query)
        if checked.document is None or checked.errors:
            return  # Strawberry words the document's own errors
        try:
            operation = checked.operation(operation_name)
        except GraphQLError:
            return
        if operation.operation is not OperationType.QUERY:
            raise RequestRefused(
                f"A {operation.operation.value} cannot be sent with GET: use POST",
                status=405,
                headers={"allow": "POST"},
            )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        request_id = request.scope.get("state", {}).get("request_id")
        # Errors without a path before any data: the request failed before execution (a
        # syntax or validation error, variables that do not coerce), so no `data` key.
        request_error = result.data is None and all(e.path is None for e in result.errors or ())
        data: GraphQLHTTPResponse = {} if request_error else {"data": result.data}
        first: dict[str, Any] = {}
        if result.errors:
            errors = [format_error(e, request_id) for e in result.errors]
            data["errors"] = [e.formatted for e in errors]
            first = errors[0].extensions or {}
            metrics: Metrics = request.app.state.metrics
            for error in errors:
                metrics.graphql_errors.labels(str((error.extensions or {}).get("code"))).inc()
        if result.extensions:
            data["extensions"] = result.extensions
        request.scope["state"][_OUTCOME] = _Outcome(
            request_error, not result.errors, first.get("code"), first
        )
        return data

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


async def jwks(request: Request) -> Response:
    """Public verification keys (empty with a shared HS256 secret)."""
    services: Services = request.app.state.services
    return Response(orjson.dumps(services.tokens.jwks()), media_type="application/json")


def install_services(app: Starlette, services: Services) -> None:
    """Hand open services to the app: requests borrow them, metrics watch them."""
    app.state.services = services
    count_statements(services.databases)
    tracing.trace_statements(services.databases)
    app.state.metrics.watch_pools(services.databases)


def create_app(settings: Settings | None = None, schema: Schema | None = None) -> Starlette:
    """The ASGI app (over the contract's schema unless one is given); nothing is opened until
    the lifespan starts."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    tracing.setup()  # before the schema: its extension is there only when tracing is on
    schema = schema or build_schema(DocumentRules.from_settings(settings))
    # The requests in flight, and the drain on SIGTERM (marketgraph/draining.py).
    draining = Draining(settings.shutdown_grace)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # In the lifespan, not before: a failed start-up stops uvicorn's supervisor, where
        # a failing factory would have its workers started again and again.
        refuse_unshared_workers(settings)
        services = await open_services(settings)
        install_services(app, services)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # collector's way, so collections under load scan only per-request garbage.
        gc.collect()
        gc.freeze()
        # A new document is checked in a worker thread (schema/documents.py); the event loop
        # takes the GIL back after this long, not CPython's 5 ms: with hostile documents
        # arriving, other requests' p99 fell from about 200 ms to 15 ms. It costs nothing
        # while no other thread runs.
        sys.setswitchinterval(SWITCH_INTERVAL)
        log.info(
            "marketgraph started",
            environment=settings.environment,
            markets=list(settings.markets.codes),
            # Where each store lives, said without its URL (and so without a password).
            stores={
                str(loc.key): f"database {loc.url.database} ({loc.source})"
                for loc in services.databases.topology
            },
            kv=services.kv.backend,
        )
        try:
            # Lifespan state: uvicorn's protocol (http_protocol.py) reads the limits here,
            # and serve's server (draining.py) the drain it starts on SIGTERM.
            yield {"edge_limits": edge_limits, "draining": draining}
        finally:
            await services.close()

    metrics = Metrics()
    middleware = [
        Middleware(RequestIdMiddleware),
        *tracing.middleware(),  # the request's span, with its id
        Middleware(MetricsMiddleware, metrics=metrics),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Market", "X-Request-ID"],
                expose_headers=["X-Request-ID", "Retry-After"],
            )
        )
    # Inside CORS, so that browsers can read its refusals too.
    edge_limits = EdgeLimits.from_settings(settings)
    middleware.append(Middleware(Edge, limits=edge_limits, metrics=metrics, draining=draining))
    persisted = PersistedDocuments(
        settings.persisted_documents,
        settings.manifest_path,
        schema.documents,
        cache_seconds=settings.public_cache_seconds,
    )
    planner = Planner(schema) if settings.query_planner != "off" else None
    if planner is not None:
        # Innermost: planned reads still get a request id, metrics, CORS headers and limits.
        middleware.append(
            Middleware(
                PlannedReads,
                planner=planner,
                metrics=metrics,
                shadow=settings.query_planner == "shadow",
                max_depth=settings.max_variables_depth,
                persisted=persisted,
                explain=not settings.is_production,
            )
        )
    graphql = GraphQLView(schema, settings, persisted)
    routes = [
        Route("/graphql", graphql),  # any method: the view answers others 405, in JSON
        Route("/.well-known/jwks.json", jwks),
        Route("/metrics", metrics_endpoint),
        *health_routes(),
        *webhook_routes(),
        *([] if settings.is_production else asset_routes()),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.metrics = metrics
    app.state.planner = planner
    app.state.draining = draining
    return app


def create_app_from_env() -> Starlette:
    """Entry point for `uvicorn --factory` (workers build their own app)."""
    return create_app()
