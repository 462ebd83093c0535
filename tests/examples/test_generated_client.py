"""The client generated from schema.graphql (examples/python-client) against the server on a
real loopback socket: phone login, the catalog, the cart and checkout, each answer read as the
client's typed models. A schema change that the committed client cannot read fails here, one
that the operations no longer fit fails scripts/check-client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from marketgraph_client import (
    GraphQLClientGraphQLMultiError,
    MarketgraphClient,
    OrderStatus,
    PaymentMethod,
    UserType,
)
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from tests.factories import create_product, gid
from tests.helpers import serving, sms_code

PHONE = "+996700123456"  # a KG mobile: phone login places the user in KG


def codes(raised: pytest.ExceptionInfo[GraphQLClientGraphQLMultiError]) -> list[object]:
    """The `extensions.code` of each error the client raised."""
    return [(error.extensions or {}).get("code") for error in raised.value.errors]


async def sign_in(url: str, app: Starlette, phone: str) -> tuple[str, str]:
    """Phone login through the client: (access token, refresh token)."""
    async with MarketgraphClient(url) as anonymous:
        challenge = await anonymous.request_login_code(phone)
        assert challenge.market.code == "kg"
        assert isinstance(challenge.expires_at, dt.datetime)
        assert challenge.resend_after < challenge.expires_at
        session = await anonymous.verify_login_code(phone, sms_code(app, phone))
    assert session.token_type == "Bearer"
    assert session.expires_in > 0
    assert (session.market.code, session.market.currency) == ("kg", "KGS")
    assert session.user.phone == phone
    assert session.user.user_type is UserType.MEMBER
    return session.access_token, session.refresh_token


async def test_a_shopper_signs_in_fills_the_cart_and_checks_out(
    app_factory: Callable[..., Starlette], stores: Databases
) -> None:
    app = app_factory()
    kg = stores.store("kg", "app")
    tea = await create_product(kg, name="Чай", price_minor=12_550, stock=10)
    cup = await create_product(kg, name="Чашка", price_minor=30_000, stock=5)
    tea_id, cup_id = gid("Product", "kg", tea.id), gid("Product", "kg", cup.id)

    async with serving(app) as base:
        url = f"{base}/graphql"
        # The catalog, anonymously: the market from X-Market.
        async with MarketgraphClient(url, headers={"X-Market": "kg"}) as anonymous:
            page = await anonymous.products(first=10)
            assert {edge.node.id for edge in page.edges} == {tea_id, cup_id}
            assert page.page_info.has_next_page is False
            product = await anonymous.product(tea_id)
            assert product is not None
            assert (product.name, product.stock, product.market.code) == ("Чай", 10, "kg")
            assert (product.price.amount_minor, product.price.currency) == (12_550, "KGS")
            found = await anonymous.products(search="Чашка")
            assert [edge.node.name for edge in found.edges] == ["Чашка"]

        access, _ = await sign_in(url, app, PHONE)
        async with MarketgraphClient(url, headers={"Authorization": f"Bearer {access}"}) as me:
            await me.add_to_cart(tea_id)  # quantity defaults to 1
            cart = await me.add_to_cart(cup_id, quantity=3)
            cup_item = next(item for item in cart.items if item.product.id == cup_id)
            cart = await me.update_cart_item(cup_item.id, 2)
            assert cart.item_count == 3
            assert cart.subtotal.amount_minor == 12_550 + 2 * 30_000
            read = await me.cart()
            assert read is not None
            assert read.cart == cart

            # A new user's wallet is empty: the typed error carries the contract's code.
            with pytest.raises(GraphQLClientGraphQLMultiError) as refused:
                await me.checkout("order-1")
            assert codes(refused) == ["INSUFFICIENT_FUNDS"]

            order = await me.checkout("order-1", payment_method=PaymentMethod.CASH_ON_DELIVERY)
            assert order.status is OrderStatus.PLACED
            assert order.payment_method is PaymentMethod.CASH_ON_DELIVERY
            assert order.number.startswith("KG-")
            assert order.total.amount_minor == 72_550
            assert order.total.currency == "KGS"
            assert isinstance(order.created_at, dt.datetime)
            assert sorted(
                (i.product.name, i.quantity, i.unit_price.amount_minor, i.line_total.amount_minor)
                for i in order.items
            ) == [("Чай", 1, 12_550, 12_550), ("Чашка", 2, 30_000, 60_000)]
            # Replaying the key returns the same order.
            again = await me.checkout("order-1", payment_method=PaymentMethod.CASH_ON_DELIVERY)
            assert again.id == order.id

            assert await me.order(order.id) == order
            viewer = await me.viewer()
            assert viewer is not None
            assert (viewer.phone, viewer.market.code) == (PHONE, "kg")
            assert viewer.wallet.balance.amount_minor == 0
            assert [edge.node.number for edge in viewer.orders.edges] == [order.number]
            emptied = await me.cart()
            assert emptied is not None and emptied.cart.item_count == 0


async def test_a_refresh_rotates_the_tokens_and_a_reuse_is_refused(
    app_factory: Callable[..., Starlette],
) -> None:
    app = app_factory()
    async with serving(app) as base:
        url = f"{base}/graphql"
        _, refresh = await sign_in(url, app, PHONE)
        async with MarketgraphClient(url) as client:
            renewed = await client.refresh_session(refresh)
            assert renewed.refresh_token != refresh
            assert renewed.user.phone == PHONE
            with pytest.raises(GraphQLClientGraphQLMultiError) as reused:
                await client.refresh_session(refresh)  # single-use
            assert codes(reused) == ["UNAUTHENTICATED"]
        bearer = {"Authorization": f"Bearer {renewed.access_token}"}
        async with MarketgraphClient(url, headers=bearer) as me:
            viewer = await me.viewer()
            assert viewer is not None and viewer.phone == PHONE
