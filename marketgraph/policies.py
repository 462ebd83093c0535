"""Who may read what: the access rules of the read side, as plain functions.

Each read spec entry names one of these (`marketgraph/reads`), and both read paths call
it — Strawberry's derived resolvers and the planner's steps — so a rule changed here
changes both. A refusal is a `DomainError`; which one (NOT_FOUND rather than FORBIDDEN
for someone else's data) is part of the rule.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from marketgraph.errors import DomainError, ErrorCode
from marketgraph.markets import Market

if TYPE_CHECKING:
    from marketgraph.context import RequestContext


def public(ctx: RequestContext, owner: Any = None) -> None:
    """Anyone, anonymous included: catalog data, and fields of an object already reached."""


def admin(ctx: RequestContext, owner: Any = None) -> None:
    """An admin user or an API key; `UNAUTHENTICATED`/`FORBIDDEN` otherwise."""
    ctx.require_admin()


def reader(ctx: RequestContext) -> uuid.UUID | None:
    """Whose user data the caller may read: None for an admin (anyone's in the markets it
    reaches), else the signed-in user (`UNAUTHENTICATED` when anonymous)."""
    return None if ctx.is_admin else ctx.require_user()


def owner_or_admin(ctx: RequestContext, owner: uuid.UUID, message: str = "Not found") -> None:
    """A user's business data (cart, wallet, orders, transactions) is theirs and admins'
    only; anyone else gets `NOT_FOUND`, so its existence is not revealed."""
    caller = reader(ctx)
    if caller is not None and owner != caller:
        raise DomainError(ErrorCode.NOT_FOUND, message)


def reachable(ctx: RequestContext, code: str) -> Market | None:
    """Market `code` when the caller may read its data: the request's own market, or any for
    an admin user (an API key stays in its market); None otherwise, or if unknown."""
    market = ctx.markets.get(code)
    if market is None or market.code == ctx.market.code:
        return market
    reaches = ctx.principal is not None and ctx.principal.reaches_every_market
    return market if reaches else None


def reachable_market(ctx: RequestContext, code: str, message: str = "Not found") -> Market:
    """`reachable`, or `NOT_FOUND`."""
    market = reachable(ctx, code)
    if market is None:
        raise DomainError(ErrorCode.NOT_FOUND, message)
    return market


def any_market(ctx: RequestContext, code: str) -> Market | None:
    """Catalog data of any market is public: the market of `code`, or None when unknown."""
    return ctx.markets.get(code)


# The policies a spec entry may name: the field-inventory test checks every entry's is one.
POLICIES = (public, admin, owner_or_admin)
