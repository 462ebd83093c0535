"""The markets part of the contract, over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.applications import Starlette

from tests.helpers import http_client

MARKETS = "{ markets { code name currency currencySymbol language phoneRegions } }"


async def test_markets_lists_kg_and_us(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": MARKETS})
    assert response.status_code == 200
    markets = {m["code"]: m for m in response.json()["data"]["markets"]}
    assert markets["kg"] == {
        "code": "kg",
        "name": "Кыргызстан",
        "currency": "KGS",
        "currencySymbol": "сом",
        "language": "ru",
        "phoneRegions": ["KG"],
    }
    assert markets["us"]["currency"] == "USD"
    assert markets["us"]["currencySymbol"] == "$"
    assert markets["us"]["phoneRegions"] == ["US"]


async def test_market_by_code_is_case_insensitive_and_null_when_unknown(
    client: httpx.AsyncClient,
) -> None:
    query = '{ us: market(code: "US") { code language } zz: market(code: "zz") { code } }'
    body = (await client.post("/graphql", json={"query": query})).json()
    assert body == {"data": {"us": {"code": "us", "language": "en"}, "zz": None}}


async def test_viewer_is_null_for_anonymous_requests(client: httpx.AsyncClient) -> None:
    body = (await client.post("/graphql", json={"query": "{ viewer { id } }"})).json()
    assert body == {"data": {"viewer": None}}


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.post(
        "/graphql", json={"query": "{ markets { code } }"}, headers={"X-Request-ID": "abc-123"}
    )
    assert given.headers["X-Request-ID"] == "abc-123"
    made = await client.post("/graphql", json={"query": "{ markets { code } }"})
    assert len(made.headers["X-Request-ID"]) == 32


async def test_queries_run_over_get_but_mutations_do_not(client: httpx.AsyncClient) -> None:
    ok = await client.get("/graphql", params={"query": "{ markets { code } }"})
    assert ok.status_code == 200
    assert [m["code"] for m in ok.json()["data"]["markets"]] == ["kg", "us"]


async def test_browsers_of_allowed_origins_get_cors_headers_on_every_answer(
    app_factory: Callable[..., Starlette],
) -> None:
    """The planner answers reads before Starlette's routing, still behind CORS."""
    app = app_factory(cors_origins=["https://shop.example"])
    origin = {"Origin": "https://shop.example"}
    async with http_client(app) as client:
        read = await client.post("/graphql", json={"query": "{ markets { code } }"}, headers=origin)
        refused = await client.post(
            "/graphql", json={"query": "{ viewer { id } }"}, headers={**origin, "X-Market": "zz"}
        )
        preflight = await client.options(
            "/graphql",
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        stranger = await client.post(
            "/graphql",
            json={"query": "{ markets { code } }"},
            headers={"Origin": "https://evil.example"},
        )
    for response in (read, refused):
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        assert "X-Request-ID" in response.headers["access-control-expose-headers"]
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MARKET"
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-origin" not in stranger.headers
    if app.state.planner is not None:  # TEST_QUERY_PLANNER=on: the reads were planned
        planned = app.state.metrics.registry.get_sample_value(
            "marketgraph_planner_requests_total", {"outcome": "planned"}
        )
        assert planned == 2  # CORS refuses no request, it withholds its headers
