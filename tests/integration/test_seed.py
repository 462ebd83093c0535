"""Demo data: each market's rows land in its own stores only, and seeding is idempotent."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, table, text
from sqlalchemy.engine import URL

from marketgraph.cli import cli
from marketgraph.db.databases import Databases, Store
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.markets import detect_market
from marketgraph.seed import DEFAULT_PRODUCTS, DEFAULT_USERS, seed, seed_if_empty
from marketgraph.settings import Settings
from tests.conftest import TEST_DB_PREFIX, recreate_database, url_text


async def rows(store: Store, sql: str) -> list[Any]:
    """Rows of `sql`, where `{schema}` is the store's schema: the store read directly."""
    async with store.engine.connect() as conn:
        return list(await conn.execute(text(sql.format(schema=f'"{store.schema}"'))))


async def count(store: Store, table_name: str) -> int:
    """Rows in one of the store's tables, named with the store's schema explicitly."""
    async with store.engine.connect() as conn:
        query = select(func.count()).select_from(table(table_name, schema=store.schema))
        return int(await conn.scalar(query) or 0)


async def test_each_market_gets_its_rows_in_its_own_stores_only(stores: Databases) -> None:
    # 45 products: past the base catalog, so brand variants are written too.
    result = await seed(stores, users=7, products=45)

    markets = stores.settings.markets
    for market in markets:
        counts = result.by_market[market.code]
        assert (counts.products, counts.users, counts.carts, counts.wallets) == (45, 7, 7, 7)
        auth = stores.store(market.code, "auth")
        app = stores.store(market.code, "app")

        skus = [r.sku for r in await rows(app, "SELECT sku FROM {schema}.products ORDER BY sku")]
        assert skus == [f"{market.code.upper()}-{n:04d}" for n in range(1, 46)]
        users = await rows(auth, "SELECT id, phone, language FROM {schema}.users")
        assert len(users) == 7
        for user in users:
            assert detect_market(user.phone, markets)[0].code == market.code
            assert user.language == market.language
        # Carts and wallets belong to this market's users, one each.
        user_ids = {user.id for user in users}
        carts = await rows(app, "SELECT user_id FROM {schema}.carts")
        wallets = await rows(app, "SELECT id, user_id, balance_minor FROM {schema}.wallets")
        assert {c.user_id for c in carts} == user_ids
        assert {w.user_id for w in wallets} == user_ids
        # The starting balance is in the ledger: each wallet's GRANTs add up to its balance.
        ledger = {
            r.wallet_id: r.total
            for r in await rows(
                app,
                "SELECT wallet_id, sum(amount_minor) AS total FROM {schema}.wallet_transactions "
                "WHERE kind = 'GRANT' GROUP BY wallet_id",
            )
        }
        assert ledger == {w.id: w.balance_minor for w in wallets}

    kg_names = [
        r.name for r in await rows(stores.store("kg", "app"), "SELECT name FROM {schema}.products")
    ]
    us_names = [
        r.name for r in await rows(stores.store("us", "app"), "SELECT name FROM {schema}.products")
    ]
    assert "Чай чёрный 100 г" in kg_names
    assert all(name.isascii() for name in us_names)
    assert not any(name.isascii() for name in kg_names)
    # Prices are the market's minor units: whole som in tyiyn for KG, cents for US.
    kg_prices = await rows(stores.store("kg", "app"), "SELECT price_minor FROM {schema}.products")
    assert all(r.price_minor % 100 == 0 for r in kg_prices)
    kg_phones = {
        r.phone for r in await rows(stores.store("kg", "auth"), "SELECT phone FROM {schema}.users")
    }
    us_phones = {
        r.phone for r in await rows(stores.store("us", "auth"), "SELECT phone FROM {schema}.users")
    }
    assert all(p.startswith("+99670") for p in kg_phones)
    assert all(p.startswith("+1") for p in us_phones)


