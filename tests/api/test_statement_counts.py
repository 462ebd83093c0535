"""Statements per operation depend on its shape, never on how many rows it returns: counted per
store with a `before_cursor_execute` hook, for the nested list fields of `users` and `viewer`."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from sqlalchemy import insert
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import Cart, CartItem, Wallet, WalletTransaction
from marketgraph.db.models.auth import User
from marketgraph.db.models.base import new_id
from tests.conftest import TEST_QUERY_PLANNER
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    SqlCounter,
    add_cart_item,
    app_fixture,
    create_customer,
    create_order,
    create_product,
    http_fixture,
    sql_counter_fixture,
    token_for,
)
from tests.helpers import data, gql

PLANNED = TEST_QUERY_PLANNER == "on"
USERS = """
query ($first: Int) {
  users(market: "kg", first: $first) {
    edges {
      node {
        id phone
        cart { items { quantity product { name } } }
        wallet { balance { amountMinor } }
        transactions(first: 5) { edges { node { amount { amountMinor } } } }
      }
    }
  }
}
"""
VIEWER_ORDERS = """
query ($first: Int) {
  viewer { orders(first: $first) { edges { node { number items { product { name } } } } } }
}
"""


async def seed_users(stores: Databases, count: int) -> None:
    """`count` KG users, each with a cart of 1-3 items, a wallet and 1-6 transactions
    (in bulk: one statement per table)."""
    app_store = stores.store("kg", "app")
    products = [await create_product(app_store, name=f"Товар {n}") for n in range(5)]
    users = [{"id": new_id(), "phone": f"+996555{n:06d}"} for n in range(count)]
    carts = [{"id": new_id(), "user_id": u["id"]} for u in users]
    wallets = [{"id": new_id(), "user_id": u["id"], "balance_minor": 0} for u in users]
    items = [
        {"id": new_id(), "cart_id": cart["id"], "product_id": products[k].id, "quantity": k + 1}
        for n, cart in enumerate(carts)
        for k in range(1 + n % 3)
    ]
    transactions = [
        {
            "id": new_id(),
            "wallet_id": wallet["id"],
            "user_id": wallet["user_id"],
            "kind": "GRANT",
            "amount_minor": 100 * (k + 1),
        }
        for n, wallet in enumerate(wallets)
        for k in range(1 + n % 6)
    ]
    async with stores.store("kg", "auth").begin() as session:
        await session.execute(insert(User), users)
    async with app_store.begin() as session:
        await session.execute(insert(Cart), carts)
        await session.execute(insert(Wallet), wallets)
        await session.execute(insert(CartItem), items)
        await session.execute(insert(WalletTransaction), transactions)


async def count(
    sql_counter: SqlCounter,
    http: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any],
    token: str,
) -> tuple[Counter[str], dict[str, Any]]:
    """The statements per store of one run of `query` (after a warm-up run), and its data."""
    data(await gql(http, query, variables, token=token))
    with sql_counter.counting() as counts:
        body = data(await gql(http, query, variables, token=token))
    return Counter(counts), body


async def test_users_with_nested_lists_cost_the_same_for_10_and_50(
    app: Starlette, http: httpx.AsyncClient, stores: Databases, sql_counter: SqlCounter
) -> None:
    await seed_users(stores, 60)
    admin = await create_customer(stores, "kg")
    token = token_for(app, "kg", admin, admin=True)

    ten, ten_body = await count(sql_counter, http, USERS, {"first": 10}, token)
    fifty, fifty_body = await count(sql_counter, http, USERS, {"first": 50}, token)

    print(f"\nusers(first: 10) statements per store: {dict(ten)}")
    print(f"users(first: 50) statements per store: {dict(fifty)}")
    assert len(ten_body["users"]["edges"]) == 10
    edges = fifty_body["users"]["edges"]
    assert len(edges) == 50
    # The data is really there: every nested list was filled.
    assert all(e["node"]["cart"]["items"] for e in edges)
    assert all(e["node"]["transactions"]["edges"] for e in edges)
    assert {len(e["node"]["transactions"]["edges"]) for e in edges} == {1, 2, 3, 4, 5}
    assert sum(e["node"]["wallet"]["balance"]["amountMinor"] for e in edges) == 0

    assert ten == fifty, sql_counter.statements
    if PLANNED:  # users; then one statement for every lookup of the app store
        assert ten == Counter({"kg.auth": 1, "kg.app": 1})
    else:  # users; then one batched statement per lookup: carts, items, products, wallets,
        # transactions
        assert ten == Counter({"kg.auth": 1, "kg.app": 5})


async def test_viewer_orders_with_items_cost_the_same_for_2_and_10_orders(
    app: Starlette, http: httpx.AsyncClient, stores: Databases, sql_counter: SqlCounter
) -> None:
    app_store = stores.store("kg", "app")
    products = [await create_product(app_store, name=f"Товар {n}") for n in range(3)]
    few = await create_customer(stores, "kg")
    many = await create_customer(stores, "kg")
    for n in range(2):
        await create_order(app_store, "kg", few.id, [(products[n].id, 1, 100)])
    for n in range(10):
        lines = [(p.id, 1, 100) for p in products[: 1 + n % 3]]
        await create_order(app_store, "kg", many.id, lines)

    two, two_body = await count(
        sql_counter, http, VIEWER_ORDERS, {"first": 10}, token_for(app, "kg", few)
    )
    ten, ten_body = await count(
        sql_counter, http, VIEWER_ORDERS, {"first": 10}, token_for(app, "kg", many)
    )

    print(f"\nviewer with 2 orders, statements per store: {dict(two)}")
    print(f"viewer with 10 orders, statements per store: {dict(ten)}")
    assert len(two_body["viewer"]["orders"]["edges"]) == 2
    orders = ten_body["viewer"]["orders"]["edges"]
    assert len(orders) == 10
    assert sum(len(o["node"]["items"]) for o in orders) == 1 + 2 + 3 + 1 + 2 + 3 + 1 + 2 + 3 + 1
    assert two == ten, sql_counter.statements
    if PLANNED:  # the viewer; then orders with their items and products, fused
        assert ten == Counter({"kg.auth": 1, "kg.app": 1})
    else:  # the viewer; then orders, their items, the items' products
        assert ten == Counter({"kg.auth": 1, "kg.app": 3})


async def test_the_counter_sees_per_row_queries(
    app: Starlette, http: httpx.AsyncClient, stores: Databases, sql_counter: SqlCounter
) -> None:
    """The hook itself: N separate requests are N times the statements (so equal counts above
    are not an artefact of a counter that misses statements)."""
    user = await create_customer(stores, "kg")
    token = token_for(app, "kg", user)
    query = "{ viewer { wallet { balance { amountMinor } } } }"
    data(await gql(http, query, token=token))
    with sql_counter.counting() as once:
        data(await gql(http, query, token=token))
    with sql_counter.counting() as thrice:
        for _ in range(3):
            data(await gql(http, query, token=token))
    assert once == Counter({"kg.auth": 1, "kg.app": 1})
    assert thrice == Counter({"kg.auth": 3, "kg.app": 3})
