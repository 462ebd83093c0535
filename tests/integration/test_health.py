"""Store inspection on real databases: pool numbers, a store that answers but cannot write,
and the `marketgraph check` command."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from marketgraph.db import migrate
from marketgraph.db.databases import Databases
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.health import inspect
from marketgraph.db.topology import StoreKey, Topology
from marketgraph.kv import MemoryStore
from marketgraph.settings import Settings
from tests.conftest import TEST_DB_PREFIX, make_settings, recreate_database, url_text
from tests.helpers import closed_port


async def test_pool_status_counts_the_connections_in_use(stores: Databases) -> None:
    store = stores.store("kg", "auth")
    async with store.connect() as held:
        await held.execute(text("SELECT 1"))
        report = await inspect(stores, MemoryStore(), 3.0)
    by_key = {s.key: s for s in report.stores}
    pool = by_key["kg.auth"].pool
    assert pool.checked_out == 1  # the held connection; the probe's own went back
    assert pool.checked_in >= 1
    assert pool.total == pool.checked_in + pool.checked_out
    assert pool.shared_by == ("kg.auth",)
    assert by_key["kg.app"].pool.checked_out == 0
    assert report.overall_status == "healthy"


@pytest.fixture
async def read_only_database(postgres_url: URL) -> AsyncIterator[URL]:
    """A migrated app database where every transaction is read-only, like a hot standby."""
    name = f"{TEST_DB_PREFIX}_health_read_only"
    url = await recreate_database(postgres_url, name)
    key = StoreKey("us", "app")
    await migrate.upgrade(Topology.resolve(("us",), {"US_DATABASE_URL": url_text(url)})[key])
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        await conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        yield url
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_a_store_that_answers_but_cannot_write_is_degraded(
    settings: Settings, read_only_database: URL, tmp_path: Path
) -> None:
    urls = {**settings.database_urls, "US_APP_DATABASE_URL": url_text(read_only_database)}
    placed = make_settings(tmp_path, urls)
    databases = Databases(Topology.resolve(placed.markets.codes, placed.database_urls), placed)
    try:
        report = await inspect(databases, MemoryStore(), 3.0)
    finally:
        await databases.dispose()
    by_key = {s.key: s for s in report.stores}
    read_only = by_key["us.app"]
    assert read_only.status == "degraded"
    assert (read_only.tests.connection, read_only.tests.read) == (True, True)
    assert (read_only.tests.write, read_only.tests.transaction) == (False, False)
    assert read_only.error == "ReadOnlySQLTransactionError"
    assert read_only.at_head
    assert all(by_key[k].status == "connected" for k in ("kg.auth", "kg.app", "us.auth"))
    assert report.overall_status == "degraded"


# --- marketgraph check ------------------------------------------------------------------------


async def run_check(database_urls: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    """`marketgraph check` in a subprocess, configured only by the given variables."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().endswith(("DATABASE_URL", "DATABASE_URL_FILE"))
        and name.upper() != "REDIS_URL"
    }
    env.update(database_urls, DATA_DIR=str(tmp_path), COLUMNS="200", HEALTH_TIMEOUT="2")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "marketgraph",
        "check",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


def _row(output: str, key: str) -> str:
    return next(line for line in output.splitlines() if f" {key} " in line)


async def test_check_shows_every_store_and_exits_0(settings: Settings, tmp_path: Path) -> None:
    code, output = await run_check(settings.database_urls, tmp_path)
    assert code == 0, output
    assert "healthy" in output
    for market in ("kg", "us"):
        for role in ("auth", "app"):
            row = _row(output, f"{market}.{role}")
            head = migrate.head_revision("auth" if role == "auth" else "app")
            assert "connected" in row
            assert f"{TEST_DB_PREFIX}_{market}_{role}" in row
            assert f"{market}_{role}" in row
            assert f"{head} / {head}" in row
            assert " ms " in row
    assert "memory" in _row(output, "kv")


async def test_check_exits_1_naming_an_unreachable_store(
    settings: Settings, tmp_path: Path
) -> None:
    port = closed_port()
    urls = {
        **settings.database_urls,
        "US_APP_DATABASE_URL": f"postgresql://mg:s3cret-pw@127.0.0.1:{port}/gone",
    }
    code, output = await run_check(urls, tmp_path)
    assert code == 1, output
    assert "degraded" in output
    assert "unreachable" in _row(output, "us.app")
    assert "connected" in _row(output, "kg.auth")
    assert "s3cret-pw" not in output
