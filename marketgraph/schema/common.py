"""Shared GraphQL types: Node, Money, PageInfo, and the connection helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import strawberry
from sqlalchemy import Row

from marketgraph import markets
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.money import format_money
from marketgraph.resolvers.pagination import Page, encode_cursor

T = TypeVar("T")


@strawberry.interface(description="An object with a global id that `node(id:)` can fetch.")
class Node:
    id: strawberry.ID


@strawberry.type(
    description="An amount in the currency's minor unit (cents, tyiyn); never a float."
)
class Money:
    amount_minor: int
    currency: str = strawberry.field(description="ISO 4217.")
    formatted: str = strawberry.field(description='Localised for the market, e.g. "$12.50".')

    @classmethod
    def of(cls, amount_minor: int, market: markets.Market) -> Money:
        return cls(
            amount_minor=amount_minor,
            currency=market.currency,
            formatted=format_money(amount_minor, market),
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


def page_info(rows: Sequence[Row[Any]], has_next: bool) -> PageInfo:
    return PageInfo(has_next_page=has_next, end_cursor=encode_cursor(rows[-1].id) if rows else None)


def edges_of(page: Page, make_node: Callable[[Row[Any]], T]) -> list[tuple[str, T]]:
    """(cursor, node) for each row of a page."""
    return [(encode_cursor(row.id), make_node(row)) for row in page.rows]


def present(row: Any, what: str) -> Any:
    """A row a non-null field needs; its absence (a broken cross-store reference) is
    `NOT_FOUND` rather than a crash."""
    if row is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"The {what} no longer exists")
    return row
