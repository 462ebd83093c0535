"""The benchmark's data set: deterministic, in both markets, written through the project's models.

    python -m bench.data [--users 10000] [--products 500] [--seed N] [--database-url URL]

Creates the benchmark database if it is missing, migrates every store to head
(`marketgraph.db.migrate.upgrade`), empties every table, then loads per market:
`--products` products (the demo catalog of `marketgraph.seed`, varied), and the
market's share of `--users` users (the demo names and phone numbers), each with
a cart of 0-5 items, a wallet, 4-6 wallet transactions (a GRANT, TOP_UPs, a
PAYMENT per wallet-paid order) and 2 orders of 1-3 items. The first user of
each market is an ADMIN.

Everything is a function of the seed: ids are UUIDv7 built from fixed
timestamps and seeded random bits, and `created_at` is set explicitly, so two
loads give byte-identical tables and byte-identical GraphQL answers.

Rows go in with COPY on the store's own asyncpg connection (taken from the
`Databases` engine, inside one transaction per store), with the column lists of
the SQLAlchemy tables; the order-number sequence is moved past the loaded
orders, and every table is vacuumed and analysed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from sqlalchemy import Table, text
from sqlalchemy.engine import URL

from bench.common import MARKETS, database_url, plain_url
from marketgraph.db import migrate
from marketgraph.db.databases import Databases, Store, prepare_topology
from marketgraph.db.embedded import ensure_databases
from marketgraph.db.models import metadata_for
from marketgraph.db.models.app import (
    Cart,
    CartItem,
    Order,
    OrderItem,
    OrderStatus,
    PaymentMethod,
    Product,
    Wallet,
    WalletTransaction,
    WalletTransactionKind,
)
from marketgraph.db.models.auth import User, UserType
from marketgraph.markets import Market, MarketRegistry
from marketgraph.resolvers.orders import format_order_number
from marketgraph.seed import demo_products, demo_users, locale_for
from marketgraph.settings import Settings

DEFAULT_SEED = 20_240_611
DEFAULT_USERS = 10_000
DEFAULT_PRODUCTS = 500
# Share of the users that live in KG; the rest are in US.
KG_SHARE = 0.6
BASE_TIME = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

_users = cast(Table, User.__table__)
_products = cast(Table, Product.__table__)
_carts = cast(Table, Cart.__table__)
_cart_items = cast(Table, CartItem.__table__)
_wallets = cast(Table, Wallet.__table__)
_transactions = cast(Table, WalletTransaction.__table__)
_orders = cast(Table, Order.__table__)
_order_items = cast(Table, OrderItem.__table__)


class Timeline:
    """Deterministic (id, created_at) pairs for one table: time moves on by `step` per row and
    the id is a UUIDv7 of that millisecond with seeded random bits, so ids sort like times."""

    def __init__(self, start: dt.datetime, step: dt.timedelta, rng: random.Random) -> None:
        self._next = start
        self._step = step
        self._rng = rng

    def next(self) -> tuple[uuid.UUID, dt.datetime]:
        at = self._next
        self._next += self._step
        return uuid7_at(at, self._rng), at


def uuid7_at(at: dt.datetime, rng: random.Random) -> uuid.UUID:
    """A UUIDv7 (RFC 9562) for the millisecond `at`, its random bits drawn from `rng`."""
    ms = int(at.timestamp() * 1000)
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    return uuid.UUID(int=value | rng.getrandbits(62))


@dataclass(slots=True)
class MarketRows:
    """A market's rows per table, as column-name dicts (every column given)."""

    auth: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    app: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def count(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in {**self.auth, **self.app}.items()}


def users_per_market(total: int) -> dict[str, int]:
    kg = round(total * KG_SHARE)
    return {"kg": kg, "us": total - kg}


