"""Queries past the size limits are refused with QUERY_TOO_COMPLEX before any statement runs,
on both execution paths; the benchmark's and other real queries are not."""

from __future__ import annotations

import httpx
import pytest
from graphql import get_introspection_query
from starlette.applications import Starlette

from bench.queries import QUERIES
from marketgraph.db.databases import Databases
from marketgraph.schema.limits import QueryBounds
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    SqlCounter,
    app_fixture,
    create_customer,
    http_fixture,
    sql_counter_fixture,
    token_for,
)
from tests.helpers import data, error, gql

# Order.user leads back to User.orders: a million orders in a few lines.
CYCLE = """
{ users(market: "kg", first: 100) { edges { node {
    orders(first: 100) { edges { node { user {
      orders(first: 100) { edges { node { number } } } } } } } } } } }
"""
DEEP = """
query ($id: ID!) { node(id: $id) { ... on Order { user { orders(first: 1) { edges { node {
  user { orders(first: 1) { edges { node { user { orders(first: 1) { edges { node {
    number } } } } } } } } } } } } } } }
"""
ALIASES = (
    "{ "
    + " ".join(f"m{n}: markets {{ code }}" for n in range(QueryBounds().max_aliases + 1))
    + " }"
)
# Refused as variables could make it: a $first of 100 at each of three levels.
VARIABLE_PAGES = """
query ($first: Int) { users(market: "kg", first: $first) { edges { node {
  orders(first: $first) { edges { node { items { product { name } } } } } } } } }
"""


@pytest.mark.parametrize(
    ("query", "variables", "says"),
    [
        (CYCLE, None, "could return about"),
        (DEEP, {"id": "x"}, "levels deep"),
        (ALIASES, None, "aliases"),
        (VARIABLE_PAGES, {"first": 2}, "could return about"),
    ],
    ids=["cycle", "deep", "aliases", "variable-pages"],
)
async def test_a_query_past_the_limits_is_refused_before_it_runs(
    app: Starlette,
    http: httpx.AsyncClient,
    stores: Databases,
    sql_counter: SqlCounter,
    query: str,
    variables: dict[str, str] | None,
    says: str,
) -> None:
    admin = await create_customer(stores, "kg", user_type="ADMIN")
    token = token_for(app, "kg", admin, admin=True)
    with sql_counter.counting():
        body = await gql(http, query, variables, token=token)
    assert "data" not in body  # a request error: nothing executed
    assert error(body)["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert says in error(body)["message"]
    assert sum(sql_counter.counts.values()) == 0


async def test_real_queries_and_introspection_are_within_the_limits(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    admin = await create_customer(stores, "kg", user_type="ADMIN")
    token = token_for(app, "kg", admin, admin=True)
    deepest = """
    { users(market: "kg", first: 50) { edges { node { orders(first: 10) { edges { node {
        user { id } items { product { price { formatted } } } } } } } } } }
    """
    for query in [*(q.document for q in QUERIES.values()), deepest]:
        data(await gql(http, query, token=token))
    # GraphiQL's introspection query, nine levels of `ofType` included.
    assert data(await gql(http, get_introspection_query(descriptions=True)))["__schema"]
