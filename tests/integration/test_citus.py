"""Citus on paper: the distribution plan of the app and auth stores, held to Citus's rules.

`CITUS_PLAN` is the one place the plan lives (the README's Citus section mirrors it):
every table of both roles, in the order the tables must be distributed (a referenced table
before the tables referencing it). `CITUS_READY` is the schema change the plan needs
before `create_distributed_table` accepts a table (Citus wants every primary key, unique
constraint and foreign key between distributed tables to include the distribution
column). The statements below `CITUS_READY` are the reads and writes of
`marketgraph/resolvers` as they would become: each write reaches one user's shard only.

The tests:
- the plan places every table of the models (no database);
- on the suite's plain PostgreSQL: the migrated stores take `CITUS_READY` (rows already
  there are backfilled), the result obeys the rules Citus checks in
  `create_distributed_table` (read from the catalog), and the statements run;
- on a real Citus coordinator (TEST_CITUS_URL, else skipped): a fresh database with the
  extension, both stores migrated to head, `CITUS_READY`, every table distributed per the
  plan and checked in `citus_tables`; then the same statements plus the app's own read
  paths (the loaders and the admin figures through GraphQL), and a probe of the reads
  expected to need a rewrite first (the query planner's fused statement, keyset pages).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Row,
    Table,
    Uuid,
    and_,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError

from marketgraph.db import migrate
from marketgraph.db.databases import Databases, Store
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.models import metadata_for
from marketgraph.db.models.app import (
    Cart,
    CartItem,
    Order,
    OrderStatus,
    PaymentMethod,
    Product,
    Wallet,
    WalletTransaction,
    WalletTransactionKind,
    order_number_seq,
)
from marketgraph.db.models.auth import User
from marketgraph.db.models.base import new_id
from marketgraph.db.topology import Topology
from marketgraph.resolvers.accounts import ensure_cart_and_wallet
from marketgraph.resolvers.admin import user_by_phone_statement
from marketgraph.resolvers.cart import CART_COLUMNS, CART_ITEM_COLUMNS, MAX_QUANTITY, lock_cart
from marketgraph.resolvers.orders import ORDER_COLUMNS, _existing_order, format_order_number
from marketgraph.resolvers.statements import many_per_key, one_per_key
from marketgraph.resolvers.wallet import TRANSACTION_COLUMNS, lock_wallet
from marketgraph.settings import ROLES, Role, Settings
from tests.conftest import (
    TEST_DB_PREFIX,
    build_app,
    databases_for,
    drop_databases,
    make_settings,
    recreate_database,
    url_text,
)
from tests.factories import (
    add_cart_item,
    create_customer,
    create_order,
    create_product,
    create_user,
    phone_for,
    token_for,
)

# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a table's rows live on Citus.

    - `distributed`: hash-sharded by `column`; `colocate_with` names the table whose shards
      it shares (None: the first of its store's co-location group);
    - `reference`: one shard, copied to every node (joins with it stay on the node);
    - `local`: an ordinary table on the coordinator, as on plain PostgreSQL.
    """

    kind: Literal["distributed", "reference", "local"]
    column: str | None = None
    colocate_with: str | None = None


# One market's store of each role; in distribution order (referenced tables first).
CITUS_PLAN: dict[Role, dict[str, Placement]] = {
    "app": {
        "products": Placement("reference"),
        "carts": Placement("distributed", "user_id"),
        "cart_items": Placement("distributed", "user_id", colocate_with="carts"),
        "orders": Placement("distributed", "user_id", colocate_with="carts"),
        "order_items": Placement("distributed", "user_id", colocate_with="carts"),
        "wallets": Placement("distributed", "user_id", colocate_with="carts"),
        "wallet_transactions": Placement("distributed", "user_id", colocate_with="carts"),
    },
    # Identity stays unsharded: its lookups (phone, email, token hash, key prefix) are
    # global and held unique; see the README for the lookup-table design if it must grow.
    "auth": {
        "users": Placement("local"),
        "refresh_tokens": Placement("local"),
        "api_keys": Placement("local"),
    },
}

