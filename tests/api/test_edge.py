"""The edge: oversized, slow or excess requests are refused before any work, always as JSON,
and an error that escapes the app is a JSON 500, never a plain-text one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    WEBHOOK_SECRET,
    SqlCounter,
    sql_counter_fixture,
)
from tests.helpers import http_client

MARKETS = {"query": "{ markets { code } }"}


def refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error of a JSON refusal with `status` and `code`, and no `data`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert "data" not in body
    [error] = body["errors"]
    assert error["extensions"]["code"] == code
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    return error


async def test_a_body_over_the_limit_is_413_from_its_length_or_while_read(
    app_factory: Callable[..., Starlette], sql_counter: SqlCounter
) -> None:
    app = app_factory(max_body_bytes=4096)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"query": "{ markets { code } } #'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}'

    async with http_client(app) as client:
        with sql_counter.counting():
            declared = await client.post("/graphql", content=b" " * 5000)
            streamed = await client.post("/graphql", content=chunks())
        within = await client.post("/graphql", json={"query": "{ markets { code } }" + " " * 3000})
    for response in (declared, streamed):
        error = refusal(response, 413, "BAD_USER_INPUT")
        assert "4096 bytes" in error["message"]
    assert sum(sql_counter.counts.values()) == 0
    assert within.json() == {"data": {"markets": [{"code": "kg"}, {"code": "us"}]}}
    metrics = (await http_client_get(app, "/metrics")).text
    assert 'marketgraph_requests_refused_total{reason="body"} 2.0' in metrics


async def http_client_get(app: Starlette, path: str) -> httpx.Response:
    async with http_client(app) as client:
        return await client.get(path)


async def test_the_payment_webhook_has_its_own_smaller_limit(
    app_factory: Callable[..., Starlette],
) -> None:
    app = app_factory(payment_webhook_secret=WEBHOOK_SECRET, webhook_max_body_bytes=2048)
    async with http_client(app) as client:
        webhook = await client.post("/webhooks/payments", content=b"{}" + b" " * 3000)
        graphql = await client.post("/graphql", json={"query": "{ markets { code } }" + " " * 3000})
    refusal(webhook, 413, "BAD_USER_INPUT")
    assert graphql.status_code == 200


async def test_headers_over_the_limit_are_431(app_factory: Callable[..., Starlette]) -> None:
    async with http_client(app_factory(max_header_bytes=2048)) as client:
        big = await client.post("/graphql", json=MARKETS, headers={"X-Filler": "x" * 3000})
        long_url = await client.get(
            "/graphql", params={"query": "{ markets { code } }" + " " * 3000}
        )
        fine = await client.post("/graphql", json=MARKETS, headers={"X-Filler": "x" * 1000})
    refusal(big, 431, "BAD_USER_INPUT")
    refusal(long_url, 431, "BAD_USER_INPUT")
    assert fine.status_code == 200


async def test_a_body_that_does_not_arrive_in_time_is_408(
    app_factory: Callable[..., Starlette],
) -> None:
    arrived = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b'{"query": '
        arrived.set()
        await asyncio.sleep(5)
        yield b'"{ markets { code } }"}'

    async with http_client(app_factory(request_read_timeout=0.3)) as client:
        response = await asyncio.wait_for(client.post("/graphql", content=stalls()), 3)
    assert arrived.is_set()
    refusal(response, 408, "BAD_USER_INPUT")


async def test_past_max_in_flight_a_request_is_503_at_once_and_health_still_answers(
    app_factory: Callable[..., Starlette],
) -> None:
    app = app_factory(max_in_flight=1)
    reading, release = asyncio.Event(), asyncio.Event()

    async def held_body() -> AsyncIterator[bytes]:  # keeps the one place busy
        yield b'{"query": "{ markets { code } }"'
        reading.set()  # the edge asked for more: the request is in flight
        await release.wait()
        yield b"}"

    async with http_client(app) as client:
        json_type = {"content-type": "application/json"}
        holder = asyncio.create_task(
            client.post("/graphql", content=held_body(), headers=json_type)
        )
        await reading.wait()
        shed = await client.post("/graphql", json=MARKETS)
        health = await client.get("/health")
        release.set()
        held = await holder
        after = await client.post("/graphql", json=MARKETS)
    error = refusal(shed, 503, "SERVICE_UNAVAILABLE")
    assert error["extensions"]["retryAfter"] == 1
    assert shed.headers["retry-after"] == "1"
    assert health.status_code == 200
    assert held.status_code == 200
    assert after.status_code == 200


async def test_an_error_escaping_the_app_is_a_json_500_with_the_request_id(
    app_factory: Callable[..., Starlette], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory()

    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug, with internals")

    monkeypatch.setattr(app.state.services.tokens, "jwks", broken)
    async with http_client(app) as client:
        response = await client.get("/.well-known/jwks.json")
        again = await client.post("/graphql", json=MARKETS)
    error = refusal(response, 500, "INTERNAL_SERVER_ERROR")
    assert error["message"] == "Internal server error"
    assert "internals" not in response.text
    assert again.status_code == 200  # the app, and the connection, carry on
