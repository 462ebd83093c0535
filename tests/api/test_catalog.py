"""The catalog over GraphQL: anonymous reads per market, search on name and SKU (Cyrillic too),
keyset pagination and the `first` bounds, product(id:) across markets."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    app_fixture,
    create_customer,
    create_product,
    gid,
    http_fixture,
    token_for,
)
from tests.helpers import data, error_code, gql

PRODUCTS = """
query ($market: ID, $first: Int, $after: String, $search: String) {
  products(market: $market, first: $first, after: $after, search: $search) {
    edges {
      cursor
      node { id sku name stock market { code } price { amountMinor currency formatted } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

PRODUCT = "query ($id: ID!) { product(id: $id) { id name market { code } price { currency } } }"


async def products(
    http: httpx.AsyncClient, headers: dict[str, str] | None = None, **variables: Any
) -> dict[str, Any]:
    return await gql(http, PRODUCTS, variables, headers=headers)


def names(body: dict[str, Any]) -> list[str]:
    return [edge["node"]["name"] for edge in data(body)["products"]["edges"]]


async def test_the_kg_catalog_is_readable_anonymously_by_header_or_argument(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    kg = await create_product(stores.store("kg", "app"), name="Чай", price_minor=12500)
    await create_product(stores.store("us", "app"), name="Coffee", price_minor=450)

    by_header = data(await products(http, headers={"X-Market": "kg"}))["products"]
    by_argument = data(await products(http, market="kg"))["products"]
    assert by_header == by_argument
    [edge] = by_header["edges"]
    assert edge["node"]["id"] == gid("Product", "kg", kg.id)
    assert edge["node"]["market"] == {"code": "kg"}
    assert edge["node"]["price"] == {
        "amountMinor": 12500,
        "currency": "KGS",
        "formatted": "125,00\u00a0сом",
    }
    assert names(await products(http, headers={"X-Market": "us"})) == ["Coffee"]
    # The argument wins over the request's market.
    assert names(await products(http, headers={"X-Market": "us"}, market="kg")) == ["Чай"]


async def test_a_signed_in_user_reads_another_markets_catalog_by_argument(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    await create_product(stores.store("kg", "app"), name="Чай")
    us_user = await create_customer(stores, "us")
    body = await gql(http, PRODUCTS, {"market": "kg"}, token=token_for(app, "us", us_user))
    assert names(body) == ["Чай"]


async def test_an_unknown_market_is_not_found(http: httpx.AsyncClient, stores: Databases) -> None:
    assert error_code(await products(http, market="zz")) == "NOT_FOUND"


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("чай", ["Чай чёрный", "Чай зелёный"]),
        ("ЧАЙ", ["Чай чёрный", "Чай зелёный"]),
        ("чай чёр", ["Чай чёрный"]),
        ("зел", ["Чай зелёный"]),
        ("коф", []),
        ("!!", []),  # no word: nothing matches
        ("", ["Чай чёрный", "Чай зелёный", "Green tea"]),  # blank: the whole catalog
        ("   ", ["Чай чёрный", "Чай зелёный", "Green tea"]),
        ("green", ["Green tea"]),
        ("TEA", ["Чай чёрный", "Green tea"]),  # a SKU word and a name word
        ("TEA-00", ["Чай чёрный"]),  # SKU prefixes, as the SKU is written
        ("tea-0012", ["Чай чёрный"]),
        ("KGX", ["Чай зелёный", "Green tea"]),
        ("KGX-2", ["Чай зелёный"]),
        ("KGX-20", ["Чай зелёный"]),
        ("KGX-300", ["Green tea"]),
    ],
)
async def test_search_matches_name_and_sku_prefixes(
    http: httpx.AsyncClient, stores: Databases, search: str, expected: list[str]
) -> None:
    app_store = stores.store("kg", "app")
    await create_product(app_store, name="Чай чёрный", sku="TEA-0012")
    await create_product(app_store, name="Чай зелёный", sku="KGX-2001")
    await create_product(app_store, name="Green tea", sku="KGX-3001")
    await create_product(stores.store("us", "app"), name="Чай американский", sku="TEA-0099")
    assert names(await products(http, market="kg", search=search)) == expected


async def test_keyset_pages_follow_the_cursor(http: httpx.AsyncClient, stores: Databases) -> None:
    made = [await create_product(stores.store("kg", "app"), name=f"P{i}") for i in range(5)]

    first = data(await products(http, market="kg", first=2))["products"]
    assert [e["node"]["name"] for e in first["edges"]] == ["P0", "P1"]
    assert first["pageInfo"] == {"hasNextPage": True, "endCursor": first["edges"][1]["cursor"]}

    second = data(await products(http, market="kg", first=2, after=first["pageInfo"]["endCursor"]))
    assert [e["node"]["name"] for e in second["products"]["edges"]] == ["P2", "P3"]
    assert second["products"]["pageInfo"]["hasNextPage"] is True

    last = data(
        await products(
            http, market="kg", first=2, after=second["products"]["pageInfo"]["endCursor"]
        )
    )["products"]
    assert [e["node"]["name"] for e in last["edges"]] == ["P4"]
    assert last["pageInfo"]["hasNextPage"] is False

    # Exactly a page left: no next page.
    exact = data(await products(http, market="kg", first=5))["products"]
    assert len(exact["edges"]) == 5 and exact["pageInfo"]["hasNextPage"] is False

    # A cursor stays valid when rows before it are added: keyset, not offset.
    await create_product(stores.store("kg", "app"), name="P5")
    again = data(await products(http, market="kg", first=2, after=first["pageInfo"]["endCursor"]))
    assert [e["node"]["name"] for e in again["products"]["edges"]] == ["P2", "P3"]
    assert len(made) == 5


async def test_first_zero_is_an_empty_page_that_knows_what_follows(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    empty = data(await products(http, market="kg", first=0))["products"]
    assert empty == {"edges": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}
    await create_product(stores.store("kg", "app"))
    one = data(await products(http, market="kg", first=0))["products"]
    assert one == {"edges": [], "pageInfo": {"hasNextPage": True, "endCursor": None}}


@pytest.mark.parametrize("first", [101, -1, 1000])
async def test_first_out_of_bounds_is_bad_user_input(
    http: httpx.AsyncClient, stores: Databases, first: int
) -> None:
    body = await products(http, market="kg", first=first)
    assert error_code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == "first"


async def test_first_100_is_allowed(http: httpx.AsyncClient, stores: Databases) -> None:
    assert data(await products(http, market="kg", first=100))["products"]["edges"] == []


async def test_a_malformed_cursor_is_bad_user_input(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    body = await products(http, market="kg", after="not a cursor")
    assert error_code(body) == "BAD_USER_INPUT"


async def test_product_by_id_from_any_market(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    kg = await create_product(stores.store("kg", "app"), name="Чай")
    us_user = await create_customer(stores, "us")
    kg_id = gid("Product", "kg", kg.id)
    expected = {"id": kg_id, "name": "Чай", "market": {"code": "kg"}, "price": {"currency": "KGS"}}
    # Anonymous in the US market, and a US user: catalog data is public across markets.
    anonymous = await gql(http, PRODUCT, {"id": kg_id}, headers={"X-Market": "us"})
    assert data(anonymous)["product"] == expected
    signed_in = await gql(http, PRODUCT, {"id": kg_id}, token=token_for(app, "us", us_user))
    assert data(signed_in)["product"] == expected
    # Routed by the market inside the id: the same key in the US store is not this product.
    assert data(await gql(http, PRODUCT, {"id": gid("Product", "us", kg.id)}))["product"] is None


async def test_product_with_a_bad_id_is_bad_user_input(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    assert error_code(await gql(http, PRODUCT, {"id": "garbage"})) == "BAD_USER_INPUT"
    order_id = gid("Order", "kg", (await create_product(stores.store("kg", "app"))).id)
    assert error_code(await gql(http, PRODUCT, {"id": order_id})) == "BAD_USER_INPUT"
