"""Read replicas on real streaming standbys (tests/replication.py): a query is read from a
standby, a caller reads their own writes at once, and a standby that lags or stops is
skipped until it is back — through whichever read path the suite runs (planner on or off)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from marketgraph.app import create_app, install_services
from marketgraph.db import migrate
from marketgraph.db.replicas import PRIMARY, ReplicaSet
from marketgraph.db.topology import Topology
from marketgraph.services import Services, open_services
from marketgraph.settings import ROLES, Settings
from tests.conftest import make_settings, url_text
from tests.factories import create_product, gid
from tests.helpers import data, gql, http_client, request_code, sms_code, verify_code
from tests.replication import ReplicatedServer

pytestmark = pytest.mark.slow

PRODUCTS = "{ products(first: 50) { edges { node { name } } } }"
ME = "{ viewer { preferences cart { itemCount } orders(first: 50) { edges { node { id } } } } }"
PATCH = "mutation ($p: JSON!) { updatePreferences(patch: $p) { id } }"
ADD = "mutation ($id: ID!) { addToCart(productId: $id, quantity: 1) { itemCount } }"
CHECKOUT = (
    "mutation ($key: String!) "
    "{ checkout(idempotencyKey: $key, paymentMethod: CASH_ON_DELIVERY) { id } }"
)


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[ReplicatedServer]:
    server = ReplicatedServer(replicas=1)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def primary_settings(
    cluster: ReplicatedServer, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """A database per store on the primary, migrated; the standby has them all."""
    tmp = tmp_path_factory.mktemp("replicas")
    urls = {}
    for market in Settings(data_dir=tmp).markets.codes:
        for role in ROLES:
            db = await cluster.create_database(f"mg_{market}_{role}")
            urls[f"{market.upper()}_{role.upper()}_DATABASE_URL"] = url_text(db)
    settings = make_settings(tmp, urls)
    for location in Topology.resolve(settings.markets.codes, settings.database_urls):
        await migrate.upgrade(location)
    await cluster.wait_caught_up(0)
    return settings


def with_replica(settings: Settings, cluster: ReplicatedServer, **overrides: Any) -> Settings:
    """`settings` with the standby as every store's replica: REPLICA_URL names no database,
    so each store reads its own primary database's name there."""
    replica = url_text(cluster.replica_urls[0]).rsplit("/", 1)[0]  # no database
    return Settings.model_validate(
        {
            **settings.model_dump(),
            "replica_urls": {"REPLICA_URL": replica},
            "sms_backend": "memory",
            "redis_url": os.environ.get("TEST_REDIS_URL"),
            **overrides,
        }
    )


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Starlette]]:
    """The app with its services opened as the lifespan opens them (the replica watcher
    included), and a client of it."""
    services = await open_services(settings)
    app = create_app(settings)
    install_services(app, services)
    try:
        async with http_client(app) as client:
            yield client, app
    finally:
        await services.close()


def services_of(app: Starlette) -> Services:
    services: Services = app.state.services
    return services


def standbys(app: Starlette, market: str = "kg", role: str = "app") -> ReplicaSet:
    found = services_of(app).databases.store(market, role).replicas  # type: ignore[arg-type]
    assert found is not None
    return found


def reads(app: Starlette, store: str = "kg.app") -> dict[str, int]:
    """Reads of `store` by server: "primary" and the standby's name."""
    return {server: n for (name, server), n in standbys(app).reads.items() if name == store and n}


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


async def product_names(client: httpx.AsyncClient) -> set[str]:
    body = data(await gql(client, PRODUCTS, headers={"X-Market": "kg"}))
    return {edge["node"]["name"] for edge in body["products"]["edges"]}


