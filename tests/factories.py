"""Async factories for the commerce tests (each commits and returns its row), access tokens
for those rows, and `sql_counter`: statements per store, counted with an engine event hook."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Row, func, insert, select, update
from starlette.applications import Starlette

from marketgraph.auth.principal import ADMIN, MEMBER
from marketgraph.db.databases import Databases, Store
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
from marketgraph.db.models.base import new_id
from marketgraph.ids import encode_id
from marketgraph.metrics import count_statements
from marketgraph.resolvers.accounts import USER_COLUMNS
from tests.helpers import http_client

_serial = itertools.count(1)
# Prefixes the tests never write by hand, so factory phones cannot collide with theirs.
PHONE_PREFIX = {"kg": "+996779", "us": "+1212555"}
WEBHOOK_SECRET = "whsec-test"


def next_serial() -> int:
    return next(_serial)


def phone_for(market: str, n: int) -> str:
    """A distinct E.164 number of `market` (KG +996 779 xxx xxx; US +1 212 555 xxxx)."""
    digits = 6 if market == "kg" else 4
    return f"{PHONE_PREFIX[market]}{n % 10**digits:0{digits}d}"


async def create_product(store: Store, **overrides: Any) -> Row[Any]:
    """A product row in the app store `store`."""
    n = next_serial()
    values: dict[str, Any] = {
        "id": new_id(),
        "sku": f"T-{n:05d}",
        "name": f"Product {n}",
        "description": None,
        "price_minor": 1000,
        "stock": 100,
        **overrides,
    }
    async with store.begin() as session:
        return (
            await session.execute(insert(Product).values(**values).returning(*Product.__table__.c))
        ).one()


async def create_user(auth: Store, **overrides: Any) -> Row[Any]:
    """A user row in the auth store `auth` (no cart or wallet: see `create_customer`)."""
    values: dict[str, Any] = {"id": new_id(), "user_type": UserType.MEMBER, **overrides}
    async with auth.begin() as session:
        return (await session.execute(insert(User).values(**values).returning(*USER_COLUMNS))).one()


async def create_cart_and_wallet(app: Store, user_id: uuid.UUID, balance_minor: int = 0) -> None:
    async with app.begin() as session:
        await session.execute(insert(Cart).values(id=new_id(), user_id=user_id))
        await session.execute(
            insert(Wallet).values(id=new_id(), user_id=user_id, balance_minor=balance_minor)
        )


async def create_customer(
    stores: Databases, market: str = "kg", *, balance_minor: int = 0, **overrides: Any
) -> Row[Any]:
    """A user of `market` with an empty cart and a wallet holding `balance_minor`."""
    overrides.setdefault("phone", phone_for(market, next_serial()))
    user = await create_user(stores.store(market, "auth"), **overrides)
    await create_cart_and_wallet(stores.store(market, "app"), user.id, balance_minor)
    return user


async def add_cart_item(
    app: Store, user_id: uuid.UUID, product_id: uuid.UUID, quantity: int = 1
) -> Row[Any]:
    """An item in the user's (existing) cart."""
    async with app.begin() as session:
        cart_id = (
            await session.execute(select(Cart.id).where(Cart.user_id == user_id))
        ).scalar_one()
        return (
            await session.execute(
                insert(CartItem)
                .values(id=new_id(), cart_id=cart_id, product_id=product_id, quantity=quantity)
                .returning(*CartItem.__table__.c)
            )
        ).one()


async def create_order(
    app: Store,
    market: str,
    user_id: uuid.UUID,
    lines: list[tuple[uuid.UUID, int, int]],
    *,
    status: OrderStatus = OrderStatus.PLACED,
    payment_method: PaymentMethod = PaymentMethod.CASH_ON_DELIVERY,
) -> Row[Any]:
    """An order with `lines` of (product id, quantity, unit price), written directly."""
    order_id = new_id()
    async with app.begin() as session:
        order = (
            await session.execute(
                insert(Order)
                .values(
                    id=order_id,
                    number=f"{market.upper()}-T{next_serial():06d}",
                    user_id=user_id,
                    status=status,
                    payment_method=payment_method,
                    total_minor=sum(q * p for _, q, p in lines),
                    idempotency_key=f"factory-{order_id}",
                )
                .returning(*Order.__table__.c)
            )
        ).one()
        await session.execute(
            insert(OrderItem),
            [
                {
                    "id": new_id(),
                    "order_id": order_id,
                    "product_id": product_id,
                    "quantity": quantity,
                    "unit_price_minor": price,
                }
                for product_id, quantity, price in lines
            ],
        )
    return order


