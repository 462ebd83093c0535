"""Failing dependencies, injected by a TCP proxy between the server and one market's stores
(or Redis): the requests that need the failing part get SERVICE_UNAVAILABLE within the
configured timeouts, the other market's requests keep succeeding, and once the proxy heals
the failing market answers again without a restart."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from marketgraph.auth import api_keys
from marketgraph.breaker import DEFAULT_COOLDOWN
from marketgraph.db.databases import Databases
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.settings import Settings
from tests.conftest import make_settings, url_text
from tests.factories import create_customer, create_product, gid
from tests.faults import FaultProxy, Mode, postgres_upstream, through
from tests.helpers import error, gql, served

TIMEOUT = 1.0  # DB_CONNECT_TIMEOUT and DB_STATEMENT_TIMEOUT here
CATALOG = "{ products(first: 5) { edges { node { name } } } }"
VIEWER = "{ viewer { id wallet { balance { amountMinor } } } }"


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[FaultProxy]:
    """A proxy to the PostgreSQL server of the session's stores."""
    upstream = postgres_upstream(make_url(settings.database_urls["KG_AUTH_DATABASE_URL"]))
    proxy = await FaultProxy(*upstream).start()
    try:
        yield proxy
    finally:
        await proxy.close()


def kg_through(settings: Settings, proxy: FaultProxy, tmp: Path, **extra: Any) -> Settings:
    """The session's placement with KG's two stores reached through `proxy`."""
    urls = dict(settings.database_urls)
    for name in ("KG_AUTH_DATABASE_URL", "KG_APP_DATABASE_URL"):
        urls[name] = url_text(through(make_url(urls[name]), proxy))
    options: dict[str, Any] = {
        "db_connect_timeout": TIMEOUT,
        "db_statement_timeout": TIMEOUT,
        "db_pool_timeout": TIMEOUT,
        "db_pool_size": 2,
        "db_max_overflow": 2,
    }
    return make_settings(tmp, urls, **{**options, **extra})


async def timed(http: httpx.AsyncClient, query: str, **kwargs: Any) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    body = await gql(http, query, **kwargs)
    return body, time.monotonic() - started


def unavailable(body: dict[str, Any]) -> None:
    """The answer of a request whose store is down: SERVICE_UNAVAILABLE, retryAfter."""
    extensions = error(body)["extensions"]
    assert extensions["code"] == "SERVICE_UNAVAILABLE", body
    assert extensions["retryAfter"] >= 1


@pytest.mark.parametrize("mode", ["refuse", "reset", "blackhole"])
async def test_a_failing_market_is_unavailable_in_time_and_the_other_carries_on(
    settings: Settings, stores: Databases, proxy: FaultProxy, tmp_path: Path, mode: Mode
) -> None:
    await create_product(stores.store("kg", "app"), name="Kg tea")
    await create_product(stores.store("us", "app"), name="Us coffee")
    customer = await create_customer(stores, "kg")
    key = (await api_keys.create(stores.store("kg", "auth"), "ops", created_by=None)).key
    kg, us = {"X-Market": "kg"}, {"X-Market": "us"}
    async with served(kg_through(settings, proxy, tmp_path)) as (http, services):
        token = services.tokens.issue(gid("User", "kg", customer.id), "kg", ["MEMBER"]).token
        assert (await gql(http, CATALOG, headers=kg))["data"]  # connections now pooled
        assert (await gql(http, VIEWER, token=token))["data"]

        await proxy.set_mode(mode)
        # Each pooled connection fails once (blackholed, at the statement timeout), a new
        # one at the connect timeout; once a connect failed the breaker answers at once.
        for query, kwargs in (
            (CATALOG, {"headers": kg}),
            (VIEWER, {"token": token}),
            (CATALOG, {"headers": kg, "api_key": key}),  # the key is looked up in kg.auth
        ):
            body, took = await timed(http, query, **kwargs)
            unavailable(body)
            assert took < 2 * TIMEOUT + 0.5, (query, took)
        for _ in range(4):  # the pools hold two connections each
            body, took = await timed(http, CATALOG, headers=kg)
            unavailable(body)
            assert took < 2 * TIMEOUT + 0.5
            if took < 0.2:
                break
        else:
            raise AssertionError("the breaker never answered at once")
        served_us, took = await timed(http, CATALOG, headers=us)
        assert served_us["data"]["products"]["edges"] == [{"node": {"name": "Us coffee"}}]
        assert took < 0.5

        await proxy.set_mode("forward")
        deadline = time.monotonic() + DEFAULT_COOLDOWN + 2 * TIMEOUT + 1
        while "errors" in (back := await gql(http, CATALOG, headers=kg)):
            assert time.monotonic() < deadline, back
            await asyncio.sleep(0.1)
        assert back["data"]["products"]["edges"] == [{"node": {"name": "Kg tea"}}]
        assert (await gql(http, VIEWER, token=token))["data"]["viewer"]["id"]