# The schema change the plan needs, run in a store's schema (search_path). Plain
# PostgreSQL takes it too: it would ship as an ordinary app-branch migration, and only the
# distribution itself (`distribute`) is Citus's.
CITUS_READY: dict[Role, tuple[str, ...]] = {
    "app": (
        # Every per-user row names its user: the child tables get the distribution column.
        "ALTER TABLE cart_items ADD COLUMN user_id uuid",
        "UPDATE cart_items SET user_id = carts.user_id FROM carts "
        "WHERE carts.id = cart_items.cart_id",
        "ALTER TABLE cart_items ALTER COLUMN user_id SET NOT NULL",
        "ALTER TABLE order_items ADD COLUMN user_id uuid",
        "UPDATE order_items SET user_id = orders.user_id FROM orders "
        "WHERE orders.id = order_items.order_id",
        "ALTER TABLE order_items ALTER COLUMN user_id SET NOT NULL",
        # Foreign keys between per-user tables go while their keys change...
        "ALTER TABLE cart_items DROP CONSTRAINT fk_cart_items_cart_id_carts",
        "ALTER TABLE order_items DROP CONSTRAINT fk_order_items_order_id_orders",
        "ALTER TABLE wallet_transactions DROP CONSTRAINT fk_wallet_transactions_wallet_id_wallets",
        "ALTER TABLE wallet_transactions DROP CONSTRAINT fk_wallet_transactions_order_id_orders",
        # ...primary keys and unique constraints take user_id in...
        "ALTER TABLE carts DROP CONSTRAINT pk_carts, "
        "ADD CONSTRAINT pk_carts PRIMARY KEY (user_id, id)",
        "ALTER TABLE cart_items DROP CONSTRAINT pk_cart_items, "
        "ADD CONSTRAINT pk_cart_items PRIMARY KEY (user_id, id)",
        "ALTER TABLE cart_items DROP CONSTRAINT uq_cart_items_cart_id_product_id, "
        "ADD CONSTRAINT uq_cart_items_user_id_cart_id_product_id "
        "UNIQUE (user_id, cart_id, product_id)",
        "ALTER TABLE orders DROP CONSTRAINT pk_orders, "
        "ADD CONSTRAINT pk_orders PRIMARY KEY (user_id, id)",
        # Order numbers stay unique by their sequence; the index can only hold it per user.
        "ALTER TABLE orders DROP CONSTRAINT uq_orders_number, "
        "ADD CONSTRAINT uq_orders_user_id_number UNIQUE (user_id, number)",
        "ALTER TABLE order_items DROP CONSTRAINT pk_order_items, "
        "ADD CONSTRAINT pk_order_items PRIMARY KEY (user_id, id)",
        "ALTER TABLE wallets DROP CONSTRAINT pk_wallets, "
        "ADD CONSTRAINT pk_wallets PRIMARY KEY (user_id, id)",
        "ALTER TABLE wallet_transactions DROP CONSTRAINT pk_wallet_transactions, "
        "ADD CONSTRAINT pk_wallet_transactions PRIMARY KEY (user_id, id)",
        # A provider's event credits once per user (its event names the user it credits).
        "DROP INDEX uq_wallet_transactions_external_id",
        "CREATE UNIQUE INDEX uq_wallet_transactions_user_id_external_id "
        "ON wallet_transactions (user_id, external_id) WHERE external_id IS NOT NULL",
        # The (user_id, id) primary keys serve what these served.
        "DROP INDEX ix_orders_user_id_id",
        "DROP INDEX ix_wallet_transactions_user_id_id",
        # ...and come back over (user_id, ...). No SET NULL when the key holds the
        # distribution column: erasure detaches a ledger from its wallet itself, and
        # orders are never deleted.
        "ALTER TABLE cart_items ADD CONSTRAINT fk_cart_items_user_id_carts "
        "FOREIGN KEY (user_id, cart_id) REFERENCES carts (user_id, id) ON DELETE CASCADE",
        "ALTER TABLE order_items ADD CONSTRAINT fk_order_items_user_id_orders "
        "FOREIGN KEY (user_id, order_id) REFERENCES orders (user_id, id) ON DELETE CASCADE",
        "ALTER TABLE wallet_transactions ADD CONSTRAINT fk_wallet_transactions_user_id_wallets "
        "FOREIGN KEY (user_id, wallet_id) REFERENCES wallets (user_id, id)",
        "ALTER TABLE wallet_transactions ADD CONSTRAINT fk_wallet_transactions_user_id_orders "
        "FOREIGN KEY (user_id, order_id) REFERENCES orders (user_id, id)",
    ),
    "auth": (),
}


