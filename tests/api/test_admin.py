"""Admin reads over GraphQL: marketStats (partial when a market is down), userByPhone,
users(market:, preferences:), and who may call them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from marketgraph.app import create_app
from marketgraph.db.databases import Databases
from marketgraph.db.models.app import OrderStatus, PaymentMethod
from marketgraph.db.topology import Topology
from marketgraph.kv import MemoryStore
from marketgraph.resolvers.accounts import promote
from marketgraph.services import build_services
from marketgraph.settings import Settings
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    app_fixture,
    create_customer,
    create_order,
    create_product,
    create_user,
    gid,
    http_fixture,
    token_for,
)
from tests.helpers import (
    allow_resend,
    closed_port,
    data,
    error_code,
    gql,
    http_client,
    phone_login,
    silent_server,
)

STATS = """
{
  marketStats {
    market { code }
    users orders
    revenue { amountMinor currency formatted }
    walletBalances { amountMinor currency }
  }
}
"""
BY_PHONE = "query ($phone: String!) { userByPhone(phone: $phone) { id phone market { code } } }"
USERS = """
query ($market: ID!, $first: Int, $after: String, $preferences: JSON) {
  users(market: $market, first: $first, after: $after, preferences: $preferences) {
    edges { cursor node { id phone preferences market { code } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
US_PHONE = "+12015550123"
KG_PHONE = "+996700123456"


@pytest.fixture
async def admin_token(app: Starlette, stores: Databases) -> str:
    admin = await create_customer(stores, "kg")
    return token_for(app, "kg", admin, admin=True)


async def test_market_stats_figures_per_market(
    http: httpx.AsyncClient, stores: Databases, admin_token: str
) -> None:
    kg_app = stores.store("kg", "app")
    tea = await create_product(kg_app)
    buyer = await create_customer(stores, "kg", balance_minor=200)
    await create_customer(stores, "kg", balance_minor=100)
    await create_order(kg_app, "kg", buyer.id, [(tea.id, 2, 500)])
    await create_order(
        kg_app,
        "kg",
        buyer.id,
        [(tea.id, 1, 700)],
        status=OrderStatus.PAID,
        payment_method=PaymentMethod.WALLET,
    )
    await create_order(kg_app, "kg", buyer.id, [(tea.id, 9, 1000)], status=OrderStatus.CANCELLED)
    await create_customer(stores, "us", balance_minor=4999)

    stats = {
        s["market"]["code"]: s
        for s in data(await gql(http, STATS, token=admin_token))["marketStats"]
    }

    assert stats["kg"] == {
        "market": {"code": "kg"},
        "users": 3,  # the admin too
        "orders": 3,
        "revenue": {"amountMinor": 1700, "currency": "KGS", "formatted": "17,00\u00a0сом"},
        "walletBalances": {"amountMinor": 300, "currency": "KGS"},
    }
    assert stats["us"] == {
        "market": {"code": "us"},
        "users": 1,
        "orders": 0,
        "revenue": {"amountMinor": 0, "currency": "USD", "formatted": "$0.00"},
        "walletBalances": {"amountMinor": 4999, "currency": "USD"},
    }


@asynccontextmanager
async def app_with_kg_app_store_at(stores: Databases, port: int) -> AsyncIterator[Starlette]:
    """An app whose KG app store points at `port` on 127.0.0.1 (the other stores as usual)."""
    urls = {
        **stores.settings.database_urls,
        "KG_APP_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/gone",
    }
    settings = Settings.model_validate(
        {
            **stores.settings.model_dump(),
            "database_urls": urls,
            "sms_backend": "memory",
            "db_pool_timeout": 1,
            "db_connect_timeout": 1,
            "health_timeout": 1,
        }
    )
    databases = Databases(
        Topology.resolve(settings.markets.codes, settings.database_urls), settings
    )
    app = create_app(settings)
    app.state.services = build_services(settings, databases, MemoryStore())
    try:
        yield app
    finally:
        await databases.dispose()


async def _partial_stats(app: Starlette, stores: Databases) -> tuple[dict[str, Any], float]:
    admin = await create_customer(stores, "us")
    await create_customer(stores, "us", balance_minor=75)
    async with http_client(app) as client:
        started = time.monotonic()
        body = await gql(client, STATS, token=token_for(app, "us", admin, admin=True))
        return body, time.monotonic() - started


def _assert_partial(body: dict[str, Any]) -> None:
    assert body["data"]["marketStats"] == [
        {
            "market": {"code": "us"},
            "users": 2,
            "orders": 0,
            "revenue": {"amountMinor": 0, "currency": "USD", "formatted": "$0.00"},
            "walletBalances": {"amountMinor": 75, "currency": "USD"},
        }
    ]
    [failure] = body["errors"]
    assert failure["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert failure["extensions"]["market"] == "kg"
    assert failure["extensions"]["retryAfter"] >= 1
    assert "127.0.0.1" not in str(body) and "gone" not in str(body)


async def test_a_market_whose_store_refuses_connections_is_an_error_beside_the_others(
    stores: Databases,
) -> None:
    async with app_with_kg_app_store_at(stores, closed_port()) as app:
        body, _ = await _partial_stats(app, stores)
    _assert_partial(body)


async def test_a_hung_market_is_given_up_on_after_the_timeout(stores: Databases) -> None:
    async with silent_server() as port, app_with_kg_app_store_at(stores, port) as app:
        body, elapsed = await _partial_stats(app, stores)
    _assert_partial(body)
    assert elapsed < 10


async def test_user_by_phone_finds_the_market_and_the_user(
    http: httpx.AsyncClient, stores: Databases, admin_token: str
) -> None:
    us_user = await create_customer(stores, "us", phone=US_PHONE)
    found = data(await gql(http, BY_PHONE, {"phone": US_PHONE}, token=admin_token))["userByPhone"]
    assert found == {
        "id": gid("User", "us", us_user.id),
        "phone": US_PHONE,
        "market": {"code": "us"},
    }
    # Written another way, the same number.
    spaced = data(await gql(http, BY_PHONE, {"phone": "+1 (201) 555-0123"}, token=admin_token))
    assert spaced["userByPhone"] == found
    # A valid number nobody has: null. An invalid one and a market nobody serves: their codes.
    assert (
        data(await gql(http, BY_PHONE, {"phone": KG_PHONE}, token=admin_token))["userByPhone"]
        is None
    )
    assert (
        error_code(await gql(http, BY_PHONE, {"phone": "12"}, token=admin_token)) == "INVALID_PHONE"
    )
    canadian = await gql(http, BY_PHONE, {"phone": "+16045550123"}, token=admin_token)
    assert error_code(canadian) == "UNSUPPORTED_MARKET"


async def test_users_filter_by_preferences_containment(
    http: httpx.AsyncClient, stores: Databases, admin_token: str
) -> None:
    auth = stores.store("kg", "auth")
    sms = await create_user(
        auth, phone="+996700000001", preferences={"notifications": {"sms": True}, "theme": "dark"}
    )
    both = await create_user(
        auth, phone="+996700000002", preferences={"notifications": {"sms": True, "email": True}}
    )
    await create_user(auth, phone="+996700000003", preferences={"notifications": {"sms": False}})
    await create_user(auth, phone="+996700000004", preferences={})
    await create_user(
        stores.store("us", "auth"), phone=US_PHONE, preferences={"notifications": {"sms": True}}
    )

    async def phones(preferences: Any, market: str = "kg") -> list[str]:
        variables = {"market": market, "preferences": preferences}
        body = await gql(http, USERS, variables, token=admin_token)
        return [e["node"]["phone"] for e in data(body)["users"]["edges"]]

    assert await phones({"notifications": {"sms": True}}) == [sms.phone, both.phone]
    assert await phones({"notifications": {"sms": True, "email": True}}) == [both.phone]
    assert await phones({"theme": "dark"}) == [sms.phone]
    assert await phones({"theme": "light"}) == []
    assert await phones({"notifications": {"sms": True}}, "us") == [US_PHONE]
    assert len(await phones(None)) == 5  # the four and the admin
    assert len(await phones({})) == 5  # everything contains {}
    body = await gql(http, USERS, {"market": "kg", "preferences": [1]}, token=admin_token)
    assert error_code(body) == "BAD_USER_INPUT"


async def test_users_pages_and_bounds(
    http: httpx.AsyncClient, stores: Databases, admin_token: str
) -> None:
    for n in range(4):
        await create_customer(stores, "us", phone=f"+1201555{n:04d}")
    first = data(await gql(http, USERS, {"market": "us", "first": 3}, token=admin_token))["users"]
    assert len(first["edges"]) == 3 and first["pageInfo"]["hasNextPage"] is True
    after = first["pageInfo"]["endCursor"]
    rest = data(
        await gql(http, USERS, {"market": "us", "first": 3, "after": after}, token=admin_token)
    )
    assert len(rest["users"]["edges"]) == 1 and rest["users"]["pageInfo"]["hasNextPage"] is False
    seen = [e["node"]["id"] for e in first["edges"] + rest["users"]["edges"]]
    assert len(set(seen)) == 4
    for first_value in (101, -1):
        body = await gql(http, USERS, {"market": "us", "first": first_value}, token=admin_token)
        assert error_code(body) == "BAD_USER_INPUT"
    assert error_code(await gql(http, USERS, {"market": "zz"}, token=admin_token)) == "NOT_FOUND"


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (STATS, None),
        (BY_PHONE, {"phone": US_PHONE}),
        (USERS, {"market": "kg"}),
    ],
)
async def test_admin_fields_refuse_members_and_anonymous_callers(
    app: Starlette,
    http: httpx.AsyncClient,
    stores: Databases,
    query: str,
    variables: dict[str, Any] | None,
) -> None:
    member = await create_customer(stores, "kg")
    assert (
        error_code(await gql(http, query, variables, token=token_for(app, "kg", member)))
        == "FORBIDDEN"
    )
    assert error_code(await gql(http, query, variables)) == "UNAUTHENTICATED"


async def test_a_promoted_user_signs_in_again_as_admin(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    before = (await phone_login(http, app, KG_PHONE))["accessToken"]
    assert error_code(await gql(http, STATS, token=before)) == "FORBIDDEN"
    await promote(stores, stores.settings.markets.require("kg"), KG_PHONE)
    await allow_resend(app.state.services.kv, KG_PHONE)
    after = (await phone_login(http, app, KG_PHONE))["accessToken"]
    codes = [s["market"]["code"] for s in data(await gql(http, STATS, token=after))["marketStats"]]
    assert sorted(codes) == ["kg", "us"]
