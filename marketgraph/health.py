"""The health endpoints over HTTP; the probes themselves live in `db/health.py`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from marketgraph.auth.authenticate import authenticate
from marketgraph.db.health import inspect, liveness, readiness
from marketgraph.draining import Draining
from marketgraph.errors import DomainError
from marketgraph.services import Services

_NO_CACHE = {"Cache-Control": "no-store"}


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def can_view_details(request: Request) -> bool:
    """Anyone in development; elsewhere an admin token or API key."""
    services = _services(request)
    if not services.settings.is_production:
        return True
    try:
        principal = await authenticate(
            request.headers.get("authorization"),
            tokens=services.tokens,
            kv=services.kv,
            databases=services.databases,
            markets=services.settings.markets,
        )
    except DomainError:
        return False
    return principal is not None and principal.is_admin


async def health(request: Request) -> JSONResponse:
    status, body = await liveness(_services(request))
    return JSONResponse(body, 503 if status == "unhealthy" else 200, headers=_NO_CACHE)


async def health_ready(request: Request) -> JSONResponse:
    draining: Draining = request.app.state.draining
    if draining.active:  # shutting down (marketgraph/draining.py): send elsewhere
        reason = f"shutting down: {draining.in_flight} requests still running"
        return JSONResponse(
            {"status": "draining", "inFlight": draining.in_flight, "reasons": [reason]},
            503,
            headers=_NO_CACHE,
        )
    ready, body = await readiness(_services(request))
    return JSONResponse(body, 200 if ready else 503, headers=_NO_CACHE)


async def health_detailed(request: Request) -> JSONResponse:
    if not await can_view_details(request):
        if "authorization" not in request.headers:
            return JSONResponse(
                {"error": "UNAUTHENTICATED", "message": "an admin token or API key is required"},
                401,
                headers={**_NO_CACHE, "WWW-Authenticate": "Bearer"},
            )
        return JSONResponse(
            {"error": "FORBIDDEN", "message": "an admin token or API key is required"},
            403,
            headers=_NO_CACHE,
        )
    services = _services(request)
    report = await inspect(services.databases, services.kv, services.settings.health_timeout)
    status = 503 if report.overall_status == "unhealthy" else 200
    return JSONResponse(report.as_json(), status, headers=_NO_CACHE)


def health_routes() -> list[Route]:
    return [
        Route("/health", health, methods=["GET"]),
        Route("/health/ready", health_ready, methods=["GET"]),
        Route("/health/detailed", health_detailed, methods=["GET"]),
    ]
