"""The pool keeps overflow connections warm under load, closes them once load is gone (even
with no traffic at all), and still enforces DB_POOL_SIZE + DB_MAX_OVERFLOW."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from marketgraph.db import greenlets
from marketgraph.db import pool as pool_module
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.pool import WarmOverflowPool, close_idle_overflow
from marketgraph.services import open_services
from marketgraph.settings import Settings
from tests.conftest import TEST_DB_PREFIX, databases_for, make_settings, recreate_database, url_text

SIZE, OVERFLOW = 2, 3
DATABASE = f"{TEST_DB_PREFIX}_pool"


@pytest.fixture(scope="module")
async def pool_database(postgres_url: URL) -> AsyncIterator[URL]:
    """An empty database only this module connects to, so pg_stat_activity counts our pools."""
    url = await recreate_database(postgres_url, DATABASE)
    yield url
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await conn.close()


def pool_settings(database: URL, tmp_path: Path) -> Settings:
    """Every store in `database`, with a pool of 2 plus 3 overflow and a 0.3 s timeout."""
    return make_settings(
        tmp_path,
        {"DATABASE_URL": url_text(database)},
        db_pool_size=SIZE,
        db_max_overflow=OVERFLOW,
        db_pool_timeout=0.3,
    )


@pytest.fixture
async def engine(pool_database: URL, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The single database's engine."""
    databases = databases_for(pool_settings(pool_database, tmp_path))
    (engine,) = databases.engines
    try:
        yield engine
    finally:
        await databases.dispose()


@pytest.fixture
def quick_housekeeping(monkeypatch: pytest.MonkeyPatch) -> float:
    """The surplus is due after 0.3 s within the pool size, looked for every 0.05 s."""
    monkeypatch.setattr(pool_module, "OVERFLOW_IDLE_SECONDS", 0.3)
    monkeypatch.setattr(pool_module, "HOUSEKEEPING_SECONDS", 0.05)
    return 0.3


async def server_sessions(postgres_url: URL) -> int:
    """The server's sessions in this module's database, from pg_stat_activity."""
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", DATABASE
        )
    finally:
        await conn.close()
    return count


async def settled_sessions(postgres_url: URL, expected: int) -> int:
    """The session count once it is `expected`, or after 5 s: a closed connection's server
    process leaves pg_stat_activity a moment after the client has said goodbye."""
    for _ in range(250):
        count = await server_sessions(postgres_url)
        if count == expected:
            break
        await asyncio.sleep(0.02)
    return count


def closes(engine: AsyncEngine, expected: int) -> asyncio.Event:
    """Set once the engine's pool has closed `expected` connections."""
    done, closed = asyncio.Event(), [0]

    def count(*_: object) -> None:
        closed[0] += 1
        if closed[0] >= expected:
            done.set()

    event.listen(engine.sync_engine.pool, "close", count)
    return done


def pool_of(engine: AsyncEngine) -> WarmOverflowPool:
    pool = engine.sync_engine.pool
    assert isinstance(pool, WarmOverflowPool)
    return pool


def sessions_opened(engine: AsyncEngine) -> list[object]:
    opened: list[object] = []
    event.listen(engine.sync_engine.pool, "connect", lambda *_: opened.append(1))
    return opened


async def burst(engine: AsyncEngine, n: int) -> None:
    """n requests at once, each holding a connection until all have one."""
    all_in = asyncio.Barrier(n)

    async def one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await all_in.wait()

    await asyncio.gather(*(one() for _ in range(n)))


async def test_overflow_connections_are_kept_while_load_lasts(engine: AsyncEngine) -> None:
    pool, opened = pool_of(engine), sessions_opened(engine)
    await burst(engine, SIZE + OVERFLOW)
    assert len(opened) == SIZE + OVERFLOW
    assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (5, 0, OVERFLOW)
    for _ in range(5):  # SQLAlchemy's QueuePool would close 3 and open 3 anew each time
        await burst(engine, SIZE + OVERFLOW)
    assert len(opened) == SIZE + OVERFLOW
    assert pool.size() == SIZE


async def test_the_surplus_is_closed_once_load_is_gone(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "OVERFLOW_IDLE_SECONDS", 0.2)
    pool = pool_of(engine)
    closed: list[object] = []
    event.listen(engine.sync_engine.pool, "close", lambda *_: closed.append(1))
    await burst(engine, SIZE + OVERFLOW)
    await burst(engine, 1)  # load just ended: nothing closed yet
    assert (len(closed), pool.checkedin()) == (0, SIZE + OVERFLOW)
    await asyncio.sleep(0.3)
    for _ in range(OVERFLOW + 2):  # light load: each return closes one surplus connection
        await burst(engine, 1)
    assert len(closed) == OVERFLOW
    assert (pool.checkedin(), pool.overflow()) == (SIZE, 0)


