"""The catalog in GraphQL: Product and its connection."""

from __future__ import annotations

from typing import Any

import strawberry

from marketgraph import markets
from marketgraph.context import Info
from marketgraph.db.models.app import Product as ProductRow
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id
from marketgraph.reads.derive import FromRow, register_connection
from marketgraph.reads.spec import Column, IdOf, MarketOf, MoneyOf, TypeReads
from marketgraph.resolvers import catalog
from marketgraph.resolvers.pagination import check_first, decode_cursor
from marketgraph.schema.common import Money, Node, PageInfo, edges_of, page_info
from marketgraph.schema.markets import Market

PRODUCT_READS = TypeReads(
    "Product",
    ProductRow.__table__,  # type: ignore[arg-type]
    "app",
    {
        "id": IdOf("Product"),
        "market": MarketOf(),
        "sku": Column("sku"),
        "name": Column("name"),
        "description": Column("description"),
        "price": MoneyOf(("price_minor",)),
        "stock": Column("stock"),
    },
)


@strawberry.type(description="A product of one market's catalog, priced in its currency.")
class Product(Node, FromRow):
    READS = PRODUCT_READS
    market: Market
    sku: str
    name: str
    description: str | None
    price: Money
    stock: int = strawberry.field(description="Units available now.")
    row: strawberry.Private[Any]
    market_data: strawberry.Private[markets.Market]


@strawberry.type
class ProductEdge:
    cursor: str
    node: Product


@strawberry.type
class ProductConnection:
    edges: list[ProductEdge]
    page_info: PageInfo


register_connection("Product", ProductConnection, ProductEdge)


async def products(
    info: Info,
    market: strawberry.ID | None,
    first: int | None,
    after: str | None,
    search: str | None,
) -> ProductConnection:
    """A market's catalog page (anonymous access allowed: catalogs are public)."""
    ctx = info.context
    limit = check_first(first)
    found = ctx.markets.get(str(market)) if market is not None else ctx.market
    if found is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"No market {market!r}", field="market")
    async with ctx.reading(ctx.databases.store(found.code, "app")) as conn:
        page = await catalog.list_products(conn, limit, decode_cursor(after), search)
    return ProductConnection(
        edges=[
            ProductEdge(cursor=cursor, node=node)
            for cursor, node in edges_of(page, lambda row: Product.from_row(row, found))
        ],
        page_info=page_info(page.rows, page.has_next),
    )


async def product_by_id(info: Info, product_gid: str, field: str = "id") -> Product | None:
    """Any market's product by id: catalog data is readable from every market."""
    ctx = info.context
    parsed = decode_id(product_gid, "Product", field=field)
    market = ctx.markets.get(parsed.market)
    if market is None:
        return None
    row = await ctx.loaders_for(market.code).products_by_id.load(parsed.key)
    return Product.from_row(row, market) if row is not None else None
