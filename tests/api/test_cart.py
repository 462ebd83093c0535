"""The cart over GraphQL: adding, updating, removing, and every refusal the contract names."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    app_fixture,
    cart_lines,
    create_customer,
    create_product,
    gid,
    http_fixture,
    token_for,
)
from tests.helpers import data, error, error_code, gql

CART_FIELDS = """
  id itemCount subtotal { amountMinor currency formatted }
  items { id quantity lineTotal { amountMinor } product { id name price { amountMinor } } }
"""
ADD = f"""
mutation ($productId: ID!, $quantity: Int) {{
  addToCart(productId: $productId, quantity: $quantity) {{ {CART_FIELDS} }}
}}
"""
UPDATE = f"""
mutation ($itemId: ID!, $quantity: Int!) {{
  updateCartItem(itemId: $itemId, quantity: $quantity) {{ {CART_FIELDS} }}
}}
"""
REMOVE = f"mutation ($itemId: ID!) {{ removeFromCart(itemId: $itemId) {{ {CART_FIELDS} }} }}"
VIEWER_CART = f"{{ viewer {{ cart {{ {CART_FIELDS} }} }} }}"


class Shopper:
    """A signed-in KG customer with a client."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token

    async def call(self, query: str, **variables: Any) -> dict[str, Any]:
        return await gql(self.http, query, variables, token=self.token)

    async def add(self, product_id: str, quantity: int | None = None) -> dict[str, Any]:
        variables: dict[str, Any] = {"productId": product_id}
        if quantity is not None:
            variables["quantity"] = quantity
        return await gql(self.http, ADD, variables, token=self.token)


@pytest.fixture
async def shopper(app: Starlette, http: httpx.AsyncClient, stores: Databases) -> Shopper:
    user = await create_customer(stores, "kg")
    return Shopper(http, token_for(app, "kg", user))


async def test_add_to_cart_accumulates_and_prices_the_cart(
    shopper: Shopper, stores: Databases
) -> None:
    tea = await create_product(stores.store("kg", "app"), name="Чай", price_minor=12550)
    cup = await create_product(stores.store("kg", "app"), name="Чашка", price_minor=30000)
    tea_id, cup_id = gid("Product", "kg", tea.id), gid("Product", "kg", cup.id)

    one = data(await shopper.add(tea_id))["addToCart"]  # quantity defaults to 1
    assert one["itemCount"] == 1
    data(await shopper.add(cup_id, 2))
    cart = data(await shopper.add(tea_id, 2))["addToCart"]

    assert cart["id"] == one["id"]
    assert [(i["product"]["name"], i["quantity"]) for i in cart["items"]] == [
        ("Чай", 3),
        ("Чашка", 2),
    ]
    assert [i["lineTotal"]["amountMinor"] for i in cart["items"]] == [37650, 60000]
    assert cart["itemCount"] == 5
    assert cart["subtotal"] == {
        "amountMinor": 97650,
        "currency": "KGS",
        "formatted": "976,50\u00a0сом",
    }
    assert data(await shopper.call(VIEWER_CART))["viewer"]["cart"] == cart


@pytest.mark.parametrize("quantity", [0, -1])
async def test_add_to_cart_refuses_non_positive_quantities(
    shopper: Shopper, stores: Databases, quantity: int
) -> None:
    tea = await create_product(stores.store("kg", "app"))
    body = await shopper.add(gid("Product", "kg", tea.id), quantity)
    assert error_code(body) == "BAD_USER_INPUT"
    assert error(body)["extensions"]["field"] == "quantity"
    assert data(await shopper.call(VIEWER_CART))["viewer"]["cart"]["items"] == []


async def test_a_product_of_another_market_is_not_found(
    shopper: Shopper, stores: Databases
) -> None:
    coffee = await create_product(stores.store("us", "app"))
    assert error_code(await shopper.add(gid("Product", "us", coffee.id))) == "NOT_FOUND"
    # Nor is a KG id whose key exists only in the US store.
    assert error_code(await shopper.add(gid("Product", "kg", coffee.id))) == "NOT_FOUND"
    assert data(await shopper.call(VIEWER_CART))["viewer"]["cart"]["items"] == []


async def test_bad_product_ids_are_bad_user_input(shopper: Shopper, stores: Databases) -> None:
    assert error_code(await shopper.add("nope")) == "BAD_USER_INPUT"
    tea = await create_product(stores.store("kg", "app"))
    assert error_code(await shopper.add(gid("Order", "kg", tea.id))) == "BAD_USER_INPUT"


async def test_update_sets_the_quantity_and_zero_removes(
    shopper: Shopper, stores: Databases
) -> None:
    tea = await create_product(stores.store("kg", "app"), price_minor=100)
    cup = await create_product(stores.store("kg", "app"), price_minor=1000)
    data(await shopper.add(gid("Product", "kg", tea.id), 2))
    cart = data(await shopper.add(gid("Product", "kg", cup.id), 1))["addToCart"]
    tea_item, cup_item = (item["id"] for item in cart["items"])

    updated = data(await shopper.call(UPDATE, itemId=tea_item, quantity=7))["updateCartItem"]
    assert [i["quantity"] for i in updated["items"]] == [7, 1]
    assert updated["subtotal"]["amountMinor"] == 1700

    removed = data(await shopper.call(UPDATE, itemId=tea_item, quantity=0))["updateCartItem"]
    assert [i["id"] for i in removed["items"]] == [cup_item]

    emptied = data(await shopper.call(REMOVE, itemId=cup_item))["removeFromCart"]
    assert emptied["items"] == [] and emptied["itemCount"] == 0
    assert emptied["subtotal"]["amountMinor"] == 0
    # A removed item is gone: touching it again is NOT_FOUND.
    assert error_code(await shopper.call(REMOVE, itemId=cup_item)) == "NOT_FOUND"


async def test_update_refuses_negative_quantities(shopper: Shopper, stores: Databases) -> None:
    tea = await create_product(stores.store("kg", "app"))
    item = data(await shopper.add(gid("Product", "kg", tea.id), 2))["addToCart"]["items"][0]
    body = await shopper.call(UPDATE, itemId=item["id"], quantity=-1)
    assert error_code(body) == "BAD_USER_INPUT"
    assert data(await shopper.call(VIEWER_CART))["viewer"]["cart"]["items"][0]["quantity"] == 2


async def test_another_users_item_is_not_found_and_untouched(
    app: Starlette, shopper: Shopper, http: httpx.AsyncClient, stores: Databases
) -> None:
    tea = await create_product(stores.store("kg", "app"))
    owner = await create_customer(stores, "kg")
    theirs = Shopper(http, token_for(app, "kg", owner))
    item = data(await theirs.add(gid("Product", "kg", tea.id), 3))["addToCart"]["items"][0]

    assert error_code(await shopper.call(UPDATE, itemId=item["id"], quantity=1)) == "NOT_FOUND"
    assert error_code(await shopper.call(UPDATE, itemId=item["id"], quantity=0)) == "NOT_FOUND"
    assert error_code(await shopper.call(REMOVE, itemId=item["id"])) == "NOT_FOUND"
    assert await cart_lines(stores.store("kg", "app"), owner.id) == {tea.id: 3}


async def test_cart_mutations_need_a_signed_in_user(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    tea = await create_product(stores.store("kg", "app"))
    body = await gql(http, ADD, {"productId": gid("Product", "kg", tea.id)})
    assert error_code(body) == "UNAUTHENTICATED"
