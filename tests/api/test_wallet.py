"""The wallet over GraphQL: balance, transactions, grantCredit and WalletTransaction nodes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import WalletTransaction
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    app_fixture,
    balance_of,
    count_rows,
    create_customer,
    create_transaction,
    gid,
    http_fixture,
    token_for,
    transactions_of,
)
from tests.helpers import data, error, error_code, gql

GRANT = """
mutation ($user: ID!, $amount: Int!, $reason: String!) {
  grantCredit(userId: $user, amountMinor: $amount, reason: $reason) {
    id kind amount { amountMinor currency formatted } externalId order { id }
  }
}
"""
WALLET = """
query ($first: Int, $after: String) {
  viewer {
    wallet { balance { amountMinor currency formatted } }
    transactions(first: $first, after: $after) {
      edges { cursor node { id kind amount { amountMinor } externalId } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
NODE = """
query ($id: ID!) {
  node(id: $id) { __typename id ... on WalletTransaction { kind amount { amountMinor } } }
}
"""


async def grant(
    http: httpx.AsyncClient, token: str | None, user: str, amount: int, reason: str = "goodwill"
) -> dict[str, Any]:
    variables = {"user": user, "amount": amount, "reason": reason}
    return await gql(http, GRANT, variables, token=token)


async def test_an_admin_grants_credit_with_a_grant_row(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    admin = await create_customer(stores, "kg")
    user = await create_customer(stores, "kg", balance_minor=500)
    admin_token = token_for(app, "kg", admin, admin=True)

    body = await grant(http, admin_token, gid("User", "kg", user.id), 1250, "sorry for the delay")

    granted = data(body)["grantCredit"]
    assert granted["kind"] == "GRANT"
    assert granted["amount"] == {
        "amountMinor": 1250,
        "currency": "KGS",
        "formatted": "12,50\u00a0сом",
    }
    assert granted["externalId"] is None and granted["order"] is None
    app_store = stores.store("kg", "app")
    assert await balance_of(app_store, user.id) == 1750
    [row] = await transactions_of(app_store, user.id)
    assert (row.kind, row.amount_minor, row.reason) == ("GRANT", 1250, "sorry for the delay")
    assert granted["id"] == gid("WalletTransaction", "kg", row.id)


async def test_an_admin_grants_across_markets(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    admin = await create_customer(stores, "kg")
    us_user = await create_customer(stores, "us")
    body = await grant(
        http, token_for(app, "kg", admin, admin=True), gid("User", "us", us_user.id), 300
    )
    assert data(body)["grantCredit"]["amount"]["currency"] == "USD"
    assert await balance_of(stores.store("us", "app"), us_user.id) == 300
    assert await count_rows(stores.store("kg", "app"), WalletTransaction) == 0


@pytest.mark.parametrize("amount", [0, -100])
async def test_a_grant_must_be_positive(
    app: Starlette, http: httpx.AsyncClient, stores: Databases, amount: int
) -> None:
    admin = await create_customer(stores, "kg")
    user = await create_customer(stores, "kg")
    body = await grant(
        http, token_for(app, "kg", admin, admin=True), gid("User", "kg", user.id), amount
    )
    assert error_code(body) == "BAD_USER_INPUT"
    assert error(body)["extensions"]["field"] == "amountMinor"
    assert await balance_of(stores.store("kg", "app"), user.id) == 0
    assert await count_rows(stores.store("kg", "app"), WalletTransaction) == 0


async def test_granting_needs_an_admin(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    member = await create_customer(stores, "kg")
    target = gid("User", "kg", member.id)
    assert error_code(await grant(http, token_for(app, "kg", member), target, 100)) == "FORBIDDEN"
    assert error_code(await grant(http, None, target, 100)) == "UNAUTHENTICATED"
    assert await balance_of(stores.store("kg", "app"), member.id) == 0


async def test_granting_to_an_unknown_user_is_not_found(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    admin = await create_customer(stores, "kg")
    token = token_for(app, "kg", admin, admin=True)
    # The admin's own key, in the US market, where no such user exists.
    assert error_code(await grant(http, token, gid("User", "us", admin.id), 100)) == "NOT_FOUND"
    assert error_code(await grant(http, token, "bogus", 100)) == "BAD_USER_INPUT"


async def test_balance_and_transactions_newest_first(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    user = await create_customer(stores, "kg")
    app_store = stores.store("kg", "app")
    made = [await create_transaction(app_store, user.id, amount) for amount in (100, 250, 75)]
    token = token_for(app, "kg", user)

    page = data(await gql(http, WALLET, {"first": 2}, token=token))["viewer"]
    assert page["wallet"]["balance"] == {
        "amountMinor": 425,
        "currency": "KGS",
        "formatted": "4,25\u00a0сом",
    }
    edges = page["transactions"]["edges"]
    assert [e["node"]["amount"]["amountMinor"] for e in edges] == [75, 250]
    assert page["transactions"]["pageInfo"]["hasNextPage"] is True
    after = page["transactions"]["pageInfo"]["endCursor"]
    rest = data(await gql(http, WALLET, {"first": 2, "after": after}, token=token))["viewer"]
    assert [e["node"]["id"] for e in rest["transactions"]["edges"]] == [
        gid("WalletTransaction", "kg", made[0].id)
    ]
    assert rest["transactions"]["pageInfo"]["hasNextPage"] is False
    zero = data(await gql(http, WALLET, {"first": 0}, token=token))["viewer"]["transactions"]
    assert zero == {"edges": [], "pageInfo": {"hasNextPage": True, "endCursor": None}}
    for first in (-1, 101):
        assert error_code(await gql(http, WALLET, {"first": first}, token=token)) == (
            "BAD_USER_INPUT"
        )


async def test_wallet_transaction_nodes_are_their_owners_only(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    user = await create_customer(stores, "kg")
    other = await create_customer(stores, "kg")
    admin = await create_customer(stores, "us")
    row = await create_transaction(stores.store("kg", "app"), user.id, 500)
    node_id = gid("WalletTransaction", "kg", row.id)

    mine = data(await gql(http, NODE, {"id": node_id}, token=token_for(app, "kg", user)))["node"]
    assert mine == {
        "__typename": "WalletTransaction",
        "id": node_id,
        "kind": "GRANT",
        "amount": {"amountMinor": 500},
    }
    theirs = await gql(http, NODE, {"id": node_id}, token=token_for(app, "kg", other))
    assert error_code(theirs) == "NOT_FOUND"
    # An admin of another market may read it.
    by_admin = await gql(http, NODE, {"id": node_id}, token=token_for(app, "us", admin, admin=True))
    assert data(by_admin)["node"] == mine
