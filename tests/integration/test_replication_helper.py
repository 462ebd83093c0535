"""tests/replication.py itself: its replicas really stream, pause and restart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import URL

from marketgraph.db.embedded import asyncpg_dsn
from tests.replication import ReplicatedServer, format_lsn, parse_lsn, processes_under

pytestmark = pytest.mark.slow

DATABASE = "mg_repl_helper"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[ReplicatedServer]:
    server = ReplicatedServer(replicas=1)
    try:
        await server.start()
        print(f"primary + 1 replica up in {server.startup_seconds:.2f} s")
        await server.create_database(DATABASE)
        conn = await asyncpg.connect(asyncpg_dsn(server.primary_url.set(database=DATABASE)))
        try:
            await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        finally:
            await conn.close()
        yield server
    finally:
        await server.stop()


async def execute(url: URL, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url.set(database=DATABASE)))
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def body(url: URL, note: int) -> str | None:
    conn = await asyncpg.connect(asyncpg_dsn(url.set(database=DATABASE)))
    try:
        value: str | None = await conn.fetchval("SELECT body FROM notes WHERE id = $1", note)
        return value
    finally:
        await conn.close()


async def test_a_row_written_on_the_primary_appears_on_the_replica(
    server: ReplicatedServer,
) -> None:
    await execute(server.primary_url, "INSERT INTO notes VALUES (1, 'streamed')")
    lsn = await server.wait_caught_up(0)
    assert (await server.replay_lsn(0) or 0) >= lsn
    assert await body(server.replica_urls[0], 1) == "streamed"
    # The replica is a hot standby: readable, never writable.
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await execute(server.replica_urls[0], "INSERT INTO notes VALUES (2, 'nope')")


async def test_paused_replay_hides_new_rows_until_resumed(server: ReplicatedServer) -> None:
    await server.pause_replay(0)
    try:
        before = await server.replay_lsn(0)
        await execute(server.primary_url, "INSERT INTO notes VALUES (3, 'held back')")
        with pytest.raises(TimeoutError):
            await server.wait_caught_up(0, within=0.5)
        assert await server.replay_lsn(0) == before
        assert await body(server.replica_urls[0], 3) is None
    finally:
        await server.resume_replay(0)
    await server.wait_caught_up(0)
    assert await body(server.replica_urls[0], 3) == "held back"


async def test_a_stopped_replica_refuses_connections_and_streams_again_once_started(
    server: ReplicatedServer,
) -> None:
    await server.stop_replica(0)
    with pytest.raises(OSError):  # ConnectionRefusedError
        await body(server.replica_urls[0], 1)
    # Written while the replica is down: its slot keeps the WAL until it comes back.
    await execute(server.primary_url, "INSERT INTO notes VALUES (4, 'while down')")
    await server.start_replica(0)
    await server.wait_caught_up(0)
    assert await body(server.replica_urls[0], 4) == "while down"


async def test_two_replicas_stream_and_stop_removes_everything() -> None:
    began = time.monotonic()
    async with ReplicatedServer(replicas=2) as server:
        print(f"primary + 2 replicas up in {time.monotonic() - began:.2f} s")
        root = server.root
        assert root is not None and root.is_dir()
        assert len(set(server.replica_urls)) == 2
        await server.create_database(DATABASE)
        await execute(server.primary_url, "CREATE TABLE notes (id int PRIMARY KEY, body text)")
        await execute(server.primary_url, "INSERT INTO notes VALUES (1, 'both')")
        for i in range(2):
            await server.wait_caught_up(i)
            assert await body(server.replica_urls[i], 1) == "both"
        assert len(processes_under(root)) > 3  # three postmasters and their children
    assert not root.exists()
    assert processes_under(root) == []
    with pytest.raises(OSError):
        await body(server.primary_url, 1)


def test_lsn_text_round_trips() -> None:
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("0/3000148") == 0x3000148