def generate(
    market: Market, markets: MarketRegistry, users: int, products: int, seed: int
) -> MarketRows:
    """Every row of one market, the same for the same arguments."""
    rng = random.Random(f"{seed}:{market.code}")
    locale = locale_for(market)

    def timeline(days: int, step_seconds: int) -> Timeline:
        return Timeline(
            BASE_TIME + dt.timedelta(days=days), dt.timedelta(seconds=step_seconds), rng
        )

    product_clock = timeline(-60, 60)
    user_clock = timeline(0, 60)
    item_clock = timeline(60, 7)
    order_clock = timeline(90, 13)
    order_item_clock = timeline(90, 5)
    transaction_clock = timeline(120, 3)

    product_rows = []
    for row in demo_products(market, products):
        key, at = product_clock.next()
        product_rows.append({**row, "id": key, "created_at": at, "updated_at": at})
    catalog = [(p["id"], p["price_minor"]) for p in product_rows]

    user_rows, cart_rows, item_rows, wallet_rows = [], [], [], []
    order_rows, order_item_rows, transaction_rows = [], [], []
    order_number = top_up_number = 0
    for i, row in enumerate(demo_users(market, markets, users)):
        user_id, joined = user_clock.next()
        user_rows.append(
            {
                **row,
                "id": user_id,
                "password_hash": None,
                "user_type": (UserType.ADMIN if i == 0 else UserType.MEMBER).value,
                "preferences": orjson.dumps(
                    {"newsletter": rng.random() < 0.3, "theme": rng.choice(("light", "dark"))}
                ).decode(),
                "is_active": True,
                "last_login_at": None,
                "created_at": joined,
                "updated_at": joined,
            }
        )
        cart_id = uuid7_at(joined, rng)
        cart_rows.append(
            {"id": cart_id, "user_id": user_id, "created_at": joined, "updated_at": joined}
        )
        for product_id, _ in rng.sample(catalog, rng.randint(0, 5)):
            key, at = item_clock.next()
            item_rows.append(
                {
                    "id": key,
                    "cart_id": cart_id,
                    "product_id": product_id,
                    "quantity": rng.randint(1, 3),
                    "created_at": at,
                    "updated_at": at,
                }
            )

        # Two orders; wallet-paid ones are PAID (and a PAYMENT below), cash ones PLACED or
        # (one in ten) CANCELLED.
        payments: list[tuple[uuid.UUID, int]] = []
        for _ in range(2):
            order_id, placed = order_clock.next()
            total = 0
            for product_id, price in rng.sample(catalog, rng.randint(1, 3)):
                quantity = rng.randint(1, 3)
                total += price * quantity
                order_item_rows.append(
                    {
                        "id": order_item_clock.next()[0],
                        "order_id": order_id,
                        "product_id": product_id,
                        "quantity": quantity,
                        "unit_price_minor": price,
                    }
                )
            method = rng.choice((PaymentMethod.WALLET, PaymentMethod.CASH_ON_DELIVERY))
            if method == PaymentMethod.WALLET:
                status = OrderStatus.PAID
                payments.append((order_id, total))
            else:
                status = OrderStatus.CANCELLED if rng.random() < 0.1 else OrderStatus.PLACED
            order_number += 1
            order_rows.append(
                {
                    "id": order_id,
                    "number": format_order_number(market.code, order_number),
                    "user_id": user_id,
                    "status": status.value,
                    "payment_method": method.value,
                    "total_minor": total,
                    "idempotency_key": f"bench-{order_number}",
                    "created_at": placed,
                    "updated_at": placed,
                }
            )

        # 4-6 transactions: the starting GRANT (enough for every payment), TOP_UPs, PAYMENTs.
        wallet_id = uuid7_at(joined, rng)
        grant = locale.starting_balance_minor + sum(amount for _, amount in payments)
        moves: list[tuple[WalletTransactionKind, int, uuid.UUID | None]] = [
            (WalletTransactionKind.GRANT, grant, None)
        ]
        for _ in range(rng.randint(4, 6) - 1 - len(payments)):
            moves.append((WalletTransactionKind.TOP_UP, rng.randint(1, 50) * 1000, None))
        moves += [(WalletTransactionKind.PAYMENT, -amount, oid) for oid, amount in payments]
        for kind, amount, paid_order in moves:
            key, at = transaction_clock.next()
            external_id = None
            if kind == WalletTransactionKind.TOP_UP:
                top_up_number += 1
                external_id = f"bench-{market.code}-{top_up_number}"
            transaction_rows.append(
                {
                    "id": key,
                    "wallet_id": wallet_id,
                    "user_id": user_id,
                    "kind": kind.value,
                    "amount_minor": amount,
                    "external_id": external_id,
                    "order_id": paid_order,
                    "reason": locale.grant_reason if kind == WalletTransactionKind.GRANT else None,
                    "created_at": at,
                }
            )
        balance = sum(amount for _, amount, _ in moves)
        wallet_rows.append(
            {
                "id": wallet_id,
                "user_id": user_id,
                "balance_minor": balance,
                "created_at": joined,
                "updated_at": joined,
            }
        )

    return MarketRows(
        auth={"users": user_rows},
        # In foreign-key order.
        app={
            "products": product_rows,
            "carts": cart_rows,
            "cart_items": item_rows,
            "orders": order_rows,
            "order_items": order_item_rows,
            "wallets": wallet_rows,
            "wallet_transactions": transaction_rows,
        },
    )


