"""Behind PgBouncer in transaction mode (a real one, tests/pgbouncer.py), with
DB_STATEMENT_CACHE_SIZE=0 and no other setting, the server answers planned and Strawberry
reads, checkout, the payment webhook and the health probes; PgBouncer's own admin console
shows the traffic went through it, many client connections sharing few server ones.

Transaction mode hands a server connection to a client for one transaction (or one
statement outside any) only: nothing may rely on a session (named prepared statements,
SET, advisory locks, LISTEN, temporary tables outliving a transaction).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from marketgraph.db import greenlets, migrate
from marketgraph.db.databases import Databases
from marketgraph.db.topology import Topology
from marketgraph.planner.runtime import Run
from marketgraph.settings import Settings
from marketgraph.webhooks import sign
from tests.conftest import (
    TEST_DB_PREFIX,
    build_app,
    databases_for,
    drop_databases,
    make_settings,
    url_text,
)
from tests.factories import (
    WEBHOOK_SECRET,
    add_cart_item,
    balance_of,
    create_customer,
    create_product,
    gid,
    token_for,
)
from tests.helpers import data, gql, http_client
from tests.pgbouncer import PgBouncer, running_pgbouncer

# Server connections per database: fewer than the app's pool opens under the concurrent
# reads below, so client connections must take turns on them.
SERVER_CONNECTIONS = 2

PRODUCTS = 'query { products(market: "kg", first: 5) { edges { node { id name stock } } } }'
# Reads each store twice: a planned run in one REPEATABLE READ snapshot per store.
VIEWER = """
{ viewer { wallet { balance { amountMinor } }
           orders(first: 5) { edges { node { number user { cart { itemCount } } } } } } }
"""
CHECKOUT = """
mutation ($key: String!) {
  checkout(idempotencyKey: $key) { number status total { amountMinor } }
}
"""


@pytest.fixture(scope="module")
def bouncer(postgres_url: URL) -> Iterator[PgBouncer]:
    """This module's own PgBouncer, whatever TEST_PGBOUNCER says."""
    with running_pgbouncer(postgres_url, pool_size=SERVER_CONNECTIONS) as running:
        yield running


def through(bouncer: PgBouncer, postgres_url: URL, settings: Settings, tmp: Path) -> Settings:
    """The session's databases (migrated directly), each reached through `bouncer`, with
    prepared statements off: the one setting PgBouncer in transaction mode needs."""
    urls = {
        name: url_text(bouncer.url(postgres_url.set(database=make_url(value).database)))
        for name, value in settings.database_urls.items()
    }
    return make_settings(tmp, urls, db_statement_cache_size=0)


async def transactions(bouncer: PgBouncer) -> dict[str, int]:
    """Transactions PgBouncer has passed on, per database."""
    return {
        str(row["database"]): int(row["total_xact_count"] or 0)
        for row in await bouncer.show("STATS")
    }


async def deliver_top_up(http: httpx.AsyncClient, user_gid: str, amount: int) -> httpx.Response:
    body = orjson.dumps(
        {
            "id": f"cs_pgbouncer_{user_gid}",
            "type": "checkout.session.completed",
            "data": {"user_id": user_gid, "amount_minor": amount, "currency": "KGS"},
        }
    )
    signature = sign(WEBHOOK_SECRET.encode(), int(time.time()), body)
    return await http.post(
        "/webhooks/payments",
        content=body,
        headers={"X-Signature": signature, "Content-Type": "application/json"},
    )


@pytest.fixture
def planner_runs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each planned run took a snapshot (a REPEATABLE READ transaction) or not."""
    runs: list[bool] = []
    enter = Run.__aenter__

    async def recording(self: Run) -> Run:
        runs.append(self.snapshot)
        return await enter(self)

    monkeypatch.setattr(Run, "__aenter__", recording)
    return runs


@pytest.fixture
async def behind(
    bouncer: PgBouncer, postgres_url: URL, settings: Settings, tmp_path: Path
) -> AsyncIterator[Databases]:
    """The session's stores as a server behind `bouncer` opens them; closed after."""
    databases = databases_for(through(bouncer, postgres_url, settings, tmp_path))
    try:
        yield databases
    finally:
        await databases.dispose()