def quoted(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'


async def make_citus_ready(conn: asyncpg.Connection, schema: str, role: Role) -> None:
    """Run `CITUS_READY[role]` in `schema`, in one transaction."""
    async with conn.transaction():
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for statement in CITUS_READY[role]:
            await conn.execute(statement)


async def distribute(conn: asyncpg.Connection, schema: str, role: Role) -> None:
    """Distribute a store's tables per `CITUS_PLAN`, in its order; each store of the app
    role is a co-location group of its own.

    The foreign keys between its tables are dropped first and added back after, as Citus's
    documentation advises when the order alone does not do: otherwise making `products` a
    reference table would turn the still local tables referencing it (and those they
    reference) into Citus local tables, which distributed tables may not reference."""
    keys = await conn.fetch(
        "SELECT c.conrelid::regclass::text AS table, c.conname AS name, "
        "pg_get_constraintdef(c.oid) AS definition "
        "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE c.contype = 'f' AND n.nspname = $1 ORDER BY c.conname",
        schema,
    )
    for key in keys:
        await conn.execute(f'ALTER TABLE {key["table"]} DROP CONSTRAINT "{key["name"]}"')
    for table, placement in CITUS_PLAN[role].items():
        name = quoted(schema, table)
        if placement.kind == "reference":
            await conn.execute("SELECT create_reference_table($1::text::regclass)", name)
        elif placement.kind == "distributed":
            with_ = quoted(schema, placement.colocate_with) if placement.colocate_with else "none"
            await conn.execute(
                "SELECT create_distributed_table($1::text::regclass, $2::text, "
                "colocate_with => $3::text)",
                name,
                placement.column,
                with_,
            )
    for key in keys:
        await conn.execute(
            f'ALTER TABLE {key["table"]} ADD CONSTRAINT "{key["name"]}" {key["definition"]}'
        )


# --- the statements, as they would become ----------------------------------------------------

# The child tables as CITUS_READY leaves them (the models do not know their user_id).
_ready = MetaData()
CART_ITEMS = Table(
    "cart_items",
    _ready,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, primary_key=True),
    Column("cart_id", Uuid),
    Column("product_id", Uuid),
    Column("quantity", Integer),
    Column("updated_at", DateTime(timezone=True)),
)
ORDER_ITEMS = Table(
    "order_items",
    _ready,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, primary_key=True),
    Column("order_id", Uuid),
    Column("product_id", Uuid),
    Column("quantity", Integer),
    Column("unit_price_minor", BigInteger),
)


async def add_to_cart(app: Store, user_id: uuid.UUID, product_id: uuid.UUID, qty: int) -> None:
    """resolvers/cart.add_to_cart: the item row carries user_id, its upsert targets the
    unique (user_id, cart_id, product_id)."""
    async with app.begin() as session:
        cart_id = await lock_cart(session, user_id)  # unchanged: a one-shard upsert and lock
        assert await session.scalar(select(Product.id).where(Product.id == product_id))
        await session.execute(
            pg_insert(CART_ITEMS)
            .values(
                id=new_id(), user_id=user_id, cart_id=cart_id, product_id=product_id, quantity=qty
            )
            .on_conflict_do_update(
                index_elements=["user_id", "cart_id", "product_id"],
                set_={
                    "quantity": func.least(CART_ITEMS.c.quantity + qty, MAX_QUANTITY),
                    "updated_at": func.now(),
                },
            )
        )


def cart_statement(user_id: uuid.UUID) -> Any:
    """A user's cart with its lines and their products in one statement, as a planner for
    Citus would fuse it: each distributed table filtered by the same user_id (one shard,
    so Citus routes the whole statement to one node), the reference table joined there."""
    return (
        select(
            CART_ITEMS.c.id,
            CART_ITEMS.c.quantity,
            Product.id.label("product_id"),
            Product.name,
            Product.price_minor,
        )
        .select_from(Cart)
        .join(
            CART_ITEMS,
            and_(CART_ITEMS.c.user_id == Cart.user_id, CART_ITEMS.c.cart_id == Cart.id),
        )
        .join(Product, Product.id == CART_ITEMS.c.product_id)
        .where(Cart.user_id == user_id, CART_ITEMS.c.user_id == user_id)
        .order_by(CART_ITEMS.c.id)
    )


