"""API keys over HTTP: admins only, shown once, stored hashed, usable, revocable."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import select, update
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.auth import ApiKey, User, UserType
from marketgraph.ids import decode_id
from tests.factories import create_customer, create_order, create_product, gid
from tests.helpers import (
    VIEWER,
    data,
    error_code,
    gql,
    http_client,
    jwt_parts,
    phone_login,
    refresh,
)

AppFactory = Callable[..., Starlette]
KG_ADMIN = "+996700123456"
KG_MEMBER = "+996555123456"

CREATE = """
mutation ($name: String!, $market: ID!) {
  createApiKey(name: $name, market: $market) { id name key market { code } }
}
"""
REVOKE = "mutation ($id: ID!) { revokeApiKey(id: $id) }"


async def admin_token(client: httpx.AsyncClient, app: Starlette, stores: Databases) -> str:
    """A KG user made ADMIN in the database; a refresh picks up the new role."""
    session = await phone_login(client, app, KG_ADMIN)
    async with stores.store("kg", "auth").begin() as db:
        await db.execute(
            update(User).where(User.phone == KG_ADMIN).values(user_type=UserType.ADMIN)
        )
    token: str = data(await refresh(client, session["refreshToken"]))["refreshToken"]["accessToken"]
    assert "admin" in jwt_parts(token)[1]["roles"]
    return token


async def key_rows(stores: Databases, market: str) -> list[Any]:
    async with stores.store(market, "auth").connect() as conn:
        return list((await conn.execute(select(ApiKey))).all())


async def create(
    client: httpx.AsyncClient,
    name: str = "warehouse sync",
    market: str = "kg",
    *,
    token: str | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    return await gql(client, CREATE, {"name": name, "market": market}, token=token, api_key=api_key)


async def test_only_admins_create_keys(app_factory: AppFactory, stores: Databases) -> None:
    app = app_factory()
    async with http_client(app) as client:
        assert error_code(await create(client)) == "UNAUTHENTICATED"
        member = (await phone_login(client, app, KG_MEMBER))["accessToken"]
        assert error_code(await create(client, token=member)) == "FORBIDDEN"
        assert error_code(await gql(client, REVOKE, {"id": "x"}, token=member)) == "FORBIDDEN"
    assert await key_rows(stores, "kg") == []
    assert await key_rows(stores, "us") == []


async def test_a_key_is_shown_once_stored_hashed_and_works(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        admin = await admin_token(client, app, stores)
        created = data(await create(client, token=admin))["createApiKey"]
        key = created["key"]
        assert key.startswith("mg_kg_")
        assert created["name"] == "warehouse sync"
        assert created["market"] == {"code": "kg"}
        parsed = decode_id(created["id"], "ApiKey")
        assert parsed.market == "kg"

        # Usable as `Authorization: ApiKey <key>` for an admin-only mutation.
        made_by_key = data(await create(client, "second", api_key=key))["createApiKey"]
        assert made_by_key["key"] != key
        # A key is not a user.
        assert data(await gql(client, VIEWER, api_key=key)) == {"viewer": None}

    (row, second) = sorted(await key_rows(stores, "kg"), key=lambda r: r.created_at)
    assert row.id == parsed.key
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert row.prefix == key[:14]
    assert key[14:] not in row.prefix
    assert all(key not in str(value) for value in row)  # no plaintext in any column
    async with stores.store("kg", "auth").connect() as conn:
        admin_id = (await conn.execute(select(User.id).where(User.phone == KG_ADMIN))).scalar()
    assert row.created_by == admin_id
    assert second.created_by is None  # made by a key, not a user
    assert await key_rows(stores, "us") == []


async def test_a_revoked_key_is_refused(app_factory: AppFactory, stores: Databases) -> None:
    app = app_factory()
    async with http_client(app) as client:
        admin = await admin_token(client, app, stores)
        created = data(await create(client, token=admin))["createApiKey"]
        data(await create(client, "probe", api_key=created["key"]))

        assert data(await gql(client, REVOKE, {"id": created["id"]}, token=admin)) == {
            "revokeApiKey": True
        }
        assert error_code(await create(client, "again", api_key=created["key"])) == (
            "UNAUTHENTICATED"
        )
        assert error_code(await gql(client, VIEWER, api_key=created["key"])) == ("UNAUTHENTICATED")
        # Revoking twice: nothing left to revoke.
        assert data(await gql(client, REVOKE, {"id": created["id"]}, token=admin)) == {
            "revokeApiKey": False
        }
    (row, _) = sorted(await key_rows(stores, "kg"), key=lambda r: r.created_at)
    assert row.revoked_at is not None


async def test_a_key_is_scoped_to_its_market(app_factory: AppFactory, stores: Databases) -> None:
    app = app_factory()
    async with http_client(app) as client:
        admin = await admin_token(client, app, stores)
        created = data(await create(client, "us feed", "us", token=admin))["createApiKey"]
        assert created["key"].startswith("mg_us_")
        assert created["market"] == {"code": "us"}
        (row,) = await key_rows(stores, "us")
        assert row.created_by is None  # the KG admin is no user of the US store
        assert await key_rows(stores, "kg") == []
        # The key works, and carries its market.
        again = data(await create(client, "us feed 2", "us", api_key=created["key"]))
        assert again["createApiKey"]["market"] == {"code": "us"}
        # The same secret under another market's prefix is nobody's key.
        forged = "mg_kg_" + created["key"].removeprefix("mg_us_")
        assert error_code(await create(client, api_key=forged)) == "UNAUTHENTICATED"


async def test_bad_key_requests(app_factory: AppFactory, stores: Databases) -> None:
    app = app_factory()
    async with http_client(app) as client:
        admin = await admin_token(client, app, stores)
        assert error_code(await create(client, "zz feed", "zz", token=admin)) == "NOT_FOUND"
        assert error_code(await create(client, "   ", token=admin)) == "BAD_USER_INPUT"
        assert error_code(await gql(client, REVOKE, {"id": "nonsense"}, token=admin)) == (
            "BAD_USER_INPUT"
        )
        for bad in ("mg_kg_", "mg_zz_abc", "nothing", "mg_kg_unknownkey"):
            assert error_code(await gql(client, VIEWER, api_key=bad)) == "UNAUTHENTICATED", bad
    assert await key_rows(stores, "kg") == []


async def test_a_key_reads_and_writes_only_its_own_market(
    app_factory: AppFactory, stores: Databases
) -> None:
    """An admin user reaches every market; a key stays in the market it was made for."""
    app = app_factory()
    async with http_client(app) as client:
        admin = await admin_token(client, app, stores)
        kg_member = await create_customer(stores, "kg", phone=KG_MEMBER)
        kg_app = stores.store("kg", "app")
        tea = await create_product(kg_app)
        kg_order = await create_order(kg_app, "kg", kg_member.id, [(tea.id, 1, tea.price_minor)])
        us_user = await create_customer(stores, "us", phone="+12025550123")
        kg_key = data(await create(client, "kg feed", "kg", token=admin))["createApiKey"]
        us_key = data(await create(client, "us feed", "us", token=admin))["createApiKey"]["key"]

        def ask(query: str, variables: dict[str, Any] | None = None) -> Any:
            return gql(client, query, variables, api_key=us_key)

        users = "query ($m: ID!) { users(market: $m) { edges { node { id } } } }"
        assert data(await ask(users, {"m": "us"}))["users"]["edges"] == [
            {"node": {"id": gid("User", "us", us_user.id)}}
        ]
        assert error_code(await ask(users, {"m": "kg"})) == "NOT_FOUND"
        for type_name, key in (("User", kg_member.id), ("Order", kg_order.id)):
            node = "query ($id: ID!) { node(id: $id) { id } }"
            assert error_code(await ask(node, {"id": gid(type_name, "kg", key)})) == "NOT_FOUND"
        order = "query ($id: ID!) { order(id: $id) { id } }"
        assert error_code(await ask(order, {"id": gid("Order", "kg", kg_order.id)})) == "NOT_FOUND"
        by_phone = "query ($p: String!) { userByPhone(phone: $p) { id } }"
        assert error_code(await ask(by_phone, {"p": KG_MEMBER})) == "NOT_FOUND"
        stats = data(await ask("{ marketStats { market { code } } }"))["marketStats"]
        assert stats == [{"market": {"code": "us"}}]
        assert error_code(await create(client, "kg again", "kg", api_key=us_key)) == "NOT_FOUND"
        assert data(await ask(REVOKE, {"id": kg_key["id"]}))["revokeApiKey"] is False
        # The KG key still works; the admin user still reaches both markets.
        assert data(await create(client, "kg 2", "kg", api_key=kg_key["key"]))
        admin_stats = data(await gql(client, "{ marketStats { market { code } } }", token=admin))
        assert [s["market"]["code"] for s in admin_stats["marketStats"]] == ["kg", "us"]
