"""Admin reads across markets: market figures, users by phone, users by preferences."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, Row, Select, String, Uuid, bindparam, func, select
from sqlalchemy.dialects.postgresql import JSONB

from marketgraph.db.models.app import Order, OrderStatus, Wallet
from marketgraph.db.models.auth import User
from marketgraph.errors import DomainError, ErrorCode, ServiceUnavailableError, is_unavailable
from marketgraph.markets import Market, detect_market
from marketgraph.resolvers.accounts import USER_COLUMNS
from marketgraph.resolvers.pagination import Page, page_of

if TYPE_CHECKING:
    from marketgraph.context import RequestContext


@dataclass(frozen=True, slots=True)
class MarketFigures:
    market: Market
    users: int
    orders: int
    revenue_minor: int
    wallet_balances_minor: int


async def gather_market_figures(ctx: RequestContext, market: Market) -> MarketFigures:
    """One market's figures: a count on its auth store, sums on its app store, concurrently."""

    async def users() -> int:
        async with ctx.reading(ctx.databases.store(market.code, "auth")) as conn:
            return int(await conn.scalar(select(func.count()).select_from(User)) or 0)

    async def business() -> Row[Any, Any, Any]:
        async with ctx.reading(ctx.databases.store(market.code, "app")) as conn:
            live = Order.status != OrderStatus.CANCELLED
            return (
                await conn.execute(
                    select(
                        select(func.count()).select_from(Order).scalar_subquery().label("orders"),
                        select(func.coalesce(func.sum(Order.total_minor), 0))
                        .where(live)
                        .scalar_subquery()
                        .label("revenue"),
                        select(func.coalesce(func.sum(Wallet.balance_minor), 0))
                        .scalar_subquery()
                        .label("balances"),
                    )
                )
            ).one()

    user_count, figures = await asyncio.gather(users(), business())
    return MarketFigures(
        market, user_count, int(figures.orders), int(figures.revenue), int(figures.balances)
    )


async def market_stats(ctx: RequestContext) -> tuple[list[MarketFigures], list[DomainError]]:
    """Every market's figures, gathered concurrently; a market whose store is down becomes an
    error beside the others' figures instead of failing the whole answer."""
    ctx.require_admin()
    markets = [m for m in ctx.markets if ctx.reachable_market(m.code) is not None]
    results = await asyncio.gather(
        *(gather_market_figures(ctx, m) for m in markets), return_exceptions=True
    )
    figures: list[MarketFigures] = []
    errors: list[DomainError] = []
    for market, result in zip(markets, results, strict=True):
        if isinstance(result, MarketFigures):
            figures.append(result)
        elif isinstance(result, Exception) and is_unavailable(result):
            errors.append(
                ServiceUnavailableError(f"Market {market.code} is unavailable", market=market.code)
            )
        elif isinstance(result, BaseException):
            raise result
    return figures, errors


async def user_by_phone(ctx: RequestContext, phone: str) -> tuple[Market, Row[Any]] | None:
    """Admin: the market that owns a number, and its user there (or None)."""
    ctx.require_admin()
    market, e164 = detect_market(phone, ctx.markets)
    async with ctx.reading(ctx.store_for(market.code, "auth")) as conn:
        row = (await conn.execute(select(*USER_COLUMNS).where(User.phone == e164))).one_or_none()
    return (market, row) if row is not None else None


async def list_users(
    ctx: RequestContext,
    market_code: str,
    first: int,
    after: uuid.UUID | None,
    preferences: Any,
) -> tuple[Market, Page]:
    """Admin: a market's users in creation order, optionally those whose preferences contain
    `preferences` (JSONB `@>`, served by the GIN index)."""
    ctx.require_admin()
    market = ctx.markets.get(market_code)
    if market is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"No market {market_code!r}", field="market")
    if preferences is not None and not isinstance(preferences, dict):
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, "preferences is a JSON object", field="preferences"
        )
    stmt = users_page(USER_COLUMNS, after=after is not None, preferences=preferences is not None)
    params = {"limit": first + 1, "after": after, "preferences": preferences}
    async with ctx.reading(ctx.store_for(market.code, "auth")) as conn:
        rows = (await conn.execute(stmt, params)).all()
    return market, page_of(rows, first)


def users_page(columns: Sequence[Any], *, after: bool, preferences: bool) -> Select[Any]:
    """A page of a market's users in creation order: `:limit` rows after `:after`, whose
    preferences contain `:preferences` — the statement both execution paths run."""
    stmt = select(*columns).order_by(User.id).limit(bindparam("limit", type_=Integer))
    if after:
        stmt = stmt.where(User.id > bindparam("after", type_=Uuid))
    if preferences:
        stmt = stmt.where(User.preferences.contains(bindparam("preferences", type_=JSONB)))
    return stmt


def user_by_phone_statement(columns: Sequence[Any]) -> Select[Any]:
    return select(*columns).where(User.phone == bindparam("phone", type_=String))
