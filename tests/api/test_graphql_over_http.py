"""GraphQL over HTTP (the GraphQL Foundation's spec), on both paths: the answer's media type
is negotiated from `Accept`; a request that fails before execution has no `data` and, in
`application/graphql-response+json`, a 4xx status; every refusal is a JSON body."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.helpers import http_client

GRJ = "application/graphql-response+json"
JSON = "application/json"
PRODUCTS = "{ products(first: 1) { edges { node { name } } } }"
KG = {"X-Market": "kg"}


@pytest.fixture(params=["on", "off"], ids=["planner", "strawberry"])
async def http(
    request: pytest.FixtureRequest, app_factory: Callable[..., Starlette]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with the planner on (planned reads answer) or off (Strawberry)."""
    async with http_client(app_factory(query_planner=request.param)) as client:
        yield client


async def post(
    http: httpx.AsyncClient, payload: Any, accept: str | None, **headers: str
) -> httpx.Response:
    sent = {**KG, **headers}
    if accept is not None:
        sent["Accept"] = accept
    return await http.post("/graphql", json=payload, headers=sent)


def body_of(response: httpx.Response, media_type: str) -> dict[str, Any]:
    assert response.headers["content-type"] == media_type, response.headers
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, JSON),
        ("*/*", JSON),
        (JSON, JSON),
        (GRJ, GRJ),
        (f"{GRJ}, {JSON};q=0.9", GRJ),  # what the spec asks clients to send
        (f"{JSON}, {GRJ};q=0.5", JSON),
        (f"{JSON}, {GRJ}", GRJ),  # equal: the spec's own type
        ("text/html, */*;q=0.8", JSON),  # a browser following a link with a query
    ],
)
async def test_the_answer_is_in_the_media_type_accept_prefers(
    http: httpx.AsyncClient, accept: str | None, media_type: str
) -> None:
    response = await post(http, {"query": PRODUCTS}, accept)
    assert response.status_code == 200
    body = body_of(response, media_type)
    assert body["data"]["products"]["edges"] == [], body  # (no products made)


@pytest.mark.parametrize(
    ("query", "variables", "says"),
    [
        ("{ products(first: 1) { edges { node { name } }", None, "Syntax Error"),
        ("{ products(first: 1) { nosuchfield } }", None, "nosuchfield"),
        ("query ($n: Int) { products(first: $n) { pageInfo { hasNextPage } } }", {"n": "x"}, "$n"),
        ("query A { markets { code } } query B { markets { code } }", None, "operationName"),
    ],
    ids=["syntax", "validation", "variables", "which-operation"],
)
async def test_a_request_error_has_no_data_and_a_400_in_the_spec_media_type(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None, says: str
) -> None:
    payload = {"query": query, "variables": variables}
    spec = await post(http, payload, GRJ)
    assert spec.status_code == 400, spec.text
    legacy = await post(http, payload, JSON)
    assert legacy.status_code == 200, legacy.text  # the spec's rule for application/json
    for response, media_type in ((spec, GRJ), (legacy, JSON)):
        body = body_of(response, media_type)
        assert "data" not in body, body
        [error] = body["errors"]
        assert says in error["message"], error
        assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_caller_refused_before_execution_is_a_request_error(
    http: httpx.AsyncClient,
) -> None:
    spec = await post(http, {"query": PRODUCTS}, GRJ, Authorization="Bearer not-a-token")
    assert spec.status_code == 401, spec.text
    assert "data" not in body_of(spec, GRJ)
    legacy = await post(http, {"query": PRODUCTS}, JSON, Authorization="Bearer not-a-token")
    assert legacy.status_code == 200
    body = body_of(legacy, JSON)
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_an_executed_operation_is_200_with_data_even_when_a_field_fails(
    http: httpx.AsyncClient,
) -> None:
    # Anonymous callers may not list users: the field fails during execution.
    query = '{ users(market: "kg") { pageInfo { hasNextPage } } }'
    response = await post(http, {"query": query}, GRJ)
    assert response.status_code == 200, response.text
    body = body_of(response, GRJ)
    assert "data" in body
    assert body["errors"][0]["path"] == ["users"]


async def test_an_accept_without_json_is_refused_406(http: httpx.AsyncClient) -> None:
    response = await post(http, {"query": PRODUCTS}, "application/xml")
    assert response.status_code == 406
    body = body_of(response, JSON)
    assert "application/graphql-response+json" in body["errors"][0]["message"]


async def test_a_mutation_sent_with_get_is_405_naming_post(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/graphql",
        params={"query": 'mutation { logout(refreshToken: "x") }'},
        headers={"accept": GRJ},
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    body = body_of(response, GRJ)
    assert "use POST" in body["errors"][0]["message"]


async def test_other_methods_and_bodies_are_refused_in_json(http: httpx.AsyncClient) -> None:
    put = await http.put("/graphql", json={"query": PRODUCTS})
    assert put.status_code == 405
    assert put.headers["allow"] == "GET, POST"
    assert body_of(put, JSON)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    text = await http.post(
        "/graphql", content=PRODUCTS.encode(), headers={"content-type": "text/plain"}
    )
    assert text.status_code == 415
    assert "Content-Type: application/json" in body_of(text, JSON)["errors"][0]["message"]
    no_query = await http.get("/graphql", headers={"accept": GRJ})
    assert no_query.status_code == 400
    assert "No GraphQL query" in body_of(no_query, GRJ)["errors"][0]["message"]


async def test_a_query_sent_with_get_is_answered_and_not_stored_by_caches(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/graphql", params={"query": PRODUCTS}, headers={**KG, "accept": GRJ})
    assert response.status_code == 200
    assert body_of(response, GRJ)["data"]["products"]["edges"] == []
    # Only a read sent by persisted id may be shared (tests/api/test_persisted_documents.py).
    assert response.headers["cache-control"] == "private, no-store"