async def credit(
    app: Store, user_id: uuid.UUID, amount: int, external_id: str | None
) -> Row[Any] | None:
    """resolvers/wallet.credit: the upsert's arbiter is (user_id, external_id), the balance
    update names the user, so every statement reaches one shard."""
    async with app.begin() as session:
        await session.execute(
            pg_insert(Wallet).values(id=new_id(), user_id=user_id).on_conflict_do_nothing()
        )
        wallet_id = (
            await session.execute(select(Wallet.id).where(Wallet.user_id == user_id))
        ).scalar_one()
        row = (
            await session.execute(
                pg_insert(WalletTransaction)
                .values(
                    id=new_id(),
                    wallet_id=wallet_id,
                    user_id=user_id,
                    kind=WalletTransactionKind.TOP_UP,
                    amount_minor=amount,
                    external_id=external_id,
                )
                .on_conflict_do_nothing(
                    index_elements=[WalletTransaction.user_id, WalletTransaction.external_id],
                    index_where=text("external_id IS NOT NULL"),
                )
                .returning(*TRANSACTION_COLUMNS)
            )
        ).one_or_none()
        if row is not None:
            await session.execute(
                update(Wallet)
                .where(Wallet.user_id == user_id, Wallet.id == wallet_id)
                .values(balance_minor=Wallet.balance_minor + amount, updated_at=func.now())
            )
        return row


async def checkout(
    app: Store, market: str, user_id: uuid.UUID, key: str, payment: PaymentMethod
) -> Row[Any]:
    """resolvers/orders.checkout, in the same lock order. Every statement on a distributed
    table names the user: a multi-shard (parallel) one before the stock update would make
    Citus refuse that update of the reference table in the same transaction."""
    async with app.begin() as session:
        cart_id = await lock_cart(session, user_id)
        existing = await _existing_order(session, user_id, key)  # unchanged: by (user, key)
        if existing is not None:
            return existing
        items = (
            await session.execute(
                select(CART_ITEMS.c.product_id, CART_ITEMS.c.quantity)
                .where(CART_ITEMS.c.user_id == user_id, CART_ITEMS.c.cart_id == cart_id)
                .order_by(CART_ITEMS.c.product_id)
            )
        ).all()
        assert items, "the cart is empty"
        products = {
            row.id: row
            for row in (
                await session.execute(
                    select(Product.id, Product.price_minor, Product.stock)
                    .where(Product.id.in_([item.product_id for item in items]))
                    .order_by(Product.id)
                    .with_for_update()
                )
            ).all()
        }
        assert all(products[i.product_id].stock >= i.quantity for i in items), "out of stock"
        total = sum(products[i.product_id].price_minor * i.quantity for i in items)
        for item in items:
            await session.execute(
                update(Product)
                .where(Product.id == item.product_id)
                .values(stock=Product.stock - item.quantity, updated_at=func.now())
            )
        sequence = (await session.execute(select(order_number_seq.next_value()))).scalar_one()
        order_id = new_id()
        paid = payment == PaymentMethod.WALLET
        await session.execute(
            insert(Order).values(
                id=order_id,
                number=format_order_number(market, sequence),
                user_id=user_id,
                status=OrderStatus.PAID if paid else OrderStatus.PLACED,
                payment_method=payment,
                total_minor=total,
                idempotency_key=key,
            )
        )
        await session.execute(
            insert(ORDER_ITEMS),
            [
                {
                    "id": new_id(),
                    "user_id": user_id,
                    "order_id": order_id,
                    "product_id": item.product_id,
                    "quantity": item.quantity,
                    "unit_price_minor": products[item.product_id].price_minor,
                }
                for item in items
            ],
        )
        if paid:
            wallet = await lock_wallet(session, user_id)  # unchanged: by user_id
            assert wallet.balance_minor >= total, "insufficient funds"
            await session.execute(
                update(Wallet)
                .where(Wallet.user_id == user_id, Wallet.id == wallet.id)
                .values(balance_minor=Wallet.balance_minor - total, updated_at=func.now())
            )
            await session.execute(
                insert(WalletTransaction).values(
                    id=new_id(),
                    wallet_id=wallet.id,
                    user_id=user_id,
                    kind=WalletTransactionKind.PAYMENT,
                    amount_minor=-total,
                    order_id=order_id,
                )
            )
        await session.execute(
            delete(CART_ITEMS).where(
                CART_ITEMS.c.user_id == user_id, CART_ITEMS.c.cart_id == cart_id
            )
        )
        return (
            await session.execute(
                select(*ORDER_COLUMNS).where(Order.user_id == user_id, Order.id == order_id)
            )
        ).one()


@dataclass(frozen=True, slots=True)
class Shopper:
    user: Row[Any]
    products: tuple[Row[Any], Row[Any]]
    order: Row[Any]


