"""Per-request DataLoaders: one batched `= ANY(:keys)` select per lookup per tick.

Concurrency rule: Strawberry resolves sibling fields concurrently and an
AsyncSession must never be shared by two coroutines, so every batch opens its
own connection from the store's engine for the one statement it runs
(`Store.connect()`), and no loader holds a connection between batches. The
batch functions themselves are plain `load_x(conn, keys)` over Core selects,
so the query planner can reuse them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiodataloader import DataLoader
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from marketgraph.db.databases import Store
from marketgraph.resolvers.accounts import load_users_by_id
from marketgraph.resolvers.cart import load_cart_items_by_cart, load_carts_by_user
from marketgraph.resolvers.catalog import load_products_by_id
from marketgraph.resolvers.orders import (
    load_order_items_by_order,
    load_orders_by_id,
    load_orders_by_user,
)
from marketgraph.resolvers.pagination import Page, PageKey
from marketgraph.resolvers.wallet import (
    load_transactions_by_id,
    load_transactions_by_user,
    load_wallets_by_user,
)

K = TypeVar("K")
V = TypeVar("V")
MaybeRow = Row[Any] | None


def _loader(
    store: Store, batch: Callable[[AsyncConnection, list[K]], Awaitable[list[V]]]
) -> DataLoader[K, V]:
    async def load(keys: list[K]) -> list[V]:
        async with store.connect() as conn:
            return await batch(conn, keys)

    return DataLoader(load)


@dataclass(frozen=True, slots=True)
class Loaders:
    """The loaders of one market's stores, for one request."""

    users_by_id: DataLoader[uuid.UUID, MaybeRow]
    products_by_id: DataLoader[uuid.UUID, MaybeRow]
    carts_by_user: DataLoader[uuid.UUID, MaybeRow]
    cart_items_by_cart: DataLoader[uuid.UUID, list[Row[Any]]]
    orders_by_id: DataLoader[uuid.UUID, MaybeRow]
    orders_by_user: DataLoader[PageKey, Page]
    order_items_by_order: DataLoader[uuid.UUID, list[Row[Any]]]
    wallets_by_user: DataLoader[uuid.UUID, MaybeRow]
    transactions_by_id: DataLoader[uuid.UUID, MaybeRow]
    transactions_by_user: DataLoader[PageKey, Page]


def build_loaders(auth: Store, app: Store) -> Loaders:
    return Loaders(
        users_by_id=_loader(auth, load_users_by_id),
        products_by_id=_loader(app, load_products_by_id),
        carts_by_user=_loader(app, load_carts_by_user),
        cart_items_by_cart=_loader(app, load_cart_items_by_cart),
        orders_by_id=_loader(app, load_orders_by_id),
        orders_by_user=_loader(app, load_orders_by_user),
        order_items_by_order=_loader(app, load_order_items_by_order),
        wallets_by_user=_loader(app, load_wallets_by_user),
        transactions_by_id=_loader(app, load_transactions_by_id),
        transactions_by_user=_loader(app, load_transactions_by_user),
    )
