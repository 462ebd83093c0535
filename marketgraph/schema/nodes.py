"""`node(id:)`: fetch any Node by global id, routed to the market inside the id."""

from __future__ import annotations

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
    viewer = None if ctx.is_admin else ctx.require_user()
    market = ctx.reachable_market(parsed.market)
    if market is None:
        raise DomainError(ErrorCode.NOT_FOUND, "Not found")
    loaders = ctx.loaders_for(market.code)
    if parsed.type_name == "User":
        row = await loaders.users_by_id.load(parsed.key)
        if row is None or (viewer is not None and row.id != viewer):
            raise DomainError(ErrorCode.NOT_FOUND, "Not found")
        return User.from_row(row, market)
    row = await loaders.transactions_by_id.load(parsed.key)
    if row is None or (viewer is not None and row.user_id != viewer):
        raise DomainError(ErrorCode.NOT_FOUND, "Not found")
    return WalletTransaction.from_row(row, market)


__all__ = ["Product", "node"]
