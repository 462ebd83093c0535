"""The planner tests' world: a seeded data set in both markets, callers with their headers,
and a pair of apps on the same stores (planner on, planner off) answering the same request.

The data set is written through the factories and the models (no GraphQL), so both apps
read exactly the same rows: users with carts of 0–5 items, orders (one cancelled, one paid
by wallet), wallet transactions of every kind (TOP_UP with an external id, PAYMENT and
REFUND linked to orders), nested preferences, an admin per market, Cyrillic product names,
a product out of stock, null and non-null descriptions.

Every kind of caller the API knows is here, in both markets — anonymous, a member, an
admin user and an API key — because each sees a different share of the same rows: a member
its own cart and orders, an admin user every market's, an API key (admin, no user) only
its own market's. Every document is sent as each of them, with ids of both markets, so
each caller reads its own market's data and asks for the other market's (which only an
admin user may read; the others are refused or see null).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update
from starlette.applications import Starlette

from marketgraph.auth import api_keys
from marketgraph.db.databases import Databases
from marketgraph.db.models.app import (
    Cart,
    Order,
    OrderStatus,
    PaymentMethod,
    Wallet,
    WalletTransaction,
    WalletTransactionKind,
)
from marketgraph.db.models.auth import User, UserType
from marketgraph.db.models.base import new_id
from marketgraph.resolvers.pagination import encode_cursor
from tests.conftest import build_app
from tests.factories import (
    SqlCounter,
    add_cart_item,
    create_customer,
    create_order,
    create_product,
    create_user,
    gid,
    token_for,
)
from tests.helpers import http_client

MARKETS = ("kg", "us")
# Callers: anonymous with X-Market kg / us, and a member (token), an admin user (token with
# the admin role) and an API key (`Authorization: ApiKey mg_<market>_...`) of kg and of us.
CALLERS = (
    "anon-kg",
    "anon-us",
    "member-kg",
    "member-us",
    "admin-kg",
    "admin-us",
    "apikey-kg",
    "apikey-us",
)

PRODUCTS = {
    "kg": [
        ("TEA-001", "Чай зелёный", "Листовой, 100 г", 25000, 40),
        ("TEA-002", "Чай чёрный", None, 18000, 0),  # out of stock
        ("TEA-010", "Чайник стеклянный", "Объём 1 л", 120000, 7),
        ("CUP-001", "Кружка", None, 35050, 12),
        ("KUM-001", "Кумыс", None, 9900, 3),
        ("HNY-001", "Мёд горный", "Иссык-Кульский", 80000, 25),
    ],
    "us": [
        ("TEA-001", "Green tea", "Loose leaf, 100 g", 1250, 40),
        ("TEA-002", "Black tea", None, 999, 0),  # out of stock
        ("MUG-001", "Mug", None, 1500, 12),
        ("KET-001", "Kettle", "1 l glass", 4999, 5),
        ("RUS-001", "Пряник тульский", None, 725, 9),  # Cyrillic in the US catalog too
    ],
}

PREFERENCES: list[dict[str, Any]] = [
    {},
    {"notifications": {"sms": True, "email": False}, "theme": "dark"},
    {"notifications": {"sms": False}, "tags": ["чай", "vip"], "nested": {"deep": {"x": 1.5}}},
    {"theme": "light", "language": "ru", "nested": {"deep": {"x": 2, "y": None}}},
    {"notifications": {"sms": True}, "unicode": "привет 👋", "list": [1, [2, {"a": 3}]]},
]


@dataclass
class Seeded:
    """What the data set holds, as the ids and values the documents need."""

    ids: dict[str, list[str]] = field(default_factory=dict)  # "Product.kg" -> global ids
    phones: dict[str, list[str]] = field(default_factory=dict)  # market -> E.164 numbers
    cursors: list[str] = field(default_factory=list)
    members: dict[str, Any] = field(default_factory=dict)  # market -> the member caller's row
    admins: dict[str, Any] = field(default_factory=dict)  # market -> the admin's row
    api_keys: dict[str, str] = field(default_factory=dict)  # market -> a live key (secret)

    def add(self, type_name: str, market: str, key: uuid.UUID) -> str:
        value = gid(type_name, market, key)
        self.ids.setdefault(f"{type_name}.{market}", []).append(value)
        self.cursors.append(encode_cursor(key))
        return value

    def all_ids(self) -> list[str]:
        return [value for values in self.ids.values() for value in values]


async def _transaction(
    stores: Databases,
    market: str,
    user_id: uuid.UUID,
    kind: WalletTransactionKind,
    amount_minor: int,
    *,
    order_id: uuid.UUID | None = None,
    external_id: str | None = None,
) -> uuid.UUID:
    """A wallet transaction written through the models, moving the balance with it."""
    key = new_id()
    async with stores.store(market, "app").begin() as session:
        wallet_id = (
            await session.execute(select(Wallet.id).where(Wallet.user_id == user_id))
        ).scalar_one()
        await session.execute(
            update(Wallet)
            .where(Wallet.id == wallet_id)
            .values(balance_minor=Wallet.balance_minor + amount_minor)
        )
        await session.execute(
            insert(WalletTransaction).values(
                id=key,
                wallet_id=wallet_id,
                user_id=user_id,
                kind=kind,
                amount_minor=amount_minor,
                order_id=order_id,
                external_id=external_id,
                reason="seed",
            )
        )
    return key


async def seed(stores: Databases) -> Seeded:
    """The differential data set in both markets (deterministic shape, fresh keys)."""
    seeded = Seeded()
    for m_index, market in enumerate(MARKETS):
        app_store = stores.store(market, "app")
        products = []
        for sku, name, description, price, stock in PRODUCTS[market]:
            row = await create_product(
                app_store,
                sku=sku,
                name=name,
                description=description,
                price_minor=price,
                stock=stock,
            )
            products.append(row)
            seeded.add("Product", market, row.id)
        admin = await create_customer(
            stores,
            market,
            user_type=UserType.ADMIN,
            email=f"admin@{market}.example",
            first_name="Админ" if market == "kg" else "Ada",
        )
        seeded.admins[market] = admin
        seeded.add("User", market, admin.id)
        # Written by the function `createApiKey` calls (the key is shown only once).
        created = await api_keys.create(
            stores.store(market, "auth"), f"differential {market}", created_by=admin.id
        )
        seeded.api_keys[market] = created.key
        seeded.phones.setdefault(market, []).append(admin.phone)
        for n in range(6):
            user = await create_customer(
                stores,
                market,
                email=f"user{n}@{market}.example" if n % 3 else None,
                first_name=["Айгуль", "Bob", None, "Эмиль", "Zoë", "Nurlan"][n],
                last_name=["Токтогулова", None, "Smith", None, "Иванова", "O'Neil"][n],
                timezone=["Asia/Bishkek", None, "America/New_York", None, "UTC", None][n],
                language=["ru", "en", None, "ky", None, "en-US"][n],
                preferences=PREFERENCES[n % len(PREFERENCES)],
                is_active=n != 4,
                user_type=[UserType.MEMBER, UserType.INDIVIDUAL, UserType.GUEST][n % 3],
            )
            if n % 2:
                async with stores.store(market, "auth").begin() as session:
                    await session.execute(
                        update(User)
                        .where(User.id == user.id)
                        .values(
                            last_login_at=dt.datetime(2025, 3, n + 1, 12, 30, 5, 123456, dt.UTC)
                        )
                    )
            seeded.add("User", market, user.id)
            seeded.phones[market].append(user.phone)
            if n == 0:
                seeded.members[market] = user
            # Carts of 0..5 items (the member callers, n = 0, hold 3).
            for k in range((n + 3) % 6):
                product = products[(k + n + m_index) % len(products)]
                item = await add_cart_item(app_store, user.id, product.id, quantity=k + 1)
                seeded.add("CartItem", market, item.id)
            await _transaction(
                stores,
                market,
                user.id,
                WalletTransactionKind.TOP_UP,
                50000 + n * 1000,
                external_id=f"cs_{market}_{n}_{uuid.uuid4().hex[:8]}",
            )
            await _transaction(stores, market, user.id, WalletTransactionKind.GRANT, 700 + n)
            if n >= 4:
                continue
            for o in range(3 if n == 0 else 1):
                lines = [
                    (
                        products[(o + j) % len(products)].id,
                        j + 1,
                        products[(o + j) % len(products)].price_minor,
                    )
                    for j in range(1 + (o + n) % 3)
                ]
                status = [OrderStatus.PAID, OrderStatus.CANCELLED, OrderStatus.PLACED][o % 3]
                method = (
                    PaymentMethod.WALLET
                    if status != OrderStatus.PLACED
                    else PaymentMethod.CASH_ON_DELIVERY
                )
                order = await create_order(
                    app_store, market, user.id, lines, status=status, payment_method=method
                )
                seeded.add("Order", market, order.id)
                if method == PaymentMethod.WALLET:
                    await _transaction(
                        stores,
                        market,
                        user.id,
                        WalletTransactionKind.PAYMENT,
                        -min(order.total_minor, 20000),
                        order_id=order.id,
                    )
                if status == OrderStatus.CANCELLED:
                    await _transaction(
                        stores,
                        market,
                        user.id,
                        WalletTransactionKind.REFUND,
                        min(order.total_minor, 20000),
                        order_id=order.id,
                    )
        # A user whose sign-up stopped before the cart and wallet were written.
        orphan = await create_user(stores.store(market, "auth"), phone=None, email=None)
        seeded.add("User", market, orphan.id)
        async with app_store.connect() as conn:
            for (key,) in (
                await conn.execute(select(WalletTransaction.id).order_by(WalletTransaction.id))
            ).all():
                seeded.add("WalletTransaction", market, key)
            for (key,) in (await conn.execute(select(Cart.id).order_by(Cart.id))).all():
                seeded.add("Cart", market, key)
            orders = (await conn.execute(select(Order.id))).all()
        assert len(orders) == 6
    return seeded


@pytest.fixture
async def seeded(stores: Databases) -> Seeded:
    return await seed(stores)


@dataclass
class Pair:
    """Two apps on the same stores: the planner on and the planner off."""

    on: Starlette
    off: Starlette
    on_client: httpx.AsyncClient
    off_client: httpx.AsyncClient
    headers: dict[str, dict[str, str]]  # caller -> headers
    counter: SqlCounter  # statements per store, of whichever app sent them

    def planned(self) -> float:
        return outcome(self.on, "planned")


def outcome(app: Starlette, name: str) -> float:
    """marketgraph_planner_requests_total{outcome=name} of `app` so far."""
    value = app.state.metrics.registry.get_sample_value(
        "marketgraph_planner_requests_total", {"outcome": name}
    )
    return float(value or 0.0)


def caller_headers(app: Starlette, seeded: Seeded) -> dict[str, dict[str, str]]:
    """The headers of each of `CALLERS`: what a client of that kind sends."""

    def bearer(market: str, user: Any, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(app, market, user, admin=admin)}"}

    headers: dict[str, dict[str, str]] = {}
    for market in MARKETS:
        headers[f"anon-{market}"] = {"X-Market": market}
        headers[f"member-{market}"] = bearer(market, seeded.members[market])
        headers[f"admin-{market}"] = bearer(market, seeded.admins[market], admin=True)
        headers[f"apikey-{market}"] = {"Authorization": f"ApiKey {seeded.api_keys[market]}"}
    assert set(headers) == set(CALLERS)
    return headers


@pytest.fixture
async def pair(app_factory: Callable[..., Starlette], seeded: Seeded) -> AsyncIterator[Pair]:
    on = app_factory(query_planner="on")
    off = app_factory(query_planner="off")
    async with counted(on) as counter, http_client(on) as on_client, http_client(off) as off_client:
        yield Pair(on, off, on_client, off_client, caller_headers(on, seeded), counter)


@pytest.fixture
async def one_database(shared_stores: Databases) -> AsyncIterator[tuple[Pair, Seeded]]:
    """The pair and the data set in single-DATABASE_URL mode: four stores, one engine."""
    seeded = await seed(shared_stores)
    on = build_app(shared_stores, query_planner="on")
    off = build_app(shared_stores, query_planner="off")
    async with counted(on) as counter, http_client(on) as on_client, http_client(off) as off_client:
        headers = caller_headers(on, seeded)
        yield Pair(on, off, on_client, off_client, headers, counter), seeded


@asynccontextmanager
async def counted(app: Starlette) -> AsyncIterator[SqlCounter]:
    """A statement counter on the stores both apps of a pair share."""
    counter = SqlCounter(app.state.services.databases)
    counter.install()
    try:
        yield counter
    finally:
        counter.remove()
