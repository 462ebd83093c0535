"""Databases: one engine per distinct URL, pool settings per role, schemas applied per store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

from marketgraph.db import databases as databases_module
from marketgraph.db.databases import Databases
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.models.app import Product
from marketgraph.db.models.auth import User
from marketgraph.db.topology import Topology
from marketgraph.settings import Settings


@pytest.fixture(autouse=True)
def no_database_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings built here see only the URLs a test gives them."""
    for name in list(os.environ):
        if "DATABASE_URL" in name.upper():
            monkeypatch.delenv(name)
    yield


def open_with(urls: dict[str, str], tmp_path: Path, **overrides: Any) -> Databases:
    settings = Settings(database_urls=urls, data_dir=tmp_path, **overrides)
    return Databases(Topology.resolve(settings.markets.codes, settings.database_urls), settings)


def separate_urls(settings: Settings) -> dict[str, str]:
    return dict(settings.database_urls)


async def test_shared_mode_has_one_engine_for_four_stores(shared_stores: Databases) -> None:
    assert len(shared_stores.stores) == 4
    assert len(shared_stores.engines) == 1
    (engine,) = shared_stores.engines
    assert all(store.engine is engine for store in shared_stores.stores)
    assert [store.schema for store in shared_stores.stores] == [
        "kg_auth",
        "kg_app",
        "us_auth",
        "us_app",
    ]


def database_of(settings: Settings, variable: str) -> str | None:
    return make_url(settings.database_urls[variable]).database


async def test_separate_mode_has_one_engine_per_store(stores: Databases) -> None:
    assert len(stores.stores) == 4
    assert len(stores.engines) == 4
    assert len({id(store.engine) for store in stores.stores}) == 4
    for store in stores.stores:
        async with store.connect() as conn:
            database = await conn.scalar(text("SELECT current_database()"))
        variable = f"{store.key.market.upper()}_{store.key.role.upper()}_DATABASE_URL"
        assert database == database_of(stores.settings, variable)


async def test_market_level_urls_give_one_engine_per_market(
    settings: Settings, tmp_path: Path
) -> None:
    urls = settings.database_urls
    # The same database, written once with the plain and once with the asyncpg scheme.
    kg_url = make_url(urls["KG_AUTH_DATABASE_URL"])
    databases = open_with(
        {
            "KG_DATABASE_URL": kg_url.set(drivername="postgresql").render_as_string(False),
            "US_DATABASE_URL": urls["US_APP_DATABASE_URL"],
            "AUTH_DATABASE_URL": urls["US_AUTH_DATABASE_URL"],  # outranked for every store
        },
        tmp_path,
    )
    try:
        assert len(databases.engines) == 2
        kg_auth, kg_app = databases.store("kg", "auth"), databases.store("kg", "app")
        us_auth, us_app = databases.store("us", "auth"), databases.store("us", "app")
        assert kg_auth.engine is kg_app.engine
        assert us_auth.engine is us_app.engine
        assert kg_auth.engine is not us_auth.engine
        for store, variable in [(kg_app, "KG_AUTH_DATABASE_URL"), (us_auth, "US_APP_DATABASE_URL")]:
            expected = database_of(settings, variable)
            async with store.connect() as conn:
                assert await conn.scalar(text("SELECT current_database()")) == expected
    finally:
        await databases.dispose()


async def test_role_pool_overrides_reach_the_engines(settings: Settings, tmp_path: Path) -> None:
    databases = open_with(
        separate_urls(settings),
        tmp_path,
        db_pool_size=7,
        db_max_overflow=3,
        db_pool_timeout=9.0,
        auth_db_pool_size=2,
        auth_db_pool_timeout=1.5,
        app_db_max_overflow=0,
        app_db_pool_recycle=120,
        app_db_echo=True,
    )
    try:
        for market in ("kg", "us"):
            auth = databases.store(market, "auth").engine
            app = databases.store(market, "app").engine
            assert (auth.pool.size(), auth.pool.timeout()) == (2, 1.5)
            assert (app.pool.size(), app.pool.timeout()) == (7, 9.0)
            assert (auth.pool._max_overflow, app.pool._max_overflow) == (3, 0)
            assert (auth.pool._recycle, app.pool._recycle) == (3600, 120)
            assert (auth.echo, app.echo) == (False, True)
    finally:
        await databases.dispose()


async def test_a_shared_engine_takes_the_base_pool(
    shared_settings: Settings, tmp_path: Path
) -> None:
    databases = open_with(
        dict(shared_settings.database_urls), tmp_path, db_pool_size=6, auth_db_pool_size=2
    )
    try:
        (engine,) = databases.engines
        assert engine.pool.size() == 6
    finally:
        await databases.dispose()


async def named_statements_after_queries(databases: Databases) -> int:
    """Run parameterised queries through a store, then count the session's named statements."""
    store = databases.store("kg", "app")
    async with store.connect() as conn:
        for sku in ("a", "b", "a"):
            rows = await conn.execute(select(Product.id).where(Product.sku == sku))
            assert rows.all() == []
        return int(await conn.scalar(text("SELECT count(*) FROM pg_prepared_statements")) or 0)


