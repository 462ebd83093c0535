"""Data residency over GraphQL: a user's token reaches only its own market's user data (another
market's ids are NOT_FOUND, with no hint that they exist), while catalogs are public; ids route
by the market inside them. Rows are checked in each store directly."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import Cart, CartItem, Order
from marketgraph.db.models.auth import User
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    add_cart_item,
    app_fixture,
    create_customer,
    create_order,
    create_product,
    create_transaction,
    gid,
    http_fixture,
    token_for,
)
from tests.helpers import data, error_code, gql, placement

ORDER = "query ($id: ID!) { order(id: $id) { id number } }"
NODE = "query ($id: ID!) { node(id: $id) { __typename id } }"
CANCEL = "mutation ($id: ID!) { cancelOrder(id: $id) { status } }"
UPDATE_ITEM = "mutation ($id: ID!) { updateCartItem(itemId: $id, quantity: 5) { itemCount } }"
REMOVE_ITEM = "mutation ($id: ID!) { removeFromCart(itemId: $id) { itemCount } }"
ADD = "mutation ($id: ID!) { addToCart(productId: $id) { itemCount } }"
PRODUCTS = "query ($m: ID) { products(market: $m) { edges { node { id name market { code } } } } }"


class World:
    """A KG customer with a cart item, an order and a wallet transaction; a US customer."""

    async def build(self, app: Starlette, stores: Databases) -> World:
        self.kg_app = stores.store("kg", "app")
        self.product = await create_product(self.kg_app, name="Чай")
        self.kg_user = await create_customer(stores, "kg")
        self.item = await add_cart_item(self.kg_app, self.kg_user.id, self.product.id, 2)
        self.order = await create_order(
            self.kg_app, "kg", self.kg_user.id, [(self.product.id, 1, 10)]
        )
        self.transaction = await create_transaction(self.kg_app, self.kg_user.id, 500)
        self.us_user = await create_customer(stores, "us")
        self.us_token = token_for(app, "us", self.us_user)
        self.kg_token = token_for(app, "kg", self.kg_user)
        async with self.kg_app.connect() as conn:
            self.cart_id = (
                await conn.execute(select(Cart.id).where(Cart.user_id == self.kg_user.id))
            ).scalar_one()
        return self


@pytest.fixture
async def world(app: Starlette, stores: Databases) -> World:
    return await World().build(app, stores)


async def test_the_rows_live_in_the_kg_stores_only(world: World, stores: Databases) -> None:
    assert await placement(stores, "auth", User.id, world.kg_user.id) == {"kg": 1, "us": 0}
    assert await placement(stores, "app", Order.id, world.order.id) == {"kg": 1, "us": 0}
    assert await placement(stores, "app", CartItem.id, world.item.id) == {"kg": 1, "us": 0}


@pytest.mark.parametrize("what", ["Order", "User", "WalletTransaction", "Cart", "CartItem"])
async def test_a_us_token_cannot_read_kg_user_data_by_id(
    world: World, http: httpx.AsyncClient, what: str
) -> None:
    key = {
        "Order": world.order.id,
        "User": world.kg_user.id,
        "WalletTransaction": world.transaction.id,
        "Cart": world.cart_id,
        "CartItem": world.item.id,
    }[what]
    kg_id = gid(what, "kg", key)
    body = await gql(http, NODE, {"id": kg_id}, token=world.us_token)
    assert error_code(body) == "NOT_FOUND"
    assert body["data"] is None or body["data"]["node"] is None
    assert "Чай" not in str(body) and world.order.number not in str(body)
    if what == "Order":
        assert (
            error_code(await gql(http, ORDER, {"id": kg_id}, token=world.us_token)) == "NOT_FOUND"
        )


async def test_the_owner_reads_the_same_ids(world: World, http: httpx.AsyncClient) -> None:
    for what, key in (
        ("Order", world.order.id),
        ("User", world.kg_user.id),
        ("WalletTransaction", world.transaction.id),
    ):
        body = await gql(http, NODE, {"id": gid(what, "kg", key)}, token=world.kg_token)
        assert data(body)["node"] == {"__typename": what, "id": gid(what, "kg", key)}
    body = await gql(http, ORDER, {"id": gid("Order", "kg", world.order.id)}, token=world.kg_token)
    assert data(body)["order"]["number"] == world.order.number


async def test_another_user_of_the_same_market_is_not_found_either(
    world: World, app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    neighbour = token_for(app, "kg", await create_customer(stores, "kg"))
    for what, key in (
        ("Order", world.order.id),
        ("User", world.kg_user.id),
        ("WalletTransaction", world.transaction.id),
    ):
        body = await gql(http, NODE, {"id": gid(what, "kg", key)}, token=neighbour)
        assert error_code(body) == "NOT_FOUND", what


async def test_a_us_token_cannot_change_kg_user_data(
    world: World, http: httpx.AsyncClient, stores: Databases
) -> None:
    order_id = gid("Order", "kg", world.order.id)
    item_id = gid("CartItem", "kg", world.item.id)
    assert (
        error_code(await gql(http, CANCEL, {"id": order_id}, token=world.us_token)) == "NOT_FOUND"
    )
    assert (
        error_code(await gql(http, UPDATE_ITEM, {"id": item_id}, token=world.us_token))
        == "NOT_FOUND"
    )
    assert (
        error_code(await gql(http, REMOVE_ITEM, {"id": item_id}, token=world.us_token))
        == "NOT_FOUND"
    )
    # Nor buy from the KG catalog into a US cart.
    product_id = gid("Product", "kg", world.product.id)
    assert error_code(await gql(http, ADD, {"id": product_id}, token=world.us_token)) == "NOT_FOUND"
    kg_order = await gql(http, ORDER, {"id": order_id}, token=world.kg_token)
    assert data(kg_order)["order"] is not None
    assert await placement(stores, "app", CartItem.quantity, 2) == {"kg": 1, "us": 0}


async def test_the_same_key_under_the_callers_market_is_simply_not_there(
    world: World, http: httpx.AsyncClient
) -> None:
    # The KG order's key presented as a US order: routed to the US store, where it is absent.
    body = await gql(http, ORDER, {"id": gid("Order", "us", world.order.id)}, token=world.us_token)
    assert error_code(body) == "NOT_FOUND"


async def test_an_x_market_header_cannot_redirect_a_token(
    world: World, http: httpx.AsyncClient
) -> None:
    body = await gql(
        http,
        ORDER,
        {"id": gid("Order", "kg", world.order.id)},
        token=world.us_token,
        headers={"X-Market": "kg"},
    )
    assert error_code(body) == "MARKET_MISMATCH"
    assert body["data"] is None or body["data"]["order"] is None


async def test_an_admin_of_another_market_reads_kg_data(
    world: World, app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    admin = await create_customer(stores, "us")
    token = token_for(app, "us", admin, admin=True)
    body = await gql(http, ORDER, {"id": gid("Order", "kg", world.order.id)}, token=token)
    assert data(body)["order"]["number"] == world.order.number
    user = await gql(http, NODE, {"id": gid("User", "kg", world.kg_user.id)}, token=token)
    assert data(user)["node"]["__typename"] == "User"


async def test_the_kg_catalog_is_public(world: World, http: httpx.AsyncClient) -> None:
    expected = [
        {"id": gid("Product", "kg", world.product.id), "name": "Чай", "market": {"code": "kg"}}
    ]
    anonymous = data(await gql(http, PRODUCTS, {}, headers={"X-Market": "kg"}))
    assert anonymous["products"]["edges"] == [{"node": expected[0]}]
    by_argument = data(await gql(http, PRODUCTS, {"m": "kg"}))
    assert by_argument == anonymous
    from_us = data(await gql(http, PRODUCTS, {"m": "kg"}, token=world.us_token))
    assert from_us == anonymous
    us_catalog = data(await gql(http, PRODUCTS, {}, token=world.us_token))
    assert us_catalog["products"]["edges"] == []
    node = await gql(http, NODE, {"id": expected[0]["id"]}, token=world.us_token)
    assert data(node)["node"] == {"__typename": "Product", "id": expected[0]["id"]}


@pytest.mark.parametrize(
    "value", ["", "garbage", "VXNlcjprZzo", "0190b0c4-7a1e-7d3c-9f00-0123456789ab"]
)
async def test_invalid_node_ids_are_bad_user_input(
    world: World, http: httpx.AsyncClient, value: str
) -> None:
    assert (
        error_code(await gql(http, NODE, {"id": value}, token=world.kg_token)) == "BAD_USER_INPUT"
    )
    assert (
        error_code(await gql(http, ORDER, {"id": value}, token=world.kg_token)) == "BAD_USER_INPUT"
    )


async def test_unknown_types_and_markets_are_not_found(
    world: World, http: httpx.AsyncClient
) -> None:
    for value in (gid("Spaceship", "kg", world.order.id), gid("Order", "zz", world.order.id)):
        body = await gql(http, NODE, {"id": value}, token=world.kg_token)
        assert error_code(body) == "NOT_FOUND", value


async def test_anonymous_callers_get_no_user_data(world: World, http: httpx.AsyncClient) -> None:
    body = await gql(
        http, NODE, {"id": gid("User", "kg", world.kg_user.id)}, headers={"X-Market": "kg"}
    )
    assert error_code(body) == "UNAUTHENTICATED"
    assert "data" not in body or body["data"] is None or body["data"]["node"] is None