@pytest.mark.parametrize("planner", ["on", "off"])
async def test_reads_checkout_webhook_and_health_go_through_pgbouncer(
    planner: str,
    bouncer: PgBouncer,
    behind: Databases,
    stores: Databases,  # the session's stores: the rows below, emptied after the test
    planner_runs: list[bool],
) -> None:
    app = build_app(behind, payment_webhook_secret=WEBHOOK_SECRET, query_planner=planner)
    names = {str(s.key): s.engine.url.database for s in behind.stores}
    kg_app = names["kg.app"]
    user = await create_customer(stores, "kg", balance_minor=10_000)
    tea = await create_product(stores.store("kg", "app"), name="Tea", price_minor=2_500, stock=9)
    await add_cart_item(stores.store("kg", "app"), user.id, tea.id, 2)
    token = token_for(app, "kg", user)
    before = await transactions(bouncer)

    async with http_client(app) as http:
        # Concurrent reads: more client connections than PgBouncer has server connections.
        reads = await asyncio.gather(*(gql(http, PRODUCTS) for _ in range(8)))
        for body in reads:
            assert [e["node"]["name"] for e in data(body)["products"]["edges"]] == ["Tea"]

        order = data(await gql(http, CHECKOUT, {"key": "pgbouncer"}, token=token))["checkout"]
        assert (order["status"], order["total"]["amountMinor"]) == ("PAID", 5_000)
        viewer = data(await gql(http, VIEWER, token=token))["viewer"]
        assert viewer["wallet"]["balance"]["amountMinor"] == 5_000
        [edge] = viewer["orders"]["edges"]
        assert edge["node"] == {"number": order["number"], "user": {"cart": {"itemCount": 0}}}

        top_up = await deliver_top_up(http, gid("User", "kg", user.id), 7_000)
        assert (top_up.status_code, top_up.json()) == (200, {"status": "processed"})

        health = await http.get("/health")
        ready = await http.get("/health/ready")
        detailed = await http.get("/health/detailed")

    assert health.status_code == 200 and health.json()["status"] == "healthy"
    assert ready.status_code == 200, ready.json()
    assert detailed.json()["overall_status"] == "healthy", detailed.json()
    assert await balance_of(stores.store("kg", "app"), user.id) == 10_000 - 5_000 + 7_000
    if planner == "on":  # both kinds of planned run: statements alone, and in a snapshot
        assert set(planner_runs) == {False, True}
    else:
        assert planner_runs == []

    after = await transactions(bouncer)
    for store, database in names.items():  # every store answered the probes through it
        assert after.get(str(database), 0) > before.get(str(database), 0), store
    # Reads, checkout and webhook: far more transactions on kg.app than the probes' few.
    assert after[str(kg_app)] - before.get(str(kg_app), 0) >= 10
    clients = [c for c in await bouncer.show("CLIENTS") if c["database"] == kg_app]
    servers = [s for s in await bouncer.show("SERVERS") if s["database"] == kg_app]
    assert len(servers) <= SERVER_CONNECTIONS < len(clients)


async def hold_a_server_connection(bouncer: PgBouncer, database: str) -> asyncpg.Connection:
    """A client in a transaction through `bouncer`: it keeps the server connection used last
    (PgBouncer reuses them last in, first out) until it ends."""
    holder = await asyncpg.connect(
        host="127.0.0.1",
        port=bouncer.port,
        user=bouncer.admin_user,
        database=database,
        statement_cache_size=0,
    )
    await holder.execute("BEGIN")
    await holder.fetchval("SELECT 1")
    return holder


async def test_a_client_connection_moved_to_another_server_connection_runs_its_statements(
    bouncer: PgBouncer, behind: Databases
) -> None:
    """The case that breaks named prepared statements (DB_STATEMENT_CACHE_SIZE unset: "prepared
    statement ... does not exist"), on both paths: SQLAlchemy's connection, and the raw
    driver connection the planner runs its statements on, outside any transaction."""
    store = behind.store("kg", "app")
    database = str(store.engine.url.database)
    statement = text("SELECT pg_backend_pid(), CAST(:n AS int)")

    async with store.connect() as conn:
        first = (await conn.execute(statement, {"n": 1})).one()
        await conn.rollback()  # the transaction ends: PgBouncer takes its server connection
        holder = await hold_a_server_connection(bouncer, database)
        try:
            second = (await conn.execute(statement, {"n": 2})).one()
        finally:
            await holder.close()
    assert first[0] != second[0] and second[1] == 2  # another server connection, same statement

    handle = await greenlets.call(store.engine.sync_engine.raw_connection)
    try:
        raw = handle.driver_connection
        assert raw is not None
        sql = "SELECT pg_backend_pid(), $1::int"
        first = await raw.fetchrow(sql, 1)
        holder = await hold_a_server_connection(bouncer, database)
        try:
            second = await raw.fetchrow(sql, 2)
        finally:
            await holder.close()
    finally:
        await greenlets.call(handle.close)
    assert first[0] != second[0] and second[1] == 2


@pytest.mark.slow
async def test_db_create_and_upgrade_run_through_pgbouncer_deploy_after_deploy(
    bouncer: PgBouncer, postgres_url: URL, tmp_path: Path
) -> None:
    """The set-up README gives, each command a new process as deploys run them: none leaves
    a named prepared statement (asyncpg's names start over in each process) or a setting on
    a server connection for the next to trip on ("prepared statement ... already exists")."""
    name = f"{TEST_DB_PREFIX}_pgbouncer_cli"
    await drop_databases(postgres_url, [name])
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k.upper()}
    env.update(
        DATABASE_URL=url_text(bouncer.url(postgres_url.set(database=name))),
        DATA_DIR=str(tmp_path),
    )
    try:
        for command in ("create", "upgrade"):
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "marketgraph", "db", command],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"db {command}: {done.stdout}{done.stderr}"
        placed = make_settings(tmp_path, {"DATABASE_URL": env["DATABASE_URL"]})
        for store in Topology.resolve(placed.markets.codes, placed.database_urls):
            assert (await migrate.current(store)).at_head, store.key
        client = await asyncpg.connect(
            host="127.0.0.1",
            port=bouncer.port,
            user=bouncer.admin_user,
            database=name,
            statement_cache_size=0,
        )
        try:  # the server connection the commands used, as the next client finds it
            assert await client.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
            assert await client.fetchval("SHOW search_path") == '"$user", public'
        finally:
            await client.close()
    finally:
        await drop_databases(postgres_url, [name])


async def test_it_runs_in_transaction_mode(bouncer: PgBouncer) -> None:
    config = {row["key"]: row["value"] for row in await bouncer.show("CONFIG")}
    assert (config["pool_mode"], config["default_pool_size"]) == ("transaction", "2")