async def shop(app: Store, auth: Store, market: str) -> Shopper:
    """Sign up, fill a cart, read it (fused and by the loaders' statements), top up twice
    with one event, check out from the wallet, replay the checkout: asserting each step."""
    user = await create_user(auth, phone=phone_for(market, int(uuid.uuid4().int % 10**6)))
    await ensure_cart_and_wallet(app, user.id)  # unchanged: what sign-in writes
    a = await create_product(app, price_minor=1500, stock=5)
    b = await create_product(app, price_minor=700, stock=3)
    await add_to_cart(app, user.id, a.id, 2)
    await add_to_cart(app, user.id, b.id, 1)
    await add_to_cart(app, user.id, a.id, 1)

    async with app.connect() as conn:
        lines = (await conn.execute(cart_statement(user.id))).all()
        assert {(r.product_id, r.name, r.quantity) for r in lines} == {
            (a.id, a.name, 3),
            (b.id, b.name, 1),
        }
        # The loaders' batches, unchanged: `= ANY(:keys)` on one table each (on Citus a
        # one-shard or an all-shards select, a lookup on the reference table).
        [cart] = await one_per_key(conn, CART_COLUMNS, Cart.user_id, [user.id])
        assert cart is not None
        [items] = await many_per_key(
            conn, CART_ITEM_COLUMNS, CartItem.cart_id, CartItem.id, [cart.id]
        )
        assert sorted(i.quantity for i in items) == [1, 3]
        found = await one_per_key(conn, (Product.id, Product.name), Product.id, [a.id, b.id])
        assert [p.name for p in found if p is not None] == [a.name, b.name]

    event = f"evt-{uuid.uuid4()}"
    top_up = await credit(app, user.id, 10_000, event)
    assert top_up is not None and top_up.amount_minor == 10_000
    assert await credit(app, user.id, 10_000, event) is None  # the same event: credited once

    order = await checkout(app, market, user.id, "checkout-1", PaymentMethod.WALLET)
    assert (order.status, order.total_minor) == (OrderStatus.PAID, 3 * 1500 + 700)
    assert order.number.startswith(f"{market.upper()}-")
    replay = await checkout(app, market, user.id, "checkout-1", PaymentMethod.WALLET)
    assert replay.id == order.id

    async with app.connect() as conn:
        assert (await conn.execute(cart_statement(user.id))).all() == []
        balance = await conn.scalar(select(Wallet.balance_minor).where(Wallet.user_id == user.id))
        assert balance == 10_000 - order.total_minor
        stocks = dict(
            (
                await conn.execute(
                    select(Product.id, Product.stock).where(Product.id.in_([a.id, b.id]))
                )
            ).all()
        )
        assert stocks == {a.id: 2, b.id: 2}
        ledger = (
            await conn.execute(
                select(
                    WalletTransaction.kind,
                    WalletTransaction.amount_minor,
                    WalletTransaction.order_id,
                )
                .where(WalletTransaction.user_id == user.id)
                .order_by(WalletTransaction.id)
            )
        ).all()
        assert [tuple(r) for r in ledger] == [
            (WalletTransactionKind.TOP_UP, 10_000, None),
            (WalletTransactionKind.PAYMENT, -order.total_minor, order.id),
        ]
        lines = (
            await conn.execute(
                select(ORDER_ITEMS.c.product_id, ORDER_ITEMS.c.quantity).where(
                    ORDER_ITEMS.c.user_id == user.id, ORDER_ITEMS.c.order_id == order.id
                )
            )
        ).all()
        assert dict(lines) == {a.id: 3, b.id: 1}
    async with auth.connect() as conn:  # the auth store (local on Citus): a lookup by phone
        assert (
            await conn.execute(user_by_phone_statement((User.id,)), {"phone": user.phone})
        ).one().id == user.id
    return Shopper(user, (a, b), order)


# --- Citus's rules, read from the catalog -------------------------------------------------


def colocation_root(role: Role, table: str) -> str:
    placement = CITUS_PLAN[role][table]
    return (
        table if placement.colocate_with is None else colocation_root(role, placement.colocate_with)
    )


FOREIGN_KEYS = """
SELECT c.conname, src.relname AS src, dst.relname AS dst,
       c.confdeltype::text AS on_delete, c.confupdtype::text AS on_update,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(att, n)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.att
             ORDER BY k.n) AS src_columns,
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(att, n)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.att
             ORDER BY k.n) AS dst_columns
FROM pg_constraint c
JOIN pg_class src ON src.oid = c.conrelid
JOIN pg_class dst ON dst.oid = c.confrelid
JOIN pg_namespace n ON n.oid = src.relnamespace
WHERE c.contype = 'f' AND n.nspname = $1
ORDER BY c.conname
"""