async def test_size_plus_overflow_is_still_the_limit(engine: AsyncEngine) -> None:
    held = [await engine.connect() for _ in range(SIZE + OVERFLOW)]
    try:
        assert pool_of(engine).checkedout() == SIZE + OVERFLOW
        with pytest.raises(PoolTimeout):
            await engine.connect()
    finally:
        for conn in held:
            await conn.close()
    assert pool_of(engine).checkedout() == 0


async def test_dispose_recreates_the_same_pool(engine: AsyncEngine) -> None:
    await burst(engine, 3)
    await engine.dispose()
    pool = pool_of(engine)
    assert (pool.size(), pool.max_overflow(), pool.timeout()) == (SIZE, OVERFLOW, 0.3)
    assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (0, 0, -SIZE)


# --- housekeeping: the surplus goes even when no request comes back ---------------------------


async def test_the_surplus_is_closed_with_no_traffic_at_all(
    engine: AsyncEngine, postgres_url: URL, quick_housekeeping: float
) -> None:
    pool, all_closed = pool_of(engine), closes(engine, OVERFLOW)
    await burst(engine, SIZE + OVERFLOW)
    load_ended = time.monotonic()
    assert await server_sessions(postgres_url) == SIZE + OVERFLOW
    housekeeping = asyncio.create_task(close_idle_overflow([engine]))
    try:
        async with asyncio.timeout(5):
            await all_closed.wait()
        assert time.monotonic() - load_ended >= quick_housekeeping
    finally:
        housekeeping.cancel()
        await asyncio.wait([housekeeping])
    assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (SIZE, 0, 0)
    assert await settled_sessions(postgres_url, SIZE) == SIZE


async def test_housekeeping_waits_while_the_overflow_is_needed(
    engine: AsyncEngine, quick_housekeeping: float
) -> None:
    pool = pool_of(engine)
    await burst(engine, SIZE + OVERFLOW)
    assert not pool.has_idle_surplus()  # the overflow was needed a moment ago
    held = [await engine.connect() for _ in range(SIZE + 1)]  # the overflow is needed again
    try:
        assert await greenlets.call(pool.close_idle_surplus) == 0
        assert pool.checkedin() + pool.checkedout() == SIZE + OVERFLOW
    finally:
        for conn in held:
            await conn.close()


async def test_a_connection_in_use_is_never_closed(
    engine: AsyncEngine, postgres_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Housekeeping closes the surplus while requests check connections out and in (whose
    returns close surplus too); the pool's events show what was out when a close came."""
    pool = pool_of(engine)
    out: set[int] = set()
    closed_in_use: list[int] = []
    event.listen(pool, "checkout", lambda dbapi, *_: out.add(id(dbapi)))
    event.listen(pool, "checkin", lambda dbapi, *_: out.discard(id(dbapi)))

    @event.listens_for(pool, "close")
    def note_close(dbapi: object, *_: object) -> None:
        if id(dbapi) in out:
            closed_in_use.append(1)

    async def request() -> None:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1

    closed_by_housekeeping = 0
    for _ in range(20):
        monkeypatch.setattr(pool_module, "OVERFLOW_IDLE_SECONDS", 60.0)
        await burst(engine, SIZE + OVERFLOW)  # the overflow is open again, and kept
        monkeypatch.setattr(pool_module, "OVERFLOW_IDLE_SECONDS", 0.0)  # now all of it is due
        # Housekeeping starts first, so requests check out while it is closing.
        closing = asyncio.create_task(greenlets.call(pool.close_idle_surplus))
        await asyncio.gather(*(request() for _ in range(SIZE + 1)))
        closed_by_housekeeping += await closing
    assert closed_by_housekeeping > 0
    assert closed_in_use == []
    assert (pool.checkedout(), pool.checkedin()) == (0, SIZE + pool.overflow())
    assert await settled_sessions(postgres_url, pool.checkedin()) == pool.checkedin()


async def test_services_close_the_surplus_and_stop_housekeeping_on_close(
    pool_database: URL, postgres_url: URL, tmp_path: Path, quick_housekeeping: float
) -> None:
    services = await open_services(pool_settings(pool_database, tmp_path))
    try:
        (engine,) = services.databases.engines
        all_closed = closes(engine, OVERFLOW)
        await burst(engine, SIZE + OVERFLOW)
        async with asyncio.timeout(5):
            await all_closed.wait()
        assert await settled_sessions(postgres_url, SIZE) == SIZE
    finally:
        await services.close()
    assert services.housekeeping is not None and services.housekeeping.cancelled()
    assert await settled_sessions(postgres_url, 0) == 0
