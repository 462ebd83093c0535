"""/metrics: what Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.applications import Starlette


async def test_metrics_count_requests_errors_pools_and_statements(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/graphql", json={"query": "{ products(first: 5) { edges { cursor } } }"})
    await client.post("/graphql", json={"query": "{ products(first: 500) { edges { cursor } } }"})
    body = (await client.get("/metrics")).text
    assert (
        'marketgraph_http_request_duration_seconds_count{method="POST",route="/graphql",'
        'status="200"} 2.0' in body
    )
    assert 'marketgraph_graphql_errors_total{code="BAD_USER_INPUT"} 1.0' in body
    assert 'marketgraph_pool_size{store="kg.app"}' in body
    # The first request read the catalog with one statement; the refused one ran none.
    assert 'marketgraph_sql_statements_per_request_bucket{le="0.0",route="/graphql"} 1.0' in body
    assert 'marketgraph_sql_statements_per_request_sum{route="/graphql"} 1.0' in body


async def test_metrics_labels_take_known_values_only(client: httpx.AsyncClient) -> None:
    """Made-up methods and paths are counted, but cannot grow the registry."""
    for n in range(3):
        await client.request(f"BREW{n}", f"/coffee/{n}")
    body = (await client.get("/metrics")).text
    assert 'method="other",route="other",status="404"} 3.0' in body
    assert "BREW" not in body and "coffee" not in body


async def test_an_app_mounted_under_a_root_path_routes_and_counts_as_usual(
    app_factory: Callable[..., Starlette],
) -> None:
    """Behind a proxy that mounts the app at /api (uvicorn --root-path /api)."""
    app = app_factory()
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/api/graphql", json={"query": "{ markets { code } }"})
        assert response.json() == {"data": {"markets": [{"code": "kg"}, {"code": "us"}]}}
        body = (await client.get("/api/metrics")).text
    assert 'method="POST",route="/graphql",status="200"} 1.0' in body
    if app.state.planner is not None:
        assert 'marketgraph_planner_requests_total{outcome="planned"} 1.0' in body
