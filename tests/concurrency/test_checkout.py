"""Checkouts under real concurrent transactions: the last units of a product, carts that lock
the same products in opposite orders, and replays of one idempotency key."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import Order, OrderItem, WalletTransaction
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    add_cart_item,
    app_fixture,
    balance_of,
    cart_lines,
    count_rows,
    create_customer,
    create_product,
    gid,
    http_fixture,
    stock_of,
    token_for,
    transactions_of,
)
from tests.helpers import data, gql

CHECKOUT = """
mutation ($key: String!, $method: PaymentMethod) {
  checkout(idempotencyKey: $key, paymentMethod: $method) {
    id number status total { amountMinor } items { quantity product { id } }
  }
}
"""
ADD = "mutation ($id: ID!, $q: Int) { addToCart(productId: $id, quantity: $q) { itemCount } }"


def codes(bodies: list[dict[str, Any]]) -> Counter[str]:
    """How many bodies succeeded ("ok") or failed, by error code."""
    return Counter(
        body["errors"][0]["extensions"]["code"] if body.get("errors") else "ok" for body in bodies
    )


async def ordered_units(stores: Databases, product_id: uuid.UUID) -> int:
    async with stores.store("kg", "app").connect() as conn:
        total = await conn.scalar(
            select(func.coalesce(func.sum(OrderItem.quantity), 0)).where(
                OrderItem.product_id == product_id
            )
        )
    return int(total or 0)


async def test_fifty_checkouts_for_the_last_ten_units(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    app_store = stores.store("kg", "app")
    product = await create_product(app_store, name="Последний чай", stock=10)
    buyers = [await create_customer(stores, "kg") for _ in range(50)]
    for buyer in buyers:
        await add_cart_item(app_store, buyer.id, product.id, 1)

    samples: list[int] = []
    done = asyncio.Event()

    async def watch_stock() -> None:
        while not done.is_set():
            samples.append(await stock_of(app_store, product.id))
            await asyncio.sleep(0)

    async def checkout(buyer: Any) -> dict[str, Any]:
        variables = {"key": "last-units", "method": "CASH_ON_DELIVERY"}
        return await gql(http, CHECKOUT, variables, token=token_for(app, "kg", buyer))

    watcher = asyncio.create_task(watch_stock())
    try:
        bodies = await asyncio.gather(*(checkout(b) for b in buyers))
    finally:
        done.set()
        await watcher

    # Exactly ten orders; every other buyer is told the product is out of stock, and nothing
    # failed in any other way (a deadlock would be INTERNAL_SERVER_ERROR/SERVICE_UNAVAILABLE).
    assert codes(bodies) == Counter({"ok": 10, "OUT_OF_STOCK": 40}), codes(bodies)
    product_gid = gid("Product", "kg", product.id)
    for body in bodies:
        if body.get("errors"):
            [short] = body["errors"][0]["extensions"]["products"]
            assert short["productId"] == product_gid and short["requested"] == 1
            assert short["available"] == 0
        else:
            assert data(body)["checkout"]["status"] == "PLACED"

    assert await stock_of(app_store, product.id) == 0
    assert samples and min(samples) >= 0
    assert await count_rows(app_store, Order) == 10
    assert await ordered_units(stores, product.id) == 10
    numbers = {data(b)["checkout"]["number"] for b in bodies if not b.get("errors")}
    assert len(numbers) == 10
    # The ten carts were emptied; the forty refused ones are exactly as they were.
    for buyer, body in zip(buyers, bodies, strict=True):
        expected = {} if not body.get("errors") else {product.id: 1}
        assert await cart_lines(app_store, buyer.id) == expected


async def test_carts_with_products_in_opposite_orders_do_not_deadlock(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    app_store = stores.store("kg", "app")
    first = await create_product(app_store, stock=1000)
    second = await create_product(app_store, stock=1000)
    buyers = [await create_customer(stores, "kg") for _ in range(40)]
    for n, buyer in enumerate(buyers):
        # Half the carts got the products in one order, half in the other (item ids follow).
        pair = (first, second) if n % 2 else (second, first)
        for product in pair:
            await add_cart_item(app_store, buyer.id, product.id, 1 + n % 3)

    bodies = await asyncio.gather(
        *(
            gql(
                http,
                CHECKOUT,
                {"key": "pair", "method": "CASH_ON_DELIVERY"},
                token=token_for(app, "kg", buyer),
            )
            for buyer in buyers
        )
    )

    assert codes(bodies) == Counter({"ok": 40}), [b.get("errors") for b in bodies]
    units = sum(1 + n % 3 for n in range(40))
    assert await stock_of(app_store, first.id) == 1000 - units
    assert await stock_of(app_store, second.id) == 1000 - units
    assert await count_rows(app_store, Order) == 40


async def test_concurrent_replays_of_one_key_make_one_order_and_charge_once(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    app_store = stores.store("kg", "app")
    tea = await create_product(app_store, price_minor=700, stock=50)
    cup = await create_product(app_store, price_minor=300, stock=50)
    buyer = await create_customer(stores, "kg", balance_minor=10_000)
    await add_cart_item(app_store, buyer.id, tea.id, 3)
    token = token_for(app, "kg", buyer)
    variables = {"key": "pay-once"}

    bodies = await asyncio.gather(*(gql(http, CHECKOUT, variables, token=token) for _ in range(20)))

    assert codes(bodies) == Counter({"ok": 20}), [b.get("errors") for b in bodies]
    orders = [data(b)["checkout"] for b in bodies]
    assert all(order == orders[0] for order in orders)
    assert orders[0]["status"] == "PAID" and orders[0]["total"]["amountMinor"] == 2100
    assert await count_rows(app_store, Order) == 1
    assert await balance_of(app_store, buyer.id) == 10_000 - 2100
    assert await stock_of(app_store, tea.id) == 47
    [payment] = await transactions_of(app_store, buyer.id)
    assert payment.amount_minor == -2100

    # The cart changes; replays of the key, again concurrent, still return the first order
    # and neither buy the new cart nor charge again.
    await add_cart_item(app_store, buyer.id, cup.id, 2)
    replays = await asyncio.gather(
        *(gql(http, CHECKOUT, variables, token=token) for _ in range(10))
    )
    assert [data(b)["checkout"] for b in replays] == [orders[0]] * 10
    assert await cart_lines(app_store, buyer.id) == {cup.id: 2}
    assert await balance_of(app_store, buyer.id) == 10_000 - 2100
    assert await stock_of(app_store, cup.id) == 50
    assert await count_rows(app_store, WalletTransaction) == 1
    assert await count_rows(app_store, Order) == 1

    # A new key buys the new cart.
    fresh = data(await gql(http, CHECKOUT, {"key": "next"}, token=token))["checkout"]
    assert fresh["id"] != orders[0]["id"] and fresh["total"]["amountMinor"] == 600


async def test_concurrent_adds_during_checkout_are_ordered_or_kept(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    """An item added while a checkout runs is either in that order or still in the cart:
    never emptied away unordered."""
    app_store = stores.store("kg", "app")
    products = [await create_product(app_store, stock=100) for _ in range(10)]
    buyer = await create_customer(stores, "kg")
    token = token_for(app, "kg", buyer)
    await add_cart_item(app_store, buyer.id, products[0].id, 1)

    adds = [
        gql(http, ADD, {"id": gid("Product", "kg", p.id), "q": 1}, token=token)
        for p in products[1:]
    ]
    checkouts = [
        gql(http, CHECKOUT, {"key": f"k{n}", "method": "CASH_ON_DELIVERY"}, token=token)
        for n in range(5)
    ]
    bodies = await asyncio.gather(*adds, *checkouts)

    assert set(codes(bodies)) <= {"ok", "BAD_USER_INPUT"}  # an empty cart at its turn
    for body in bodies[: len(adds)]:
        data(body)
    ordered = {p.id: await ordered_units(stores, p.id) for p in products}
    in_cart = await cart_lines(app_store, buyer.id)
    for product in products:
        assert ordered[product.id] + in_cart.get(product.id, 0) == 1
        assert await stock_of(app_store, product.id) == 100 - ordered[product.id]


async def test_concurrent_cancels_restore_stock_and_refund_once(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    app_store = stores.store("kg", "app")
    tea = await create_product(app_store, price_minor=400, stock=10)
    buyer = await create_customer(stores, "kg", balance_minor=5000)
    await add_cart_item(app_store, buyer.id, tea.id, 4)
    token = token_for(app, "kg", buyer)
    order = data(await gql(http, CHECKOUT, {"key": "undo"}, token=token))["checkout"]
    cancel = "mutation ($id: ID!) { cancelOrder(id: $id) { id status } }"

    bodies = await asyncio.gather(
        *(gql(http, cancel, {"id": order["id"]}, token=token) for _ in range(20))
    )

    assert [data(b)["cancelOrder"] for b in bodies] == [
        {"id": order["id"], "status": "CANCELLED"}
    ] * 20
    assert await stock_of(app_store, tea.id) == 10
    assert await balance_of(app_store, buyer.id) == 5000
    kinds = [(t.kind, t.amount_minor) for t in await transactions_of(app_store, buyer.id)]
    assert kinds == [("PAYMENT", -1600), ("REFUND", 1600)]