@pytest.mark.parametrize(("cache_size", "named"), [(None, True), (0, False)])
async def test_statement_cache_size(
    settings: Settings, tmp_path: Path, cache_size: int | None, named: bool
) -> None:
    """With DB_STATEMENT_CACHE_SIZE=0 no named prepared statement outlives a query (PgBouncer)."""
    databases = open_with(separate_urls(settings), tmp_path, db_statement_cache_size=cache_size)
    try:
        assert (await named_statements_after_queries(databases) > 0) == named
    finally:
        await databases.dispose()


async def test_rows_land_in_the_stores_schema(shared_stores: Databases) -> None:
    """One database, four schemas: only schema_translate_map keeps kg's rows out of us_app."""
    kg_app, us_app = shared_stores.store("kg", "app"), shared_stores.store("us", "app")
    async with kg_app.begin() as session:
        session.add(Product(sku="kg-orm", name="Нан", price_minor=4500, stock=3))
    async with kg_app.connect() as conn:
        await conn.execute(insert(Product).values(sku="kg-core", name="Чай", price_minor=9900))
        await conn.commit()
    async with us_app.begin() as session:
        session.add(Product(sku="us-orm", name="Bread", price_minor=399))
    async with shared_stores.store("us", "auth").begin() as session:
        session.add(User(phone="+12125550100"))

    url = make_url(shared_stores.topology[kg_app.key].url)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        # Schema names are identifiers of our own making, not input.
        skus = {
            schema: sorted(r["sku"] for r in await conn.fetch(f"SELECT sku FROM {schema}.products"))
            for schema in ("kg_app", "us_app")
        }
        phones = {
            schema: [r["phone"] for r in await conn.fetch(f"SELECT phone FROM {schema}.users")]
            for schema in ("kg_auth", "us_auth")
        }
        leaked = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'products' "
            "AND schemaname NOT IN ('kg_app', 'us_app')"
        )
    finally:
        await conn.close()
    assert skus == {"kg_app": ["kg-core", "kg-orm"], "us_app": ["us-orm"]}
    assert phones == {"kg_auth": [], "us_auth": ["+12125550100"]}
    assert leaked == 0
    async with kg_app.connect() as c:
        assert await c.scalar(select(Product.name).where(Product.sku == "kg-orm")) == "Нан"
        assert await c.scalar(select(Product.name).where(Product.sku == "us-orm")) is None


async def test_rows_land_in_the_stores_database(stores: Databases) -> None:
    async with stores.store("kg", "app").begin() as session:
        session.add(Product(sku="kg-only", name="Нан", price_minor=4500))
    counts = {}
    for store in stores.stores:
        if store.key.role != "app":
            continue
        url = stores.topology[store.key].url
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            counts[str(store.key)] = await conn.fetchval(
                f"SELECT count(*) FROM {store.schema}.products WHERE sku = 'kg-only'"
            )
        finally:
            await conn.close()
    assert counts == {"kg.app": 1, "us.app": 0}


async def test_a_failed_write_rolls_back(stores: Databases) -> None:
    store = stores.store("us", "app")
    with pytest.raises(RuntimeError):
        async with store.begin() as session:
            session.add(Product(sku="never", name="Never", price_minor=1))
            await session.flush()
            raise RuntimeError("abort")
    async with store.connect() as conn:
        assert await conn.scalar(select(Product.id).where(Product.sku == "never")) is None


async def test_dispose_closes_every_connection(settings: Settings, tmp_path: Path) -> None:
    databases = open_with(separate_urls(settings), tmp_path)
    drivers = []
    for store in databases.stores:
        async with store.connect() as conn:
            raw = await conn.get_raw_connection()
            drivers.append(raw.driver_connection)
            assert await conn.scalar(text("SELECT 1")) == 1
    assert all(engine.pool.checkedin() == 1 for engine in databases.engines)
    assert not any(driver.is_closed() for driver in drivers)
    await databases.dispose()
    assert all(driver.is_closed() for driver in drivers)
    assert all(engine.pool.checkedin() == 0 for engine in databases.engines)


async def test_a_connection_killed_while_idle_is_replaced_at_checkout(
    stores: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle pre-ping: a pooled connection the server closed is found out before use."""
    monkeypatch.setattr(databases_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    store = stores.store("kg", "app")
    async with store.connect() as conn:
        first_pid = await conn.scalar(text("SELECT pg_backend_pid()"))
    # The server ends that backend while its connection sits in the pool.
    killer = await asyncpg.connect(asyncpg_dsn(store.engine.url))
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", first_pid)
    finally:
        await killer.close()
    async with store.connect() as conn:
        second_pid = await conn.scalar(text("SELECT pg_backend_pid()"))
    assert second_pid != first_pid
