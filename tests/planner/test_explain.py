"""Plans are visible: `marketgraph plan explain` prints what a document costs before it is
sent, and in development (never in production: `create_app`) a planned answer carries its
plan when asked (`X-Explain: 1`)."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from marketgraph.cli import cli
from tests.helpers import http_client
from tests.planner.conftest import Seeded

VIEWER = (
    "{ viewer { cart { items { quantity product { name } } subtotal { amountMinor } } "
    "transactions(first: 5) { edges { node { amount { amountMinor } } } } } }"
)


def explain(*args: str) -> str:
    result = CliRunner().invoke(cli, ["plan", "explain", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_viewer_query_is_two_statements_with_its_lookups_fused() -> None:
    text = explain(VIEWER, "--market", "us")
    assert text.startswith("planned")
    assert "statements per store, at most: app 1, auth 1" in text
    assert "step on app keyed by User.id: User.cart, User.transactions" in text
    assert "fused Cart.items: many CartItem" in text
    assert "FROM us_auth.users" in text and "us_app.cart_items" in text  # the market's SQL


def test_a_store_read_twice_is_one_snapshot() -> None:
    text = explain("{ viewer { orders(first: 2) { edges { node { user { cart { id } } } } } } }")
    assert "statements per store, at most: app 2, auth 2" in text
    assert "REPEATABLE READ READ ONLY" in text


def test_what_is_not_planned_says_why() -> None:
    assert "a mutation is not a read" in explain('mutation { logout(refreshToken: "x") }')
    assert "not planned" in explain("{ __schema { queryType { name } } }")


async def test_x_explain_adds_the_plan_when_asked(app_factory: Any, seeded: Seeded) -> None:
    query = {"query": "{ products(first: 1) { edges { node { name } } } }"}
    app = app_factory(query_planner="on", environment="development")
    async with http_client(app) as client:
        for asked in (True, False):
            headers = {"X-Market": "kg", **({"X-Explain": "1"} if asked else {})}
            body = (await client.post("/graphql", json=query, headers=headers)).json()
            assert body["data"]["products"]["edges"]
            plan = (body.get("extensions") or {}).get("plan")
            assert (plan is not None) is asked
            if asked:
                assert any("Product rows on app" in line for line in plan)
