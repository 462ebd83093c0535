"""Test harness: a real PostgreSQL (TEST_DATABASE_URL, else an embedded one), the four stores
migrated to head in both modes, truncation after each test, and an HTTP client for the app.

Modes:
- `separate`: one database per (market, role), placed by `<MARKET>_<ROLE>_DATABASE_URL`;
  what most tests use.
- `shared`: a single `DATABASE_URL`, the four stores as four schemas of one database.
"""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import strawberry
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from starlette.applications import Starlette

from marketgraph.app import create_app, install_services
from marketgraph.db import migrate
from marketgraph.db.databases import Databases, Store
from marketgraph.db.embedded import EmbeddedPostgres, asyncpg_dsn
from marketgraph.db.models import metadata_for
from marketgraph.db.topology import Topology
from marketgraph.kv import KeyValueStore, MemoryStore, RedisStore
from marketgraph.services import build_services
from marketgraph.settings import ROLES, Settings
from tests.pgbouncer import PgBouncer, running_pgbouncer

# Per process, so concurrent test runs on one server never drop each other's databases.
TEST_DB_PREFIX = f"mg_test_{os.getpid()}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[URL]:
    """A PostgreSQL server's maintenance-database URL: TEST_DATABASE_URL or an embedded one."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield make_url(configured).set(drivername="postgresql+asyncpg")
        return
    with tempfile.TemporaryDirectory(prefix="mg-pg-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp))
        try:
            yield embedded.start()
        finally:
            embedded.stop()


async def recreate_database(server: URL, name: str) -> URL:
    """Drop (forcing other sessions off) and create `name`; return its URL."""
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.set(database=name)


# The whole suite runs with the query planner on (the default), off or in shadow mode:
# TEST_QUERY_PLANNER=off|on|shadow. Tests that need one mode ask for it explicitly.
TEST_QUERY_PLANNER = os.environ.get("TEST_QUERY_PLANNER", "on")

# TEST_PGBOUNCER=1: the session's stores are reached through one PgBouncer in transaction mode
# (tests/pgbouncer.py) with prepared statements off (DB_STATEMENT_CACHE_SIZE=0, all that the
# server needs there: in the environment, so the commands and servers that tests start get it
# too); creating, migrating and dropping the databases stays direct.
TEST_PGBOUNCER = os.environ.get("TEST_PGBOUNCER") == "1"
if TEST_PGBOUNCER:
    os.environ.setdefault("DB_STATEMENT_CACHE_SIZE", "0")


def pytest_report_header() -> list[str]:
    return [
        f"query planner: {TEST_QUERY_PLANNER} (TEST_QUERY_PLANNER=off|on|shadow)",
        f"stores through PgBouncer: {'yes' if TEST_PGBOUNCER else 'no'} (TEST_PGBOUNCER=1)",
    ]


def make_settings(tmp_dir: Path, database_urls: dict[str, str], **overrides: Any) -> Settings:
    """Settings for a test: given database variables, data under `tmp_dir`, nothing from env
    (but TEST_QUERY_PLANNER)."""
    return Settings(
        database_urls=database_urls,
        data_dir=tmp_dir,
        **{"query_planner": TEST_QUERY_PLANNER, **overrides},
    )


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def migrated_settings(server: URL, mode: str, tmp_dir: Path) -> Settings:
    """Create the databases of `mode`, migrate every store to head, return Settings placing them."""
    markets = Settings(data_dir=tmp_dir).markets.codes
    if mode == "separate":
        urls = {}
        for market in markets:
            for role in ROLES:
                db = await recreate_database(server, f"{TEST_DB_PREFIX}_{market}_{role}")
                urls[f"{market.upper()}_{role.upper()}_DATABASE_URL"] = url_text(db)
    else:
        db = await recreate_database(server, f"{TEST_DB_PREFIX}_shared")
        urls = {"DATABASE_URL": url_text(db)}
    settings = make_settings(tmp_dir, urls)
    for location in Topology.resolve(settings.markets.codes, settings.database_urls):
        await migrate.upgrade(location)
    return settings


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mg-data-") as tmp:
        yield Path(tmp)


async def drop_databases(server: URL, names: Iterable[str | None]) -> None:
    """Drop each database of `names` on `server` (forcing other sessions off), if it exists."""
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        for name in names:
            if name:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def databases_of(settings: Settings) -> set[str | None]:
    """The names of the databases `settings` places stores in."""
    return {make_url(value).database for value in settings.database_urls.values()}


@pytest.fixture(scope="session")
def pgbouncer(postgres_url: URL) -> Iterator[PgBouncer | None]:
    """With TEST_PGBOUNCER=1, a PgBouncer in transaction mode in front of the server; else None."""
    if not TEST_PGBOUNCER:
        yield None
        return
    with running_pgbouncer(postgres_url) as bouncer:
        yield bouncer


def behind(bouncer: PgBouncer | None, settings: Settings) -> Settings:
    """`settings`, its stores reached through `bouncer` when there is one."""
    if bouncer is None:
        return settings
    return make_settings(settings.data_dir, bouncer.route(settings.database_urls))


@pytest.fixture(scope="session")
async def settings(
    postgres_url: URL, data_dir: Path, pgbouncer: PgBouncer | None
) -> AsyncIterator[Settings]:
    """Separate-databases mode, migrated to head once per session."""
    settings = await migrated_settings(postgres_url, "separate", data_dir)
    yield behind(pgbouncer, settings)
    await drop_databases(postgres_url, databases_of(settings))


@pytest.fixture(scope="session")
async def shared_settings(
    postgres_url: URL, data_dir: Path, pgbouncer: PgBouncer | None
) -> AsyncIterator[Settings]:
    """Single-DATABASE_URL mode (four schemas in one database), migrated to head once."""
    settings = await migrated_settings(postgres_url, "shared", data_dir)
    yield behind(pgbouncer, settings)
    await drop_databases(postgres_url, databases_of(settings))


@pytest.fixture(scope="session")
async def _databases(settings: Settings) -> AsyncIterator[Databases]:
    databases = databases_for(settings)
    yield databases
    await databases.dispose()


def databases_for(settings: Settings) -> Databases:
    """The engines of every store `settings` places (none connected until used)."""
    return Databases(Topology.resolve(settings.markets.codes, settings.database_urls), settings)


async def truncate_all(databases: Databases) -> None:
    """Empty every table of every store: one statement per store, the stores concurrently.

    DELETE in data-modifying CTEs, not TRUNCATE: on a handful of rows it is several
    times faster (TRUNCATE makes new files for every table), and foreign keys are
    checked once at the end of the statement.
    """

    async def empty(store: Store) -> None:
        tables = [
            f'"{store.schema}"."{t.name}"' for t in metadata_for(store.key.role).sorted_tables
        ]
        ctes = ", ".join(f"d{i} AS (DELETE FROM {name})" for i, name in enumerate(tables[1:]))
        async with store.engine.begin() as conn:
            await conn.execute(text(f"WITH {ctes} DELETE FROM {tables[0]}"))

    await asyncio.gather(*(empty(store) for store in databases.stores))


@pytest.fixture
async def stores(_databases: Databases) -> AsyncIterator[Databases]:
    """The four stores (separate mode); every table is emptied after the test."""
    try:
        yield _databases
    finally:
        await truncate_all(_databases)


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    """Each key-value implementation: Redis only where TEST_REDIS_URL is set."""
    if request.param == "memory":
        store: KeyValueStore = MemoryStore()
    else:
        redis_url = os.environ.get("TEST_REDIS_URL")
        if not redis_url:
            pytest.skip("TEST_REDIS_URL is not set")
        prefix = f"mgtest:{request.node.name}:{os.getpid()}:"
        store = RedisStore(redis_url, prefix=prefix)
        await store.delete_prefix("")
    try:
        yield store
    finally:
        await store.delete_prefix("")
        await store.close()


def build_app(
    databases: Databases,
    kv: KeyValueStore | None = None,
    schema: strawberry.Schema | None = None,
    **overrides: Any,
) -> Starlette:
    """An app on open stores (no lifespan: the stores are already open)."""
    # Validated again, so overrides get their types (SecretStr, Path) as from the environment.
    settings = Settings.model_validate(
        {**databases.settings.model_dump(), "sms_backend": "memory", **overrides}
    )
    app = create_app(settings, schema)
    install_services(app, build_services(settings, databases, kv or MemoryStore()))
    return app


@pytest.fixture
def app_factory(stores: Databases) -> Callable[..., Starlette]:
    """Build an app on the session's stores: `build_app` with the stores given."""
    return functools.partial(build_app, stores)


@pytest.fixture(scope="session")
async def _shared_databases(shared_settings: Settings) -> AsyncIterator[Databases]:
    databases = databases_for(shared_settings)
    yield databases
    await databases.dispose()


@pytest.fixture
async def shared_stores(_shared_databases: Databases) -> AsyncIterator[Databases]:
    """The four stores in one database (single-DATABASE_URL mode); emptied after the test."""
    try:
        yield _shared_databases
    finally:
        await truncate_all(_shared_databases)


@pytest.fixture
async def client(app_factory: Callable[..., Starlette]) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, in-process."""
    transport = httpx.ASGITransport(app=app_factory())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
