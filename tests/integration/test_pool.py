"""The pool keeps overflow connections warm under load, closes them once load is gone,
and still enforces DB_POOL_SIZE + DB_MAX_OVERFLOW."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from marketgraph.db import pool as pool_module
from marketgraph.db.pool import WarmOverflowPool
from marketgraph.settings import Settings
from tests.conftest import databases_for

SIZE, OVERFLOW = 2, 3


@pytest.fixture
async def engine(shared_settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The single database's engine with a pool of 2 plus 3 overflow, 0.3 s timeout."""
    settings = Settings.model_validate(
        {
            **shared_settings.model_dump(),
            "db_pool_size": SIZE,
            "db_max_overflow": OVERFLOW,
            "db_pool_timeout": 0.3,
        }
    )
    databases = databases_for(settings)
    (engine,) = databases.engines
    try:
        yield engine
    finally:
        await databases.dispose()


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
    assert (pool.size(), pool._max_overflow, pool.timeout()) == (SIZE, OVERFLOW, 0.3)
    assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (0, 0, -SIZE)
