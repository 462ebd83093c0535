"""The Starlette app factory: the lifespan opens stores and the key-value store; routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import strawberry
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from marketgraph.context import RequestContext
from marketgraph.db.databases import Databases, open_databases
from marketgraph.db.health import health_routes
from marketgraph.errors import format_error
from marketgraph.kv import KeyValueStore, open_kv
from marketgraph.logs import configure_logging
from marketgraph.middleware import RequestIdMiddleware
from marketgraph.schema import build_schema
from marketgraph.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Services:
    """Everything the lifespan opens and closes; requests borrow from it."""

    settings: Settings
    databases: Databases
    kv: KeyValueStore

    async def close(self) -> None:
        await self.kv.close()
        await self.databases.dispose()


async def open_services(settings: Settings) -> Services:
    databases = await open_databases(settings)
    return Services(settings=settings, databases=databases, kv=open_kv(settings.redis_url))


class GraphQLView(GraphQL[RequestContext, None]):
    """Strawberry over Starlette: builds the typed context, formats errors, encodes with orjson."""

    def __init__(self, schema: strawberry.Schema, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide=None if settings.is_production else "graphiql",
            allow_queries_via_get=True,
        )
        self.settings = settings

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        assert isinstance(request, Request)
        services: Services = request.app.state.services
        market = services.settings.markets.require(
            request.headers.get("x-market") or services.settings.default_market
        )
        return RequestContext(
            request_id=request.scope["state"]["request_id"],
            request=request,
            settings=services.settings,
            market=market,
            auth=services.databases.store(market.code, "auth"),
            app=services.databases.store(market.code, "app"),
            kv=services.kv,
            databases=services.databases,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        request_id = request.scope.get("state", {}).get("request_id")
        data: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            data["errors"] = [format_error(e, request_id).formatted for e in result.errors]
        if result.extensions:
            data["extensions"] = result.extensions
        return data

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app; nothing is opened until the lifespan starts."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    schema = build_schema(introspection=not settings.is_production)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        services = await open_services(settings)
        app.state.services = services
        log.info(
            "marketgraph started",
            environment=settings.environment,
            markets=list(settings.markets.codes),
            stores=[str(key) for key in services.databases.topology],
            kv=services.kv.backend,
        )
        try:
            yield {}
        finally:
            await services.close()

    middleware = [Middleware(RequestIdMiddleware)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Market", "X-Request-ID"],
                expose_headers=["X-Request-ID"],
            )
        )
    graphql = GraphQLView(schema, settings)
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        *health_routes(),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def create_app_from_env() -> Starlette:
    """Entry point for `uvicorn --factory` (workers build their own app)."""
    return create_app()