_TABLES = {
    t.name: t
    for t in (
        _users,
        _products,
        _carts,
        _cart_items,
        _orders,
        _order_items,
        _wallets,
        _transactions,
    )
}


def _records(table: Table, rows: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as tuples in the table's column order; a missing column is a bug (KeyError)."""
    names = [c.name for c in table.c]
    return [tuple(row[name] for name in names) for row in rows]


async def write_store(store: Store, tables: dict[str, list[dict[str, Any]]]) -> None:
    """Empty every table of the store and COPY `tables` in, in one transaction."""
    schema = store.schema
    every = ", ".join(f'"{schema}"."{t.name}"' for t in metadata_for(store.key.role).sorted_tables)
    async with store.connect() as conn, conn.begin():
        await conn.execute(text(f"TRUNCATE {every} RESTART IDENTITY CASCADE"))
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        for name, rows in tables.items():
            table = _TABLES[name]
            await raw.copy_records_to_table(
                name,
                schema_name=schema,
                columns=[c.name for c in table.c],
                records=_records(table, rows),
            )
        if store.key.role == "app":
            # Checkout numbers orders from this sequence: start past the loaded ones.
            count = len(tables.get("orders", []))
            await conn.execute(
                text(f"SELECT setval('\"{schema}\".order_number_seq', :n, :called)"),
                {"n": max(count, 1), "called": count > 0},
            )
    # VACUUM cannot run in a transaction: on a connection that never began one. Vacuumed now,
    # the tables give autovacuum no reason to start in the middle of a measurement, and the
    # visibility map is set for index-only scans.
    async with store.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        for name in tables:
            await raw.execute(f'VACUUM (ANALYZE) "{schema}"."{name}"')


async def prepare(url: URL) -> Databases:
    """The benchmark database, created if missing and migrated to head in every store."""
    if url.database is None:
        raise SystemExit(f"{url.render_as_string()} names no database")
    await ensure_databases(url.set(database="postgres"), [url.database])
    settings = Settings.from_env(database_urls={"DATABASE_URL": plain_url(url)})
    topology = await prepare_topology(settings)
    for location in topology:
        await migrate.upgrade(location)
    return Databases(topology, settings)


async def load(url: URL, users: int, products: int, seed: int) -> dict[str, dict[str, int]]:
    """Load the data set into every market's stores; rows written per market and table."""
    databases = await prepare(url)
    markets = databases.settings.markets
    written: dict[str, dict[str, int]] = {}
    try:
        for code, count in users_per_market(users).items():
            market = markets.require(code)
            rows = generate(market, markets, count, products, seed)
            await write_store(databases.store(code, "auth"), rows.auth)
            await write_store(databases.store(code, "app"), rows.app)
            written[code] = rows.count()
    finally:
        await databases.dispose()
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.data", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--users", type=int, default=DEFAULT_USERS, help="users in all (60 %% KG, 40 %% US)"
    )
    parser.add_argument("--products", type=int, default=DEFAULT_PRODUCTS, help="per market")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: BENCH_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/marketgraph_bench",
    )
    args = parser.parse_args(argv)
    if args.users < 2 * len(MARKETS) or args.products < 5:
        parser.error("need at least 2 users per market and 5 products")
    url = database_url(args.database_url)
    if "bench" not in (url.database or ""):
        parser.error(f"refusing to empty {url.database!r}: the database name must contain 'bench'")
    started = time.perf_counter()
    written = asyncio.run(load(url, args.users, args.products, args.seed))
    for code, counts in written.items():
        print(f"{code}: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    print(
        f"loaded {url.render_as_string(hide_password=True)} (seed {args.seed}) "
        f"in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
