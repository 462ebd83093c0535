"""Admin reads in GraphQL: MarketStats, users by phone, users by preferences."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON

from marketgraph.context import Info
from marketgraph.resolvers import admin
from marketgraph.resolvers.pagination import check_first, decode_cursor
from marketgraph.schema.accounts import User
from marketgraph.schema.common import Money, PageInfo, edges_of, page_info
from marketgraph.schema.markets import Market


@strawberry.type(description="One market's figures, read from that market's own databases.")
class MarketStats:
    market: Market
    users: int
    orders: int
    revenue: Money = strawberry.field(description="Totals of orders that are not cancelled.")
    wallet_balances: Money


@strawberry.type
class UserEdge:
    cursor: str
    node: User


@strawberry.type
class UserConnection:
    edges: list[UserEdge]
    page_info: PageInfo


async def market_stats(info: Info) -> list[MarketStats]:
    figures, errors = await admin.market_stats(info.context)
    # A market that is down is reported beside the others rather than failing them all.
    info.context.extra_errors.extend(errors)
    return [
        MarketStats(
            market=Market.from_market(f.market),
            users=f.users,
            orders=f.orders,
            revenue=Money.of(f.revenue_minor, f.market),
            wallet_balances=Money.of(f.wallet_balances_minor, f.market),
        )
        for f in figures
    ]


async def user_by_phone(info: Info, phone: str) -> User | None:
    found = await admin.user_by_phone(info.context, phone)
    return User.from_row(found[1], found[0]) if found is not None else None


async def users(
    info: Info, market: strawberry.ID, first: int | None, after: str | None, preferences: Any
) -> UserConnection:
    found, page = await admin.list_users(
        info.context, str(market), check_first(first), decode_cursor(after), preferences
    )
    return UserConnection(
        edges=[
            UserEdge(cursor=c, node=n)
            for c, n in edges_of(page, lambda row: User.from_row(row, found))
        ],
        page_info=page_info(page.rows, page.has_next),
    )


__all__ = ["JSON", "MarketStats", "UserConnection", "market_stats", "user_by_phone", "users"]