async def test_seeding_again_adds_only_what_is_missing(stores: Databases) -> None:
    await seed(stores, users=5, products=10)
    again = await seed(stores, users=5, products=10)
    total = again.total
    assert (total.products, total.users, total.carts, total.wallets) == (0, 0, 0, 0)

    more = await seed(stores, users=8, products=12)
    for market in stores.settings.markets:
        counts = more.by_market[market.code]
        assert (counts.products, counts.users, counts.carts, counts.wallets) == (2, 3, 3, 3)
        app = stores.store(market.code, "app")
        assert await count(app, "products") == 12
        assert await count(app, "wallet_transactions") == 8
        assert await count(stores.store(market.code, "auth"), "users") == 8


async def test_a_run_stopped_between_the_stores_is_finished_by_the_next(stores: Databases) -> None:
    await seed(stores, users=4, products=1)
    kg_app = stores.store("kg", "app")
    # As if the run had stopped after writing users to kg.auth but before their carts and wallets.
    async with kg_app.engine.begin() as conn:
        await conn.execute(text('DELETE FROM "kg_app".wallets'))
        await conn.execute(text('DELETE FROM "kg_app".carts'))

    result = await seed(stores, users=4, products=1)

    assert result.by_market["kg"].users == 0
    assert (result.by_market["kg"].carts, result.by_market["kg"].wallets) == (4, 4)
    assert (result.by_market["us"].carts, result.by_market["us"].wallets) == (0, 0)
    assert await count(kg_app, "carts") == 4


async def test_seed_if_empty_skips_a_non_empty_catalog(
    settings: Settings, stores: Databases
) -> None:
    us_app = stores.store("us", "app")
    async with us_app.engine.begin() as conn:
        await conn.execute(
            text(
                'INSERT INTO "us_app".products (id, sku, name, price_minor, stock) '
                "VALUES (gen_random_uuid(), 'OWN-1', 'Our own product', 100, 1)"
            )
        )

    assert await seed_if_empty(settings) is None
    assert await count(stores.store("kg", "app"), "products") == 0
    assert await count(us_app, "products") == 1
    assert await count(stores.store("kg", "auth"), "users") == 0


async def test_seed_if_empty_loads_the_defaults_into_an_empty_catalog(
    settings: Settings, stores: Databases
) -> None:
    result = await seed_if_empty(settings)

    assert result is not None
    for market in stores.settings.markets:
        assert await count(stores.store(market.code, "app"), "products") == DEFAULT_PRODUCTS
        assert await count(stores.store(market.code, "auth"), "users") == DEFAULT_USERS


def table_row(output: str, first_cell: str) -> list[str]:
    """The cells of the last table row of `output` that starts with `first_cell`."""
    rows = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]
    return [row for row in rows if row[0] == first_cell][-1]


async def invoke_seed(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> Result:
    """`marketgraph seed ARGS` in-process, configured only by `env`."""
    for name in list(os.environ):
        if "DATABASE_URL" in name.upper():
            monkeypatch.delenv(name)
    # The command runs its own event loop, so it gets a thread of its own.
    return await asyncio.to_thread(CliRunner().invoke, cli, ["seed", *args], env=env)


async def test_the_seed_command_reports_what_it_added(
    stores: Databases, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {**stores.settings.database_urls, "DATA_DIR": str(tmp_path)}

    first = await invoke_seed(monkeypatch, env, "--users", "3", "--products", "4")
    again = await invoke_seed(monkeypatch, env, "--users", "3", "--products", "4")

    assert first.exit_code == 0, first.output
    assert again.exit_code == 0, again.output
    for market in ("kg", "us"):
        # The table's row: market, products, users, carts, wallets added.
        assert table_row(first.output, market) == [market, "4", "3", "3", "3"]
        assert table_row(again.output, market) == [market, "0", "0", "0", "0"]
        assert await count(stores.store(market, "app"), "products") == 4
        assert await count(stores.store(market, "auth"), "users") == 3


async def test_the_seed_command_asks_for_migrations_first(
    postgres_url: URL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"{TEST_DB_PREFIX}_unmigrated"
    empty = await recreate_database(postgres_url, name)
    try:
        result = await invoke_seed(
            monkeypatch, {"DATABASE_URL": url_text(empty), "DATA_DIR": str(tmp_path)}
        )
    finally:
        conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    assert result.exit_code == 1
    assert "marketgraph db upgrade" in result.output
