"""One wallet under concurrent writers: duplicate payment events, and checkouts racing grants
and top-ups. The invariant: the balance is what succeeded, never below zero."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import Cart, CartItem, Order, OrderItem
from marketgraph.webhooks import sign
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    WEBHOOK_SECRET,
    app_fixture,
    balance_of,
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
mutation ($key: String!) {
  checkout(idempotencyKey: $key, paymentMethod: WALLET) { id total { amountMinor } }
}
"""
ADD = "mutation ($id: ID!) { addToCart(productId: $id, quantity: 1) { itemCount } }"
GRANT = """
mutation ($user: ID!, $amount: Int!) {
  grantCredit(userId: $user, amountMinor: $amount, reason: "race") { amount { amountMinor } }
}
"""


async def deliver(
    http: httpx.AsyncClient, event_id: str, user_gid: str, amount: int
) -> httpx.Response:
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "checkout.session.completed",
            "data": {"user_id": user_gid, "amount_minor": amount, "currency": "KGS"},
        }
    )
    signature = sign(WEBHOOK_SECRET.encode(), int(time.time()), body)
    return await http.post("/webhooks/payments", content=body, headers={"X-Signature": signature})


async def test_fifty_deliveries_of_one_event_credit_once(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    user = await create_customer(stores, "kg", balance_minor=1000)
    user_gid = gid("User", "kg", user.id)

    responses = await asyncio.gather(*(deliver(http, "cs_dup", user_gid, 2500) for _ in range(50)))

    answers = Counter((r.status_code, r.json()["status"]) for r in responses)
    assert answers == Counter({(200, "processed"): 1, (200, "already_processed"): 49}), answers
    app_store = stores.store("kg", "app")
    assert await balance_of(app_store, user.id) == 3500
    [top_up] = await transactions_of(app_store, user.id)
    assert (top_up.kind, top_up.amount_minor, top_up.external_id) == ("TOP_UP", 2500, "cs_dup")


async def test_checkouts_grants_and_top_ups_on_one_wallet(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    app_store = stores.store("kg", "app")
    price, start, grant_amount, top_up_amount = 100, 300, 10, 20
    product = await create_product(app_store, price_minor=price, stock=1000)
    user = await create_customer(stores, "kg", balance_minor=start)
    admin = await create_customer(stores, "kg")
    token = token_for(app, "kg", user)
    admin_token = token_for(app, "kg", admin, admin=True)
    user_gid, product_gid = gid("User", "kg", user.id), gid("Product", "kg", product.id)

    # Each writer works in a loop, so payments, grants and top-ups keep interleaving on the
    # wallet row for the whole run rather than in one burst each.
    async def buy(n: int) -> list[dict[str, Any]]:
        """Put one unit in the cart, then pay for the whole cart from the wallet; 5 times."""
        bodies = []
        for k in range(5):
            data(await gql(http, ADD, {"id": product_gid}, token=token))
            bodies.append(await gql(http, CHECKOUT, {"key": f"buy-{n}-{k}"}, token=token))
        return bodies

    async def grant() -> list[dict[str, Any]]:
        variables = {"user": user_gid, "amount": grant_amount}
        return [await gql(http, GRANT, variables, token=admin_token) for _ in range(8)]

    async def top_up(n: int) -> list[httpx.Response]:
        return [await deliver(http, f"cs_{n}_{k}", user_gid, top_up_amount) for k in range(4)]

    buyers, granters, top_uppers = 4, 6, 4
    results = await asyncio.gather(
        *(buy(n) for n in range(buyers)),
        *(grant() for _ in range(granters)),
        *(top_up(n) for n in range(top_uppers)),
    )
    checkouts = [b for r in results[:buyers] for b in r if isinstance(b, dict)]
    granted = [b for r in results[buyers : buyers + granters] for b in r if isinstance(b, dict)]
    delivered = [
        b for r in results[buyers + granters :] for b in r if isinstance(b, httpx.Response)
    ]
    units, grants, top_ups = len(checkouts), len(granted), len(delivered)
    assert (units, grants, top_ups) == (20, 48, 16)

    # Every grant and top-up succeeded; a checkout either paid, or was refused for want of
    # funds, or found the cart already bought by a twin (nothing else: no deadlock, no 500).
    for body in granted:
        data(body)
    assert [r.json() for r in delivered] == [{"status": "processed"}] * top_ups
    outcome = Counter(
        b["errors"][0]["extensions"]["code"] if b.get("errors") else "ok" for b in checkouts
    )
    assert set(outcome) <= {"ok", "INSUFFICIENT_FUNDS", "BAD_USER_INPUT"}, outcome
    # Demand (20 × 100) exceeds everything ever in the wallet (300 + 480 + 320), so some
    # units stay in the cart, and the checkout that followed the last add was refused.
    assert outcome["INSUFFICIENT_FUNDS"] >= 1

    paid = sum(
        data(b)["checkout"]["total"]["amountMinor"] for b in checkouts if not b.get("errors")
    )
    balance = await balance_of(app_store, user.id)
    assert balance == start + grants * grant_amount + top_ups * top_up_amount - paid
    assert balance >= 0
    transactions = await transactions_of(app_store, user.id)
    assert balance == start + sum(t.amount_minor for t in transactions)
    kinds = Counter(t.kind for t in transactions)
    assert kinds == Counter({"GRANT": grants, "TOP_UP": top_ups, "PAYMENT": outcome["ok"]})

    # No unit was lost or sold twice: each is in an order or still in the cart.
    async with app_store.connect() as conn:
        ordered = await conn.scalar(
            select(func.coalesce(func.sum(OrderItem.quantity), 0))
            .join(Order, Order.id == OrderItem.order_id)
            .where(Order.user_id == user.id)
        )
        in_cart = await conn.scalar(
            select(func.coalesce(func.sum(CartItem.quantity), 0))
            .join(Cart, Cart.id == CartItem.cart_id)
            .where(Cart.user_id == user.id)
        )
    assert int(ordered or 0) * price == paid
    assert int(ordered or 0) + int(in_cart or 0) == units
    assert await stock_of(app_store, product.id) == 1000 - int(ordered or 0)