UNIQUE_INDEXES = """
SELECT i.indexrelid::regclass::text AS index,
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) k(att)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att) AS columns
FROM pg_index i
WHERE i.indrelid = $1::regclass AND i.indisunique
"""


async def citus_rule_violations(conn: asyncpg.Connection, schema: str, role: Role) -> list[str]:
    """What `create_distributed_table`/`create_reference_table` would refuse in a store's
    schema under `CITUS_PLAN` (the checks of Citus's commands/foreign_constraint.c and its
    unique-index check), as sentences; none when the plan can be applied."""
    plan = CITUS_PLAN[role]
    problems: list[str] = []

    def kind(table: str) -> str:
        return plan[table].kind if table in plan else "local"  # alembic_version

    for table, placement in plan.items():
        if placement.kind != "distributed":
            continue
        assert placement.column is not None
        not_null = await conn.fetchval(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2",
            quoted(schema, table),
            placement.column,
        )
        if not_null is not True:
            problems.append(f"{table}.{placement.column} is missing or nullable")
        for index in await conn.fetch(UNIQUE_INDEXES, quoted(schema, table)):
            if placement.column not in index["columns"]:
                problems.append(f"unique {index['index']} lacks {table}.{placement.column}")
    for fk in await conn.fetch(FOREIGN_KEYS, schema):
        src, dst, name = fk["src"], fk["dst"], fk["conname"]
        if kind(src) != "distributed":
            if kind(dst) == "distributed" or (kind(src) == "reference") != (
                kind(dst) == "reference"
            ):
                problems.append(f"{name}: a {kind(src)} table may not reference a {kind(dst)} one")
            continue
        if kind(dst) == "local":
            problems.append(f"{name}: a distributed table may not reference a local one")
            continue
        column = plan[src].column
        holds_key = column in fk["src_columns"]
        if holds_key and (fk["on_delete"] in "nd" or fk["on_update"] in "ndc"):
            problems.append(f"{name}: SET NULL/SET DEFAULT/ON UPDATE CASCADE over {column}")
        if kind(dst) == "distributed":
            if colocation_root(role, src) != colocation_root(role, dst):
                problems.append(f"{name}: {src} and {dst} are not co-located")
            position = fk["src_columns"].index(column) if holds_key else -1
            if position < 0 or fk["dst_columns"][position] != plan[dst].column:
                problems.append(f"{name}: not over the distribution column on both sides")
    return problems


# --- tests -------------------------------------------------------------------------------


def test_the_plan_places_every_table_after_the_tables_it_references() -> None:
    for role in ROLES:
        metadata = metadata_for(role)
        assert set(CITUS_PLAN[role]) == set(metadata.tables), f"place every {role} table"
        order = list(CITUS_PLAN[role])
        for name, table in metadata.tables.items():
            for fk in table.foreign_keys:
                target = fk.column.table.name
                assert order.index(target) <= order.index(name), f"{name} before {target}"
            placement = CITUS_PLAN[role][name]
            if placement.kind == "distributed":
                added = f"ALTER TABLE {name} ADD COLUMN {placement.column} "
                assert placement.column in {c.name for c in table.columns} or any(
                    s.startswith(added) for s in CITUS_READY[role]
                ), f"{name}.{placement.column}: neither a column nor added"
            else:
                assert placement.column is None and placement.colocate_with is None


async def legacy_rows(databases: Databases) -> tuple[uuid.UUID, uuid.UUID]:
    """A customer with a cart item and an order of one line, written as the code writes them
    today (no user_id on the item rows): CITUS_READY must backfill them."""
    app = databases.store("kg", "app")
    user = await create_customer(databases, "kg")
    product = await create_product(app)
    await add_cart_item(app, user.id, product.id, 2)
    await create_order(app, "kg", user.id, [(product.id, 1, product.price_minor)])
    return user.id, product.id