async def test_a_query_is_read_from_the_standby_and_counted_per_store(
    cluster: ReplicatedServer, primary_settings: Settings
) -> None:
    async with serving(with_replica(primary_settings, cluster)) as (client, app):
        standby = standbys(app).replicas[0].name
        store = services_of(app).databases.store("kg", "app")
        await create_product(store, name="Tea on both")
        await cluster.wait_caught_up(0)
        assert "Tea on both" in await product_names(client)
        assert reads(app) == {standby: 1}

        # With replay paused, what the primary has since is not there: it really is the
        # standby that answers an anonymous query (REPLICA_MAX_LAG has not passed yet).
        await cluster.pause_replay(0)
        try:
            await create_product(store, name="Only on the primary")
            names = await product_names(client)
            assert "Tea on both" in names and "Only on the primary" not in names
        finally:
            await cluster.resume_replay(0)
        await cluster.wait_caught_up(0)
        assert reads(app) == {standby: 2}

        health = (await client.get("/health/detailed")).json()
        report = health["stores"]["kg.app"]["replicas"]
        assert report["standbys"][0]["name"] == standby
        assert report["standbys"][0]["status"] == "ok"
        assert report["standbys"][0]["reads_share"] == 1.0
        assert report["primary_reads_share"] == 0.0
        assert health["overall_status"] == "healthy"
        metrics = (await client.get("/metrics")).text
        assert re.search(
            rf'marketgraph_db_reads_total\{{server="{re.escape(standby)}",store="kg.app"\}} 2\.0',
            metrics,
        ), metrics
        assert re.search(
            rf'marketgraph_replica_up\{{.*replica="{re.escape(standby)}"\}} 1\.0', metrics
        )


async def test_a_caller_reads_their_own_writes_at_once_1000_times(
    cluster: ReplicatedServer, primary_settings: Settings
) -> None:
    """Replay stays paused and REPLICA_MAX_LAG is an hour, so the standby is stale yet still
    read: anonymous reads miss a product added since, while the writer — signed in by phone
    in this very test, a new account — sees every cart line, preference and order of their
    own at once; once the standby has replayed their writes, it serves them again."""
    settings = with_replica(primary_settings, cluster, replica_max_lag=3600)
    async with serving(settings) as (client, app):
        store = services_of(app).databases.store("kg", "app")
        standby = standbys(app).replicas[0]
        tea = await create_product(store, name="Replica tea", stock=100_000)
        await cluster.wait_caught_up(0)
        await cluster.pause_replay(0)
        try:
            await create_product(store, name="Added while paused")
            # A number and an address of their own: Redis keeps earlier runs' login limits.
            phone = f"+996700{random.randrange(10**6):06d}"
            ip = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(256)}"
            data(await request_code(client, phone, headers={"X-Forwarded-For": ip}))
            session = data(await verify_code(client, phone, sms_code(app, phone)))
            token = session["verifyLoginCode"]["accessToken"]
            product = gid("Product", "kg", tea.id)
            lines = orders = 0
            preference = None
            for i in range(1000):
                if i % 3 == 0:
                    data(await gql(client, ADD, {"id": product}, token=token))
                    lines += 1
                elif i % 3 == 1:
                    data(await gql(client, PATCH, {"p": {"n": i}}, token=token))
                    preference = i
                elif i % 30 == 2:
                    data(await gql(client, CHECKOUT, {"key": f"k-{i}"}, token=token))
                    lines, orders = 0, orders + 1
                me = data(await gql(client, ME, token=token))["viewer"]
                assert me is not None, f"iteration {i}: the new account is not there"
                assert me["preferences"].get("n") == preference, i
                assert me["cart"]["itemCount"] == lines, i
                assert len(me["orders"]["edges"]) == orders, i
                if i % 100 == 0:  # meanwhile, anonymous reads go to the stale standby
                    assert "Added while paused" not in await product_names(client)
            assert reads(app).get(PRIMARY, 0) >= 1000  # the writer's reads
            assert reads(app)[standby.name] == 10
        finally:
            await cluster.resume_replay(0)
        # Once it has replayed past their last write, the standby serves the writer again.
        await cluster.wait_caught_up(0)
        await standbys(app).check()
        data(await gql(client, ME, token=token))
        assert reads(app)[standby.name] == 11


