"""`marketgraph db move`: a populated single-database deployment moves to a database per
store — interrupted once and resumed — is verified, and the API answers the same reads on
the new placement; a non-empty target is refused, a dry run changes nothing, and a
tampered target is reported as a mismatch."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import Result
from sqlalchemy.engine import URL, make_url
from starlette.applications import Starlette

from marketgraph import move_command
from marketgraph.auth import api_keys, refresh_tokens
from marketgraph.db import migrate
from marketgraph.db.databases import Databases
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.models import metadata_for
from marketgraph.db.models.auth import UserType
from marketgraph.db.move import (
    DEFAULT_BATCH_ROWS,
    MoveError,
    StoreMove,
    copy_stores,
    inspect_moves,
    plan_moves,
    read_record,
    switch_notes,
    target_topology,
    verify_stores,
)
from marketgraph.db.topology import StoreKey, Topology
from marketgraph.move_command import move
from marketgraph.settings import ROLES, Settings
from tests.conftest import (
    TEST_DB_PREFIX,
    build_app,
    databases_for,
    drop_databases,
    make_settings,
    url_text,
)
from tests.factories import (
    add_cart_item,
    create_customer,
    create_order,
    create_product,
    create_transaction,
    token_for,
)
from tests.helpers import data, gql, http_client, run_command

MARKETS = ("kg", "us")
STORES = tuple(StoreKey(m, r) for m in MARKETS for r in ROLES)
BATCH_ROWS = 2  # small, so every table with more than two rows takes several batches

CHECKOUT = """
mutation ($key: String!) { checkout(idempotencyKey: $key, paymentMethod: WALLET) { number } }
"""
REFRESH = "mutation ($t: String!) { refreshToken(refreshToken: $t) { user { id } } }"
VIEWER = """
{ viewer {
    id phone email userType preferences createdAt lastLoginAt market { code }
    cart { itemCount subtotal { amountMinor currency }
           items { quantity product { id sku name stock } lineTotal { amountMinor } } }
    wallet { balance { amountMinor currency } }
    orders { edges { node { id number status paymentMethod total { amountMinor } createdAt
                            items { quantity unitPrice { amountMinor } product { sku } } } } }
    transactions { edges { node { id kind amount { amountMinor } createdAt order { number } } } }
} }
"""
CATALOG = """
query ($m: ID!) { products(market: $m) { edges { node {
    id sku name description price { amountMinor currency formatted } stock } } } }
"""
ADMIN_READS = """
query ($m: ID!) {
  users(market: $m) { edges { node { id phone userType preferences isActive } } }
  marketStats { market { code } users orders revenue { amountMinor }
                walletBalances { amountMinor } }
}
"""


@dataclass
class MarketRows:
    """What one market was populated with: whose reads to compare."""

    buyer: Any
    admin: Any
    api_key: str
    refresh_token: str  # the live end of a rotated chain


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads the environment: only what a test sets there places the stores."""
    for name in list(os.environ):
        if "DATABASE_URL" in name.upper() or name.upper() in ("MARKETS_FILE", "DEFAULT_MARKET"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))