async def test_the_citus_ready_schema_obeys_citus_rules_on_plain_postgresql(
    postgres_url: URL, tmp_path: Path
) -> None:
    name = f"{TEST_DB_PREFIX}_citus_ready"
    url = await recreate_database(postgres_url, name)
    settings = make_settings(tmp_path, {"DATABASE_URL": url_text(url)})
    topology = Topology.resolve(settings.markets.codes, settings.database_urls)
    databases = databases_for(settings)
    try:
        for location in topology:
            await migrate.upgrade(location)
        user_id, product_id = await legacy_rows(databases)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            for location in topology:
                await make_citus_ready(conn, location.schema, location.key.role)
            for location in topology:
                problems = await citus_rule_violations(conn, location.schema, location.key.role)
                assert problems == [], location.schema
            for table in ("cart_items", "order_items"):
                owners = await conn.fetch(f"SELECT DISTINCT user_id FROM kg_app.{table}")
                assert [r["user_id"] for r in owners] == [user_id], table
        finally:
            await conn.close()
        app, auth = databases.store("kg", "app"), databases.store("kg", "auth")
        # Today's insert names no user on the item row: refused, so the code has to change.
        with pytest.raises(IntegrityError, match="user_id"):
            await add_cart_item(app, user_id, product_id)
        await shop(app, auth, "kg")
    finally:
        await databases.dispose()
        await drop_databases(postgres_url, [name])


# --- on a real Citus coordinator -----------------------------------------------------------

CITUS_URL = os.environ.get("TEST_CITUS_URL")
on_citus = pytest.mark.skipif(
    not CITUS_URL,
    reason="TEST_CITUS_URL is not set (a Citus coordinator's maintenance-database URL, "
    "e.g. postgresql://postgres@127.0.0.1:5432/postgres)",
)
SHARD_COUNT = 4  # per table, for a quick test; Citus's default is 32


async def create_citus_database(server: URL, name: str) -> list[tuple[str, int]]:
    """`name` as a Citus database of its own (Citus's "Creating a New Database"): created
    with the extension on the coordinator and on each worker the server's maintenance
    database lists, the workers registered in it. Returns the workers (none: single node,
    where the coordinator holds the shards). The workers are reached under the names the
    coordinator knows them by, with the coordinator URL's credentials."""
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        try:
            nodes = await conn.fetch(
                "SELECT nodename, nodeport, groupid FROM pg_dist_node "
                "WHERE noderole = 'primary' AND isactive"
            )
        except asyncpg.UndefinedTableError:  # no citus in the maintenance database
            nodes = []
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    workers = [(n["nodename"], n["nodeport"]) for n in nodes if n["groupid"] != 0]
    for host, port in workers:
        await _ensure_worker_database(server.set(host=host, port=port), name)
    conn = await asyncpg.connect(asyncpg_dsn(server.set(database=name)))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        if workers:
            coordinator = next(
                ((n["nodename"], n["nodeport"]) for n in nodes if n["groupid"] == 0), None
            )
            host, port = coordinator or (server.host or "localhost", server.port or 5432)
            await conn.execute("SELECT citus_set_coordinator_host($1, $2)", host, port)
            for host, port in workers:
                await conn.execute("SELECT citus_add_node($1, $2)", host, port)
    finally:
        await conn.close()
    return workers


async def _ensure_worker_database(worker: URL, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(worker))
    try:
        # Citus 12.2+ may have created it already (citus.enable_create_database_propagation).
        if not await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(asyncpg_dsn(worker.set(database=name)))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
    finally:
        await conn.close()


async def drop_citus_database(server: URL, name: str, workers: list[tuple[str, int]]) -> None:
    for url in [server, *(server.set(host=h, port=p) for h, p in workers)]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@dataclass(frozen=True, slots=True)
class CitusStores:
    settings: Settings
    databases: Databases
    url: URL


@pytest.fixture(scope="module")
async def citus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CitusStores]:
    """A fresh Citus database holding the four stores (one DATABASE_URL), migrated to head,
    made Citus-ready and distributed per the plan."""
    assert CITUS_URL is not None
    server = make_url(CITUS_URL).set(drivername="postgresql+asyncpg")
    name = f"mg_citus_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    workers = await create_citus_database(server, name)
    url = server.set(database=name)
    settings = make_settings(tmp_path_factory.mktemp("citus"), {"DATABASE_URL": url_text(url)})
    databases = databases_for(settings)
    try:
        topology = Topology.resolve(settings.markets.codes, settings.database_urls)
        for location in topology:
            await migrate.upgrade(location)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(f"SET citus.shard_count TO {SHARD_COUNT}")
            for location in topology:
                await make_citus_ready(conn, location.schema, location.key.role)
                await distribute(conn, location.schema, location.key.role)
        finally:
            await conn.close()
        yield CitusStores(settings, databases, url)
    finally:
        await databases.dispose()
        await drop_citus_database(server, name, workers)


