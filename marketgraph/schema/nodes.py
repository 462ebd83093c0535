"""`node(id:)`: fetch any Node by global id, routed to the market inside the id."""

from __future__ import annotations

from marketgraph import policies
from marketgraph.context import Info
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id
from marketgraph.schema.accounts import User
from marketgraph.schema.catalog import Product, product_by_id
from marketgraph.schema.common import Node
from marketgraph.schema.orders import order_by_id
from marketgraph.schema.wallet import WalletTransaction


async def node(info: Info, gid: str) -> Node | None:
    """Products from any market; user data only the caller's own (admins: any)."""
    ctx = info.context
    parsed = decode_id(gid)
    if parsed.type_name == "Product":
        found: Node | None = await product_by_id(info, gid)
        return found
    if parsed.type_name == "Order":
        return await order_by_id(info, gid)
    if parsed.type_name not in ("User", "WalletTransaction"):
        raise DomainError(ErrorCode.NOT_FOUND, "Not found")
    policies.reader(ctx)  # anonymous callers are told to sign in, whatever the id
    market = policies.reachable_market(ctx, parsed.market)
    loaders = ctx.loaders_for(market.code)
    if parsed.type_name == "User":
        row = await loaders.users_by_id.load(parsed.key)
        if row is None:
            raise DomainError(ErrorCode.NOT_FOUND, "Not found")
        policies.owner_or_admin(ctx, row.id)
        return User.from_row(row, market)
    row = await loaders.transactions_by_id.load(parsed.key)
    if row is None:
        raise DomainError(ErrorCode.NOT_FOUND, "Not found")
    policies.owner_or_admin(ctx, row.user_id)
    return WalletTransaction.from_row(row, market)


__all__ = ["Product", "node"]