@pytest.fixture
async def targets(postgres_url: URL) -> AsyncIterator[dict[str, str]]:
    """A database per store, named for this test but not created (the move creates them):
    the target variables. Dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {key: f"{TEST_DB_PREFIX}_mv{tag}_{key.market}_{key.role}" for key in STORES}
    try:
        yield {
            f"{key.market.upper()}_{key.role.upper()}_DATABASE_URL": url_text(
                postgres_url.set(database=name)
            )
            for key, name in names.items()
        }
    finally:
        await drop_databases(postgres_url, names.values())


async def populate(stores: Databases, app: Starlette) -> dict[str, MarketRows]:
    """Both markets, every table of both roles non-empty, several batches in most."""
    rows = {}
    for market in MARKETS:
        auth, shop = stores.store(market, "auth"), stores.store(market, "app")
        products = [
            await create_product(shop, price_minor=1000 + i, stock=50, description=f"d{i}")
            for i in range(3)
        ]
        admin = await create_customer(stores, market, user_type=UserType.ADMIN)
        buyer = await create_customer(
            stores, market, balance_minor=100_000, preferences={"ui": {"theme": "dark"}}
        )
        other = await create_customer(stores, market)
        # A chain of three refresh tokens: each used one names the next (a later key), so
        # the chain crosses a batch boundary.
        async with auth.begin() as session:
            first = await refresh_tokens.issue(session, market, buyer.id, 3600)
        second = await refresh_tokens.rotate(auth, first.token, 3600)
        third = await refresh_tokens.rotate(auth, second.token, 3600)
        async with auth.begin() as session:
            await refresh_tokens.issue(session, market, other.id, 3600)
        key = await api_keys.create(auth, "ops", admin.id)
        await create_transaction(shop, other.id, 500)
        await add_cart_item(shop, buyer.id, products[0].id, 2)
        await add_cart_item(shop, buyer.id, products[1].id, 1)
        async with http_client(app) as client:
            token = token_for(app, market, buyer)
            data(await gql(client, CHECKOUT, {"key": f"{market}-1"}, token=token))
        await add_cart_item(shop, buyer.id, products[2].id, 1)
        await add_cart_item(shop, other.id, products[0].id, 3)
        await create_order(shop, market, other.id, [(products[1].id, 1, 1001)])
        rows[market] = MarketRows(buyer, admin, key.key, third.token)
    for store in stores.stores:
        for table in metadata_for(store.key.role).sorted_tables:
            async with store.connect() as conn:
                count = await conn.exec_driver_sql(
                    f'SELECT count(*) FROM "{store.schema}"."{table.name}"'
                )
                assert count.scalar_one() > 0, f"{store.key} {table.name} is empty"
    return rows


async def api_reads(app: Starlette, rows: dict[str, MarketRows]) -> dict[str, Any]:
    """Reads that touch every table: a customer's view, the catalog, the admin views (by
    token and by API key)."""
    reads: dict[str, Any] = {}
    async with http_client(app) as client:
        for market, mine in rows.items():
            buyer = token_for(app, market, mine.buyer)
            admin = token_for(app, market, mine.admin, admin=True)
            reads[f"{market} viewer"] = data(await gql(client, VIEWER, token=buyer))
            reads[f"{market} catalog"] = data(await gql(client, CATALOG, {"m": market}))
            reads[f"{market} admin"] = data(
                await gql(client, ADMIN_READS, {"m": market}, token=admin)
            )
            reads[f"{market} key"] = data(
                await gql(client, ADMIN_READS, {"m": market}, api_key=mine.api_key)
            )
    assert reads["kg viewer"]["viewer"]["transactions"]["edges"]
    return reads


def moves_to(settings: Settings, variables: dict[str, str]) -> list[StoreMove]:
    source = Topology.resolve(settings.markets.codes, settings.database_urls)
    return plan_moves(source, target_topology(source, settings.markets.codes, variables))


class Interrupt:
    """A reporter that cancels the running move right after the batch it names committed, as
    Ctrl-C would; remembers what each table started from."""

    def __init__(self, store: StoreKey | None = None, item: str = "", after: int = 0) -> None:
        self.store, self.item, self.after = store, item, after
        self.batches = 0
        self.started_with: dict[tuple[str, str], tuple[int, int]] = {}

    def started(self, store: StoreKey, item: str, total: int, done: int) -> None:
        self.started_with[str(store), item] = (total, done)

    def advanced(self, store: StoreKey, item: str, rows: int) -> None:
        if (store, item) == (self.store, self.item):
            self.batches += 1
            if self.batches == self.after:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()

    def finished(self, store: StoreKey, item: str) -> None:
        pass


async def count_in(url: str, schema: str, table: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(make_url(url)))
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}"."{table}"'))
    finally:
        await conn.close()


async def test_a_single_database_moves_to_a_database_per_store_interrupted_and_resumed(
    shared_stores: Databases, targets: dict[str, str], data_dir: Path
) -> None:
    before_app = build_app(shared_stores)
    rows = await populate(shared_stores, before_app)
    before = await api_reads(before_app, rows)
    moves = moves_to(shared_stores.settings, targets)
    assert [move.key for move in moves] == list(STORES)

    # Interrupted after the first committed batch of kg.app's products (3 rows, 2 a batch).
    interrupt = Interrupt(StoreKey("kg", "app"), "products", after=1)
    task = asyncio.create_task(copy_stores(moves, batch_rows=BATCH_ROWS, reporter=interrupt))
    with pytest.raises(asyncio.CancelledError):
        await task
    kg_auth, kg_app = moves[0].target, moves[1].target
    record = await read_record(kg_auth)
    assert record is not None and record.copied_at is not None
    record = await read_record(kg_app)
    assert record is not None and record.copied_at is None
    progress = {(p.table, p.phase): p for p in record.progress}
    assert (progress["products", "rows"].rows, progress["products", "rows"].done) == (2, False)
    assert await count_in(targets["KG_APP_DATABASE_URL"], "kg_app", "products") == 2
    assert await read_record(moves[2].target) is None  # us.auth: not started

    # Without --resume a started target is refused, and nothing changes.
    with pytest.raises(MoveError, match="--resume"):
        await copy_stores(moves, batch_rows=BATCH_ROWS)
    assert await count_in(targets["KG_APP_DATABASE_URL"], "kg_app", "products") == 2

    resumed = Interrupt()
    plans = await copy_stores(moves, resume=True, batch_rows=BATCH_ROWS, reporter=resumed)
    assert [plan.action for plan in plans] == [
        "already copied: verify",
        "resume: 2 of 7 tables copied",
        "nothing recorded: copy every table",
        "nothing recorded: copy every table",
    ]
    # kg.auth was not copied again; kg.app's products went on after the committed batch.
    assert resumed.started_with["kg.auth", "users"] == (3, 3)
    assert resumed.started_with["kg.auth", "refresh_tokens (links)"] == (2, 2)
    assert resumed.started_with["kg.app", "products"] == (3, 2)
    assert resumed.started_with["us.app", "products"] == (3, 0)

    checks = await verify_stores(moves)
    assert checks and all(check.matches for check in checks), [c for c in checks if not c.matches]
    tables = {(c.store, c.item) for c in checks}
    for key in STORES:
        for table in metadata_for(key.role).sorted_tables:
            assert (str(key), table.name) in tables
    assert ("kg.app", "sequence order_number_seq") in tables
    record = await read_record(kg_app)
    assert record is not None and record.verified_at is not None

    # The server on the new placement answers the same, and goes on writing.
    after_settings = make_settings(data_dir, targets)
    after_databases = databases_for(after_settings)
    try:
        after_app = build_app(after_databases)
        assert await api_reads(after_app, rows) == before
        async with http_client(after_app) as client:
            for market, mine in rows.items():
                # The order numbers go on from the source's sequence.
                shop = after_databases.store(market, "app")
                await add_cart_item(shop, mine.buyer.id, await _product_id(after_databases, market))
                token = token_for(after_app, market, mine.buyer)
                order = data(await gql(client, CHECKOUT, {"key": f"{market}-2"}, token=token))
                assert order["checkout"]["number"] == f"{market.upper()}-000002"
                # A refresh token of a moved chain still rotates.
                refreshed = data(await gql(client, REFRESH, {"t": mine.refresh_token}))
                assert (
                    refreshed["refreshToken"]["user"]["id"]
                    == (before[f"{market} viewer"]["viewer"]["id"])
                )
    finally:
        await after_databases.dispose()


async def _product_id(databases: Databases, market: str) -> uuid.UUID:
    async with databases.store(market, "app").connect() as conn:
        result = await conn.exec_driver_sql(
            f'SELECT id FROM "{market}_app".products ORDER BY id LIMIT 1'
        )
        product_id: uuid.UUID = result.scalar_one()
        return product_id


async def test_one_markets_stores_move_to_a_database_of_their_own(
    stores: Databases, postgres_url: URL, data_dir: Path
) -> None:
    """Separate databases → kg's two stores as two schemas of one new database; us stays."""
    before_app = build_app(stores)
    rows = await populate(stores, before_app)
    before = await api_reads(before_app, rows)
    name = f"{TEST_DB_PREFIX}_mv{uuid.uuid4().hex[:8]}_kg"
    target = {"KG_DATABASE_URL": url_text(postgres_url.set(database=name))}
    current = stores.settings.database_urls
    moves = moves_to(stores.settings, target)
    assert [str(move.key) for move in moves] == ["kg.auth", "kg.app"]
    # The per-store variables set now would win over KG_DATABASE_URL: say so.
    notes = switch_notes(current, target, moves)
    assert [note.split(":")[0] for note in notes] == ["kg.auth", "kg.app"]
    assert "KG_AUTH_DATABASE_URL (set now) would still place it" in notes[0]
    after_databases: Databases | None = None
    try:
        await copy_stores(moves, batch_rows=BATCH_ROWS)
        assert all(check.matches for check in await verify_stores(moves))
        after_urls = {k: v for k, v in current.items() if not k.startswith("KG_")} | target
        after_databases = databases_for(make_settings(data_dir, after_urls))
        assert await api_reads(build_app(after_databases), rows) == before
    finally:
        if after_databases is not None:
            await after_databases.dispose()
        await asyncpg_exec(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_target_with_rows_no_move_recorded_is_refused_even_with_resume(
    shared_stores: Databases, targets: dict[str, str], postgres_url: URL
) -> None:
    settings = shared_stores.settings
    await create_product(shared_stores.store("kg", "app"))
    moves = [m for m in moves_to(settings, targets) if m.key == StoreKey("kg", "app")]
    # Someone else's data in the target: a migrated store with a product.
    await asyncpg_exec(postgres_url, f'CREATE DATABASE "{moves[0].target.url.database}"')
    await migrate.upgrade(moves[0].target)
    await asyncpg_exec(
        moves[0].target.url,
        "INSERT INTO kg_app.products (id, sku, name, price_minor) "
        "VALUES (gen_random_uuid(), 'X-1', 'x', 1)",
    )
    for resume in (False, True):
        (plan,) = await inspect_moves(moves, resume=resume)
        assert plan.problem is not None
        assert "products" in plan.problem
        with pytest.raises(MoveError):
            await copy_stores(moves, resume=resume)
    assert await count_in(url_text(moves[0].target.url), "kg_app", "products") == 1


async def asyncpg_exec(url: URL, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --- the command ---------------------------------------------------------------------------------


async def invoke(*args: str) -> Result:
    return await run_command(move, *args)


@pytest.fixture
def shared_env(shared_stores: Databases, monkeypatch: pytest.MonkeyPatch) -> Databases:
    """The single-database placement, set in the environment the command reads."""
    for name, value in shared_stores.settings.database_urls.items():
        monkeypatch.setenv(name, value)
    return shared_stores


async def existing_databases(server: URL, names: list[str]) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname = ANY($1)", names)
        return {row["datname"] for row in rows}
    finally:
        await conn.close()


def target_args(targets: dict[str, str]) -> list[str]:
    return [arg for name, url in targets.items() for arg in ("--to", f"{name}={url}")]


async def test_dry_run_prints_the_plan_and_changes_nothing(
    shared_env: Databases, targets: dict[str, str], postgres_url: URL
) -> None:
    await populate(shared_env, build_app(shared_env))
    result = await invoke("--dry-run", *target_args(targets))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Dry run: nothing is changed." in out
    for key in STORES:
        database = f"{key.market}_{key.role}"
        assert f"{key}\n" in out
        assert f"schema {key.schema} ({key.market.upper()}_{key.role.upper()}_DATABASE_URL)" in out
        assert f"create database {TEST_DB_PREFIX}_mv" in out and database in out
    assert "schema kg_auth (DATABASE_URL)" in out
    assert "rows: users 3, api_keys 1, refresh_tokens 4 (8 in all)" in out
    assert (
        "rows: carts 3, orders 2, products 3, wallets 3, cart_items 2, order_items 3, "
        "wallet_transactions 2 (18 in all)"
    ) in out
    assert "Writes to the moved stores must stop" in out
    names = [url.rsplit("/", 1)[-1].split("?")[0] for url in targets.values()]
    assert await existing_databases(postgres_url, names) == set()


async def test_unreachable_target_is_refused_in_one_line_without_its_password(
    shared_env: Databases,
) -> None:
    secret = "pa55-not-shown"
    result = await invoke(
        "--dry-run", "--to", f"US_APP_DATABASE_URL=postgresql://mg:{secret}@127.0.0.1:1/x"
    )
    assert result.exit_code == 1
    assert "us.app" in result.stdout and "Staying where they are: kg.auth, kg.app, us.auth" in (
        result.stdout
    )
    assert "cannot reach the server" in result.stderr
    assert secret not in result.output


async def test_usage_and_configuration_errors(shared_env: Databases) -> None:
    assert move_command.DEFAULT_BATCH_ROWS == DEFAULT_BATCH_ROWS
    assert (await invoke()).exit_code == 2
    no_name = await invoke("--to", "postgresql://mg:pa55-not-shown@h/db")
    assert no_name.exit_code == 2 and "expected NAME=URL" in no_name.stderr
    assert "pa55-not-shown" not in no_name.output
    bad_name = await invoke("--to", "KG_AUTH_DATABSE_URL=postgresql://x@h/db")
    assert bad_name.exit_code == 2
    assert "KG_AUTH_DATABSE_URL" in bad_name.stderr
    url = shared_env.settings.database_urls["DATABASE_URL"]
    same = await invoke("--to", f"DATABASE_URL={url}")
    assert same.exit_code == 0 and "Nothing to move" in same.stdout
    not_moving = await invoke("--to", "KG_DATABASE_URL=postgresql://x@h/db", "--store", "us.app")
    assert not_moving.exit_code == 2 and "nothing to move" in not_moving.stderr


async def test_the_command_moves_refuses_a_second_time_and_reports_a_tampered_row(
    shared_env: Databases, targets: dict[str, str], tmp_path: Path
) -> None:
    await populate(shared_env, build_app(shared_env))
    env_file = tmp_path / "new.env"
    env_file.write_text(
        "# the server's environment after the move\nJWT_SECRET=x\n"
        + "".join(f"export {name}='{url}'\n" for name, url in targets.items()),
        encoding="utf-8",
    )
    moved = await invoke("--to-env", str(env_file), "--batch-rows", "2")
    assert moved.exit_code == 0, moved.output
    assert "Writes to the moved stores must stop" in moved.stderr
    assert "kg.app products" in moved.stderr  # a progress bar per table
    lines = moved.stdout.splitlines()
    assert any("kg.app" in line and "order_items" in line and "yes" in line for line in lines)
    assert not any(" NO " in line for line in lines)
    assert "Verified: 22 tables and sequences of 4 stores match." in moved.stdout

    again = await invoke("--to-env", str(env_file))
    assert again.exit_code == 1
    assert "is not empty" in again.stderr and "--resume" in again.stderr

    resumed = await invoke("--to-env", str(env_file), "--resume")
    assert resumed.exit_code == 0, resumed.output

    await asyncpg_exec(
        make_url(targets["KG_APP_DATABASE_URL"]),
        "UPDATE kg_app.products SET stock = stock + 1 "
        "WHERE id = (SELECT id FROM kg_app.products ORDER BY id LIMIT 1)",
    )
    tampered = await invoke("--to-env", str(env_file), "--verify-only")
    assert tampered.exit_code == 1
    mismatched = [line for line in tampered.stdout.splitlines() if " NO " in line]
    assert len(mismatched) == 1 and "kg.app" in mismatched[0] and "products" in mismatched[0]
    assert "MISMATCH in kg.app products" in tampered.stdout