async def test_a_lagging_standby_is_skipped_past_the_max_lag(
    cluster: ReplicatedServer, primary_settings: Settings
) -> None:
    settings = with_replica(primary_settings, cluster, replica_max_lag=2.0)
    async with serving(settings) as (client, app):
        store = services_of(app).databases.store("kg", "app")
        standby = standbys(app).replicas[0]
        await product_names(client)
        assert reads(app) == {standby.name: 1}
        await cluster.pause_replay(0)
        try:
            await create_product(store, name="Written while paused")
            await standbys(app).check()  # its lag starts now
            # Within REPLICA_MAX_LAG the standby is still read (and is behind)...
            assert "Written while paused" not in await product_names(client)
            # ...past it, it is skipped: the primary answers, with the new product.
            await eventually(lambda: standby.state == "lagging", within=10)
            assert "Written while paused" in await product_names(client)
            assert reads(app).get(PRIMARY) == 1
            health = (await client.get("/health/detailed")).json()
            assert health["overall_status"] == "degraded"
            assert health["stores"]["kg.app"]["replicas"]["standbys"][0]["status"] == "lagging"
        finally:
            await cluster.resume_replay(0)
        await eventually(lambda: standby.state == "ok", within=10)
        assert "Written while paused" in await product_names(client)
        assert reads(app) == {standby.name: 3, PRIMARY: 1}


async def test_a_stopped_standby_is_skipped_and_read_again_once_back(
    cluster: ReplicatedServer, primary_settings: Settings
) -> None:
    async with serving(with_replica(primary_settings, cluster)) as (client, app):
        standby = standbys(app).replicas[0]
        await product_names(client)
        assert reads(app) == {standby.name: 1}
        await cluster.stop_replica(0)
        try:
            await eventually(lambda: standby.state == "down")
            await product_names(client)
            assert reads(app) == {standby.name: 1, PRIMARY: 1}
            health = (await client.get("/health/detailed")).json()
            assert health["overall_status"] == "degraded"
            entry = health["stores"]["kg.app"]["replicas"]["standbys"][0]
            assert entry["status"] == "down" and entry["error"]
            for _ in range(3):
                await product_names(client)
            assert reads(app) == {standby.name: 1, PRIMARY: 4}
        finally:
            await cluster.start_replica(0)
        # No restart: the watcher sees it back, and reads return to it.
        await eventually(lambda: standby.state == "ok", within=15)
        await product_names(client)
        assert reads(app) == {standby.name: 2, PRIMARY: 4}
        health = (await client.get("/health/detailed")).json()
        assert health["overall_status"] == "healthy"


def test_replica_variables_follow_the_primaries_rule(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        {"DATABASE_URL": "postgresql://db.internal/shop", "US_DATABASE_URL": "postgresql://us/db"},
        replica_urls={
            "REPLICA_URL": "postgresql://r1.internal, postgresql://r2.internal/other",
            "US_APP_REPLICA_URL": "postgresql://us-r1:6432",
        },
    )
    topology = Topology.resolve(
        settings.markets.codes, settings.database_urls, replica_urls=settings.replica_urls
    )
    kg = {str(r) for loc in topology.select("kg") for r in loc.replicas}
    assert kg == {
        "postgresql+asyncpg://r1.internal/shop",
        "postgresql+asyncpg://r2.internal/other",
    }
    us_app = topology.select("us", "app")[0]
    assert [str(r) for r in us_app.replicas] == ["postgresql+asyncpg://us-r1:6432/db"]
    us_auth = topology.select("us", "auth")[0]
    assert [str(r) for r in us_auth.replicas] == [
        "postgresql+asyncpg://r1.internal/db",
        "postgresql+asyncpg://r2.internal/other",
    ]


def test_replicas_need_placed_primaries(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="REPLICA_URL set without a database variable"):
        make_settings(tmp_path, {}, replica_urls={"REPLICA_URL": "postgresql://r1/x"})
