"""Catalog: products by id (the loader's batch) and one market's searchable product list."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, Row, Select, String, Uuid, bindparam, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from marketgraph.db.models.app import Product, product_search_document
from marketgraph.resolvers.pagination import Page, page_of
from marketgraph.resolvers.statements import one_per_key

PRODUCT_COLUMNS = tuple(Product.__table__.c)
# The GIN index's own expression, so searches use the index.
SEARCH_DOCUMENT = product_search_document(Product.name, Product.sku)
_WORD = re.compile(r"\w+", re.UNICODE)


async def load_products_by_id(
    conn: AsyncConnection, keys: list[uuid.UUID]
) -> list[Row[Any] | None]:
    return await one_per_key(conn, PRODUCT_COLUMNS, Product.id, keys)


def search_query(text: str) -> str | None:
    """A prefix tsquery of the terms in `text` ("чай чёр" → "'чай':* & 'чёр':*"); None if no
    word.

    Each whitespace-separated term is a quoted operand, so PostgreSQL's parser splits it
    exactly as it split the indexed document: a SKU as written ("KG-00" → 'kg':* <-> '-00':*)
    matches, where splitting on word characters in Python ("kg", "00") would not, since the
    parser indexes "KG-0001" as 'kg' and '-0001'. Quotes and backslashes are dropped, so the
    operand cannot break out of its quotes.
    """
    terms = [t.replace("\\", "").replace("'", "") for t in text.lower().split()]
    return " & ".join(f"'{t}':*" for t in [t for t in terms if _WORD.search(t)][:8]) or None


def catalog_page(columns: Sequence[Any], *, after: bool, search: bool) -> Select[Any]:
    """A page of the catalog in creation order: `:limit` rows, after `:after`, matching the
    tsquery `:query` — the statement both execution paths run."""
    stmt = select(*columns).order_by(Product.id).limit(bindparam("limit", type_=Integer))
    if after:
        stmt = stmt.where(Product.id > bindparam("after", type_=Uuid))
    if search:
        tsquery = func.to_tsquery(
            literal_column("'simple'::regconfig"), bindparam("query", type_=String)
        )
        stmt = stmt.where(SEARCH_DOCUMENT.bool_op("@@")(tsquery))
    return stmt


def catalog_params(
    first: int, after: uuid.UUID | None, search: str | None
) -> dict[str, Any] | None:
    """The parameters of `catalog_page` (its `search` variant when they hold a `query`), or
    None when `search` has no word, so nothing can match. A blank search is no search: a
    cleared search box lists the catalog."""
    params: dict[str, Any] = {"limit": first + 1, "after": after}
    if search is not None and search.strip():
        query = search_query(search)
        if query is None:
            return None
        params["query"] = query
    return params


async def list_products(
    conn: AsyncConnection, first: int, after: uuid.UUID | None, search: str | None
) -> Page:
    """A page of the catalog in creation order, optionally matching every word of `search`
    as a prefix of the name's or SKU's words."""
    params = catalog_params(first, after, search)
    if params is None:
        return Page([], False)
    stmt = catalog_page(PRODUCT_COLUMNS, after=after is not None, search="query" in params)
    return page_of((await conn.execute(stmt, params)).all(), first)