async def create_transaction(
    app: Store,
    user_id: uuid.UUID,
    amount_minor: int,
    kind: WalletTransactionKind = WalletTransactionKind.GRANT,
) -> Row[Any]:
    """A wallet transaction that moves the balance with it."""
    async with app.begin() as session:
        wallet_id = (
            await session.execute(select(Wallet.id).where(Wallet.user_id == user_id))
        ).scalar_one()
        await session.execute(
            update(Wallet)
            .where(Wallet.id == wallet_id)
            .values(balance_minor=Wallet.balance_minor + amount_minor)
        )
        return (
            await session.execute(
                insert(WalletTransaction)
                .values(
                    id=new_id(),
                    wallet_id=wallet_id,
                    user_id=user_id,
                    kind=kind,
                    amount_minor=amount_minor,
                    reason="factory",
                )
                .returning(*WalletTransaction.__table__.c)
            )
        ).one()


# --- reading rows back, straight from a store -------------------------------------------------


async def stock_of(app: Store, product_id: uuid.UUID) -> int:
    async with app.connect() as conn:
        stock: int = (
            await conn.execute(select(Product.stock).where(Product.id == product_id))
        ).scalar_one()
        return stock


async def balance_of(app: Store, user_id: uuid.UUID) -> int:
    async with app.connect() as conn:
        balance: int = (
            await conn.execute(select(Wallet.balance_minor).where(Wallet.user_id == user_id))
        ).scalar_one()
        return balance


async def cart_lines(app: Store, user_id: uuid.UUID) -> dict[uuid.UUID, int]:
    """The user's cart as {product id: quantity}."""
    async with app.connect() as conn:
        rows = (
            await conn.execute(
                select(CartItem.product_id, CartItem.quantity)
                .join(Cart, Cart.id == CartItem.cart_id)
                .where(Cart.user_id == user_id)
            )
        ).all()
    return {row.product_id: row.quantity for row in rows}


async def transactions_of(app: Store, user_id: uuid.UUID) -> list[Row[Any]]:
    async with app.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(*WalletTransaction.__table__.c)
                    .where(WalletTransaction.user_id == user_id)
                    .order_by(WalletTransaction.id)
                )
            ).all()
        )


async def count_rows(store: Store, model: Any, *where: Any) -> int:
    async with store.connect() as conn:
        count: int = (
            await conn.execute(select(func.count()).select_from(model).where(*where))
        ).scalar_one()
        return count


# --- tokens ------------------------------------------------------------------------------------


def token_for(app: Starlette, market: str, user: Row[Any], *, admin: bool = False) -> str:
    """An access token for `user` of `market`, signed by the app's token service (what a
    sign-in would issue)."""
    roles = [ADMIN, MEMBER] if admin else [MEMBER]
    token: str = app.state.services.tokens.issue(
        encode_id("User", market, user.id), market, roles
    ).token
    return token


def gid(type_name: str, market: str, key: uuid.UUID) -> str:
    return encode_id(type_name, market, key)


# --- statement counting ------------------------------------------------------------------------


class SqlCounter:
    """Statements sent to each store ("kg.app", ...), whichever path sent them (loaders
    through SQLAlchemy, or the planner on the raw driver). Counts only inside `counting()`."""

    def __init__(self, databases: Databases) -> None:
        self.counts: Counter[str] = Counter()
        self.statements: list[tuple[str, str]] = []
        self._active = False
        self._databases = databases

    def _observe(self, store: str, statement: str) -> None:
        if self._active:
            self.counts[store] += 1
            self.statements.append((store, statement))

    def install(self) -> None:
        count_statements(self._databases)
        self._databases.statement_observers.append(self._observe)

    def remove(self) -> None:
        self._databases.statement_observers.remove(self._observe)

    @contextmanager
    def counting(self) -> Iterator[Counter[str]]:
        """Count the statements of the block; yields the (live) per-store counter."""
        self.counts = Counter()
        self.statements = []
        self._active = True
        try:
            yield self.counts
        finally:
            self._active = False


# Fixtures are registered under `name=` so a test module can import them (for pytest to find)
# without the import clashing with the parameter of the same name.
@pytest.fixture(name="sql_counter")
def sql_counter_fixture(stores: Databases) -> Iterator[SqlCounter]:
    counter = SqlCounter(stores)
    counter.install()
    try:
        yield counter
    finally:
        counter.remove()


# --- an app and a client on the test stores ----------------------------------------------------


@pytest.fixture(name="app")
def app_fixture(app_factory: Callable[..., Starlette]) -> Starlette:
    """The app on the session's stores, with a payment webhook secret."""
    return app_factory(payment_webhook_secret=WEBHOOK_SECRET)


@pytest.fixture(name="http")
async def http_fixture(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(app) as client:
        yield client
