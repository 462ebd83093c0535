"""Checkout and cancelOrder over GraphQL: the rules of the contract, checked against the rows."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import Order, Product
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
from tests.helpers import data, error, error_code, gql, phone_login

ORDER_FIELDS = """
  id number status paymentMethod createdAt
  total { amountMinor currency formatted }
  items { quantity unitPrice { amountMinor } lineTotal { amountMinor } product { id name } }
  user { id }
"""
CHECKOUT = f"""
mutation ($key: String!, $method: PaymentMethod) {{
  checkout(idempotencyKey: $key, paymentMethod: $method) {{ {ORDER_FIELDS} }}
}}
"""
CANCEL = f"mutation ($id: ID!) {{ cancelOrder(id: $id) {{ {ORDER_FIELDS} }} }}"
ORDER = f"query ($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"
NODE = "query ($id: ID!) { node(id: $id) { __typename id ... on Order { number status } } }"
VIEWER_ORDERS = """
query ($first: Int, $after: String) {
  viewer {
    cart { itemCount }
    wallet { balance { amountMinor } }
    orders(first: $first, after: $after) {
      edges { cursor node { id number status } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


class Buyer:
    """A KG customer: their row, a token, and shortcuts to the GraphQL calls."""

    def __init__(self, http: httpx.AsyncClient, app: Starlette, stores: Databases) -> None:
        self.http, self.app, self.stores = http, app, stores
        self.store = stores.store("kg", "app")

    async def setup(self, balance_minor: int = 0) -> Buyer:
        self.user = await create_customer(self.stores, "kg", balance_minor=balance_minor)
        self.gid = gid("User", "kg", self.user.id)
        self.token = token_for(self.app, "kg", self.user)
        return self

    async def call(self, query: str, **variables: Any) -> dict[str, Any]:
        return await gql(self.http, query, variables, token=self.token)

    async def checkout(self, key: str, method: str | None = None) -> dict[str, Any]:
        variables = {"key": key} if method is None else {"key": key, "method": method}
        return await gql(self.http, CHECKOUT, variables, token=self.token)

    async def put(self, product_id: Any, quantity: int) -> None:
        await add_cart_item(self.store, self.user.id, product_id, quantity)


@pytest.fixture
async def buyer(app: Starlette, http: httpx.AsyncClient, stores: Databases) -> Buyer:
    return await Buyer(http, app, stores).setup(balance_minor=100_000)


async def test_wallet_checkout_pays_snapshots_and_empties_the_cart(
    buyer: Buyer, stores: Databases
) -> None:
    tea = await create_product(buyer.store, name="Чай", price_minor=12500, stock=10)
    cup = await create_product(buyer.store, name="Чашка", price_minor=3000, stock=5)
    await buyer.put(tea.id, 2)
    await buyer.put(cup.id, 3)

    order = data(await buyer.checkout("k-1"))["checkout"]  # WALLET is the default

    total = 2 * 12500 + 3 * 3000
    assert order["status"] == "PAID" and order["paymentMethod"] == "WALLET"
    assert order["total"] == {
        "amountMinor": total,
        "currency": "KGS",
        "formatted": "340,00\u00a0сом",
    }
    assert order["user"] == {"id": buyer.gid}
    assert sorted(
        (i["product"]["name"], i["quantity"], i["unitPrice"]["amountMinor"]) for i in order["items"]
    ) == [("Чай", 2, 12500), ("Чашка", 3, 3000)]
    assert {i["lineTotal"]["amountMinor"] for i in order["items"]} == {25000, 9000}
    assert re.fullmatch(r"KG-\d{6}", order["number"])

    assert await stock_of(buyer.store, tea.id) == 8
    assert await stock_of(buyer.store, cup.id) == 2
    assert await cart_lines(buyer.store, buyer.user.id) == {}
    assert await balance_of(buyer.store, buyer.user.id) == 100_000 - total
    [payment] = await transactions_of(buyer.store, buyer.user.id)
    assert (payment.kind, payment.amount_minor) == ("PAYMENT", -total)
    assert gid("Order", "kg", payment.order_id) == order["id"]

    viewer = data(await buyer.call(VIEWER_ORDERS))["viewer"]
    assert viewer["cart"]["itemCount"] == 0
    assert viewer["wallet"]["balance"]["amountMinor"] == 100_000 - total
    assert [e["node"]["id"] for e in viewer["orders"]["edges"]] == [order["id"]]


async def test_cash_on_delivery_places_the_order_without_paying(buyer: Buyer) -> None:
    tea = await create_product(buyer.store, price_minor=500_000, stock=1)  # more than the wallet
    await buyer.put(tea.id, 1)
    order = data(await buyer.checkout("cod", "CASH_ON_DELIVERY"))["checkout"]
    assert (order["status"], order["paymentMethod"]) == ("PLACED", "CASH_ON_DELIVERY")
    assert await balance_of(buyer.store, buyer.user.id) == 100_000
    assert await transactions_of(buyer.store, buyer.user.id) == []
    assert await stock_of(buyer.store, tea.id) == 0
    assert await cart_lines(buyer.store, buyer.user.id) == {}


async def test_an_empty_cart_is_bad_user_input(buyer: Buyer) -> None:
    assert error_code(await buyer.checkout("empty")) == "BAD_USER_INPUT"
    assert await count_rows(buyer.store, Order) == 0


async def test_a_blank_idempotency_key_is_bad_user_input(buyer: Buyer) -> None:
    tea = await create_product(buyer.store)
    await buyer.put(tea.id, 1)
    body = await buyer.checkout("   ")
    assert error_code(body) == "BAD_USER_INPUT"
    assert error(body)["extensions"]["field"] == "idempotencyKey"


async def test_out_of_stock_names_the_products_and_changes_nothing(buyer: Buyer) -> None:
    tea = await create_product(buyer.store, stock=1)
    cup = await create_product(buyer.store, stock=5)
    await buyer.put(tea.id, 2)
    await buyer.put(cup.id, 1)

    body = await buyer.checkout("short")

    assert error_code(body) == "OUT_OF_STOCK"
    assert error(body)["extensions"]["products"] == [
        {"productId": gid("Product", "kg", tea.id), "requested": 2, "available": 1}
    ]
    assert await stock_of(buyer.store, tea.id) == 1
    assert await stock_of(buyer.store, cup.id) == 5
    assert await cart_lines(buyer.store, buyer.user.id) == {tea.id: 2, cup.id: 1}
    assert await balance_of(buyer.store, buyer.user.id) == 100_000
    assert await count_rows(buyer.store, Order) == 0
    # The key was not used up: once the cart fits the stock, the same key places the order.
    await buyer.call(
        "mutation ($id: ID!) { updateCartItem(itemId: $id, quantity: 1) { itemCount } }",
        id=await _item_gid(buyer, tea.id),
    )
    assert data(await buyer.checkout("short"))["checkout"]["status"] == "PAID"


async def _item_gid(buyer: Buyer, product_id: Any) -> str:
    body = await buyer.call("{ viewer { cart { items { id product { id } } } } }")
    for item in data(body)["viewer"]["cart"]["items"]:
        if item["product"]["id"] == gid("Product", "kg", product_id):
            return str(item["id"])
    raise AssertionError("no such item")


async def test_insufficient_funds_changes_nothing(buyer: Buyer) -> None:
    tea = await create_product(buyer.store, price_minor=60_000, stock=3)
    await buyer.put(tea.id, 2)
    body = await buyer.checkout("poor")
    assert error_code(body) == "INSUFFICIENT_FUNDS"
    assert await stock_of(buyer.store, tea.id) == 3
    assert await cart_lines(buyer.store, buyer.user.id) == {tea.id: 2}
    assert await balance_of(buyer.store, buyer.user.id) == 100_000
    assert await transactions_of(buyer.store, buyer.user.id) == []
    assert await count_rows(buyer.store, Order) == 0


async def test_the_unit_price_is_a_snapshot(buyer: Buyer) -> None:
    tea = await create_product(buyer.store, price_minor=1000)
    await buyer.put(tea.id, 3)
    order = data(await buyer.checkout("snap"))["checkout"]
    async with buyer.store.begin() as session:
        await session.execute(update(Product).where(Product.id == tea.id).values(price_minor=9999))

    again = data(await buyer.call(ORDER, id=order["id"]))["order"]
    assert again["items"][0]["unitPrice"]["amountMinor"] == 1000
    assert again["items"][0]["lineTotal"]["amountMinor"] == 3000
    assert again["total"]["amountMinor"] == 3000
    assert again["items"][0]["product"]["id"] == gid("Product", "kg", tea.id)


async def test_order_numbers_are_readable_and_unique_per_market(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    numbers = []
    for market in ("kg", "us", "kg", "us", "kg"):
        user = await create_customer(stores, market)
        product = await create_product(stores.store(market, "app"))
        await add_cart_item(stores.store(market, "app"), user.id, product.id, 1)
        body = await gql(
            http,
            CHECKOUT,
            {"key": "n", "method": "CASH_ON_DELIVERY"},
            token=token_for(app, market, user),
        )
        numbers.append((market, data(body)["checkout"]["number"]))
    for market, number in numbers:
        assert re.fullmatch(rf"{market.upper()}-\d{{6}}", number), number
    assert len({n for _, n in numbers}) == len(numbers)
    kg = [int(n[3:]) for m, n in numbers if m == "kg"]
    assert kg == sorted(kg)


async def test_cancel_restores_stock_and_refunds_once(buyer: Buyer) -> None:
    tea = await create_product(buyer.store, price_minor=2500, stock=4)
    await buyer.put(tea.id, 3)
    order = data(await buyer.checkout("c"))["checkout"]
    assert await balance_of(buyer.store, buyer.user.id) == 100_000 - 7500

    cancelled = data(await buyer.call(CANCEL, id=order["id"]))["cancelOrder"]
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["id"] == order["id"] and cancelled["total"] == order["total"]
    assert await stock_of(buyer.store, tea.id) == 4
    assert await balance_of(buyer.store, buyer.user.id) == 100_000
    kinds = [(t.kind, t.amount_minor) for t in await transactions_of(buyer.store, buyer.user.id)]
    assert kinds == [("PAYMENT", -7500), ("REFUND", 7500)]

    again = data(await buyer.call(CANCEL, id=order["id"]))["cancelOrder"]
    assert again == cancelled
    assert await stock_of(buyer.store, tea.id) == 4
    assert await balance_of(buyer.store, buyer.user.id) == 100_000
    assert len(await transactions_of(buyer.store, buyer.user.id)) == 2


async def test_cancelling_cash_on_delivery_refunds_nothing(buyer: Buyer) -> None:
    tea = await create_product(buyer.store, stock=2)
    await buyer.put(tea.id, 2)
    order = data(await buyer.checkout("cod", "CASH_ON_DELIVERY"))["checkout"]
    assert data(await buyer.call(CANCEL, id=order["id"]))["cancelOrder"]["status"] == "CANCELLED"
    assert await stock_of(buyer.store, tea.id) == 2
    assert await transactions_of(buyer.store, buyer.user.id) == []
    assert await balance_of(buyer.store, buyer.user.id) == 100_000


async def test_another_users_order_is_not_found(
    buyer: Buyer, app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    tea = await create_product(buyer.store, stock=2)
    await buyer.put(tea.id, 1)
    order = data(await buyer.checkout("mine"))["checkout"]
    other = await Buyer(http, app, stores).setup()

    assert error_code(await other.call(CANCEL, id=order["id"])) == "NOT_FOUND"
    assert error_code(await other.call(ORDER, id=order["id"])) == "NOT_FOUND"
    assert error_code(await other.call(NODE, id=order["id"])) == "NOT_FOUND"
    assert await stock_of(buyer.store, tea.id) == 1
    assert data(await buyer.call(ORDER, id=order["id"]))["order"]["status"] == "PAID"
    # Anonymous callers learn nothing either.
    assert error_code(await gql(http, ORDER, {"id": order["id"]})) == "UNAUTHENTICATED"


async def test_order_and_node_by_id_for_the_owner(buyer: Buyer) -> None:
    tea = await create_product(buyer.store)
    await buyer.put(tea.id, 1)
    order = data(await buyer.checkout("n"))["checkout"]
    assert data(await buyer.call(ORDER, id=order["id"]))["order"] == order
    node = data(await buyer.call(NODE, id=order["id"]))["node"]
    assert node == {
        "__typename": "Order",
        "id": order["id"],
        "number": order["number"],
        "status": "PAID",
    }
    assert error_code(await buyer.call(ORDER, id="bogus")) == "BAD_USER_INPUT"
    assert error_code(await buyer.call(CANCEL, id="bogus")) == "BAD_USER_INPUT"


async def test_viewer_orders_page_newest_first(buyer: Buyer) -> None:
    tea = await create_product(buyer.store, price_minor=1)
    placed = []
    for n in range(3):
        await buyer.put(tea.id, 1)
        placed.append(data(await buyer.checkout(f"o{n}"))["checkout"]["id"])
    first = data(await buyer.call(VIEWER_ORDERS, first=2))["viewer"]["orders"]
    assert [e["node"]["id"] for e in first["edges"]] == placed[::-1][:2]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = data(await buyer.call(VIEWER_ORDERS, first=2, after=first["pageInfo"]["endCursor"]))
    assert [e["node"]["id"] for e in rest["viewer"]["orders"]["edges"]] == [placed[0]]
    assert rest["viewer"]["orders"]["pageInfo"]["hasNextPage"] is False
    assert error_code(await buyer.call(VIEWER_ORDERS, first=101)) == "BAD_USER_INPUT"


async def test_a_user_signed_in_by_phone_shops_end_to_end(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    """The real sign-in path: phone login creates the cart and wallet the checkout uses."""
    signed_in = await phone_login(http, app, "+996700123456")
    token = signed_in["accessToken"]
    tea = await create_product(stores.store("kg", "app"), price_minor=900, stock=3)
    add = "mutation ($id: ID!) { addToCart(productId: $id, quantity: 2) { itemCount } }"
    assert data(await gql(http, add, {"id": gid("Product", "kg", tea.id)}, token=token)) == {
        "addToCart": {"itemCount": 2}
    }
    body = await gql(http, CHECKOUT, {"key": "e2e", "method": "CASH_ON_DELIVERY"}, token=token)
    order = data(body)["checkout"]
    assert order["user"] == {"id": signed_in["user"]["id"]}
    assert order["total"]["amountMinor"] == 1800
    assert await stock_of(stores.store("kg", "app"), tea.id) == 1
