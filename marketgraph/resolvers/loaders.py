"""Per-request DataLoaders of the hand-written roots: one batched `= ANY(:keys)` select per
lookup per tick. (The lookups below the roots are the read specs' own: `reads.derive`.)

Concurrency rule: Strawberry resolves sibling fields concurrently and a connection must
never be used by two coroutines at once, so a batch reaches its store through
`RequestContext.reading`: in a query, the request's one connection per store, inside one
REPEATABLE READ transaction, taking turns under a lock (one snapshot per store, proven by
tests/concurrency/test_cart_snapshot.py); in a mutation, a connection of its own per
batch, seeing what the writes committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiodataloader import DataLoader
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from marketgraph.db.databases import Store
from marketgraph.resolvers.accounts import load_users_by_id
from marketgraph.resolvers.catalog import load_products_by_id
from marketgraph.resolvers.orders import load_orders_by_id
from marketgraph.resolvers.wallet import load_transactions_by_id

# How a batch reaches its store: `RequestContext.reading`.
Reading = Callable[[Store], AbstractAsyncContextManager[AsyncConnection]]
K = TypeVar("K")
V = TypeVar("V")
MaybeRow = Row[Any] | None


def _loader(
    store: Store,
    batch: Callable[[AsyncConnection, list[K]], Awaitable[list[V]]],
    reading: Reading,
) -> DataLoader[K, V]:
    async def load(keys: list[K]) -> list[V]:
        async with reading(store) as conn:
            return await batch(conn, keys)

    return DataLoader(load)


@dataclass(frozen=True, slots=True)
class Loaders:
    """The loaders of one market's stores that the hand-written roots use (`viewer`, `node`,
    `product`, `order`), for one request; the lookups below them are the read specs' own
    (`reads.derive`)."""

    users_by_id: DataLoader[uuid.UUID, MaybeRow]
    products_by_id: DataLoader[uuid.UUID, MaybeRow]
    orders_by_id: DataLoader[uuid.UUID, MaybeRow]
    transactions_by_id: DataLoader[uuid.UUID, MaybeRow]


def build_loaders(auth: Store, app: Store, reading: Reading) -> Loaders:
    return Loaders(
        users_by_id=_loader(auth, load_users_by_id, reading),
        products_by_id=_loader(app, load_products_by_id, reading),
        orders_by_id=_loader(app, load_orders_by_id, reading),
        transactions_by_id=_loader(app, load_transactions_by_id, reading),
    )