@on_citus
async def test_every_table_is_placed_as_planned(citus: CitusStores) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(citus.url))
    try:
        rows = await conn.fetch(
            "SELECT n.nspname AS schema, c.relname AS table, t.citus_table_type AS kind, "
            "t.distribution_column AS column, t.colocation_id, t.shard_count "
            "FROM citus_tables t JOIN pg_class c ON c.oid = t.table_name "
            "JOIN pg_namespace n ON n.oid = c.relnamespace"
        )
    finally:
        await conn.close()
    placed = {(r["schema"], r["table"]): r for r in rows}
    groups: dict[str, set[int]] = {}
    for location in Topology.resolve(citus.settings.markets.codes, citus.settings.database_urls):
        for table, placement in CITUS_PLAN[location.key.role].items():
            row = placed.get((location.schema, table))
            if placement.kind == "local":
                assert row is None, f"{location.schema}.{table} is local"
                continue
            assert row is not None, f"{location.schema}.{table} is not a Citus table"
            assert row["kind"] == placement.kind
            if placement.kind == "distributed":
                assert row["column"] == placement.column
                assert row["shard_count"] == SHARD_COUNT
                groups.setdefault(location.schema, set()).add(row["colocation_id"])
    # One co-location group per app store: a user's rows of every table share a node.
    assert all(len(ids) == 1 for ids in groups.values()), groups
    assert len({next(iter(ids)) for ids in groups.values()}) == len(groups)


CART_QUERY = "{ viewer { cart { items { quantity product { name } } } } }"
ORDERS_QUERY = (
    "{ viewer { orders(first: 5) { edges { node { number items { quantity product { name } } } } }"
    " } }"
)


STATS_QUERY = (
    "{ marketStats { market { code } users orders revenue { amountMinor }"
    " walletBalances { amountMinor } } }"
)


async def post(app: Any, query: str, token: str) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post(
            "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
        )
    body: dict[str, Any] = response.json()
    return body


@on_citus
async def test_a_user_shops_and_the_app_reads_back_on_citus(citus: CitusStores) -> None:
    app, auth = citus.databases.store("kg", "app"), citus.databases.store("kg", "auth")
    shopper = await shop(app, auth, "kg")
    b = shopper.products[1]
    web = build_app(citus.databases, query_planner="off")
    # The app's own read path without the planner: the loaders' one-table batches.
    await add_to_cart(app, shopper.user.id, b.id, 2)
    body = await post(web, CART_QUERY, token_for(web, "kg", shopper.user))
    assert "errors" not in body, body
    assert body["data"]["viewer"]["cart"]["items"] == [{"quantity": 2, "product": {"name": b.name}}]
    # Across every shard, unchanged: the admin figures (counts and sums of each market).
    body = await post(web, STATS_QUERY, token_for(web, "kg", shopper.user, admin=True))
    assert "errors" not in body, body
    [kg] = [m for m in body["data"]["marketStats"] if m["market"]["code"] == "kg"]
    assert kg["orders"] >= 1 and kg["revenue"]["amountMinor"] >= shopper.order.total_minor
    assert kg["users"] >= 1


@on_citus
async def test_the_fused_and_paged_reads_on_citus(citus: CitusStores) -> None:
    """The reads the README expects Citus to refuse until they are rewritten (the query
    planner's fused statement: `unnest` of keys with correlated subqueries; the loaders'
    pages: a LATERAL join over `unnest`): XFAIL says which, and passes once all run."""
    app, auth = citus.databases.store("kg", "app"), citus.databases.store("kg", "auth")
    shopper = await shop(app, auth, "kg")
    refused = []
    answers = {}
    for planner in ("off", "on"):
        web = build_app(citus.databases, query_planner=planner)
        token = token_for(web, "kg", shopper.user)
        for label, query in (("cart", CART_QUERY), ("orders", ORDERS_QUERY)):
            body = await post(web, query, token)
            if "errors" in body:
                refused.append(
                    f"{label} with the planner {planner}: {body['errors'][0]['message']}"
                )
            else:
                answers[(label, planner)] = body["data"]
    for label in ("cart", "orders"):
        if (label, "off") in answers and (label, "on") in answers:
            assert answers[(label, "off")] == answers[(label, "on")]
    orders = answers.get(("orders", "off")) or answers.get(("orders", "on"))
    if orders is not None:
        [edge] = orders["viewer"]["orders"]["edges"]
        assert edge["node"]["number"] == shopper.order.number
    if refused:
        pytest.xfail("; ".join(refused))