async def test_out_of_connections_is_unavailable_after_one_pool_wait(
    settings: Settings, stores: Databases, proxy: FaultProxy, tmp_path: Path
) -> None:
    await create_product(stores.store("kg", "app"), name="Kg tea")
    placed = kg_through(settings, proxy, tmp_path, db_pool_size=1, db_max_overflow=0)
    async with served(placed) as (http, services):
        held = services.databases.store("kg", "app").connect()
        async with held:  # the pool's only connection of kg.app
            body, took = await timed(http, CATALOG, headers={"X-Market": "kg"})
        unavailable(body)
        # One DB_POOL_TIMEOUT: a planned read that waited is not waited for again.
        assert TIMEOUT <= took < 2 * TIMEOUT
        assert (await gql(http, CATALOG, headers={"X-Market": "kg"}))["data"]


async def test_too_many_clients_is_unavailable(
    settings: Settings, stores: Databases, tmp_path: Path
) -> None:
    """A server refusing with "too many connections" (SQLSTATE 53300), as past
    max_connections: here a role allowed no connection at all."""
    url = make_url(settings.database_urls["KG_APP_DATABASE_URL"])
    admin = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await admin.execute("DROP ROLE IF EXISTS mg_no_room")
        await admin.execute("CREATE ROLE mg_no_room LOGIN CONNECTION LIMIT 0")
        urls = dict(settings.database_urls)
        urls["KG_APP_DATABASE_URL"] = url_text(url.set(username="mg_no_room", password=None))
        async with served(make_settings(tmp_path, urls)) as (http, _):
            body = await gql(http, CATALOG, headers={"X-Market": "kg"})
            unavailable(body)
            assert (await gql(http, CATALOG, headers={"X-Market": "us"}))["data"]
    finally:
        await admin.execute("DROP ROLE IF EXISTS mg_no_room")
        await admin.close()


@pytest.mark.parametrize("mode", ["refuse", "reset", "blackhole"])
async def test_a_failing_redis_fails_signed_in_requests_in_time_and_recovers(
    settings: Settings, stores: Databases, tmp_path: Path, mode: Mode
) -> None:
    redis_url = _redis_url()
    redis = make_url(redis_url)
    proxy = await FaultProxy(redis.host or "127.0.0.1", redis.port or 6379).start()
    customer = await create_customer(stores, "kg")
    proxied = url_text(redis.set(host="127.0.0.1", port=proxy.port))
    placed = make_settings(
        tmp_path, dict(settings.database_urls), redis_url=proxied, redis_timeout=0.5
    )
    try:
        async with served(placed) as (http, services):
            token = services.tokens.issue(gid("User", "kg", customer.id), "kg", ["MEMBER"]).token
            assert (await gql(http, VIEWER, token=token))["data"]
            await proxy.set_mode(mode)
            body, took = await timed(http, VIEWER, token=token)
            unavailable(body)
            assert took < 2 * 0.5 + 0.5
            body, took = await timed(http, VIEWER, token=token)
            unavailable(body)
            assert took < 0.5 + 0.5
            # What needs no key-value store is served meanwhile.
            assert (await gql(http, CATALOG, headers={"X-Market": "kg"}))["data"]
            await proxy.set_mode("forward")
            deadline = time.monotonic() + DEFAULT_COOLDOWN + 2
            while "errors" in (back := await gql(http, VIEWER, token=token)):
                assert time.monotonic() < deadline, back
                await asyncio.sleep(0.1)
    finally:
        await proxy.close()


def _redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set")
    return url


async def test_a_store_in_a_read_only_window_refuses_writes_as_unavailable(
    settings: Settings, stores: Databases, tmp_path: Path
) -> None:
    """`db move`'s runbook may make a database read-only while it copies: writes are then
    SERVICE_UNAVAILABLE (SQLSTATE 25006), reads go on."""
    product = await create_product(stores.store("kg", "app"), name="Kg tea")
    customer = await create_customer(stores, "kg")
    url = make_url(settings.database_urls["KG_APP_DATABASE_URL"])
    admin = await asyncpg.connect(asyncpg_dsn(url))
    add = "mutation ($p: ID!) { addToCart(productId: $p) { itemCount } }"
    try:
        await admin.execute(
            f'ALTER DATABASE "{url.database}" SET default_transaction_read_only = on'
        )
        async with served(make_settings(tmp_path, dict(settings.database_urls))) as (http, app):
            token = app.tokens.issue(gid("User", "kg", customer.id), "kg", ["MEMBER"]).token
            write = await gql(http, add, {"p": gid("Product", "kg", product.id)}, token=token)
            read = await gql(http, CATALOG, headers={"X-Market": "kg"})
        unavailable(write)
        assert read["data"]["products"]["edges"] == [{"node": {"name": "Kg tea"}}]
    finally:
        await admin.execute(f'ALTER DATABASE "{url.database}" RESET default_transaction_read_only')
        await admin.close()
