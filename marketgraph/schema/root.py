"""The root Query and Mutation types: one-line fields that call resolvers."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from marketgraph.context import Info
from marketgraph.schema import admin, catalog, nodes
from marketgraph.schema.accounts import AccountMutations, User, viewer
from marketgraph.schema.cart import CartMutations
from marketgraph.schema.catalog import Product, ProductConnection
from marketgraph.schema.common import Node
from marketgraph.schema.markets import Market
from marketgraph.schema.orders import Order, OrderMutations, order_by_id
from marketgraph.schema.wallet import WalletMutations


@strawberry.type
class Query:
    @strawberry.field(description="Every market this server serves.")
    def markets(self, info: Info) -> list[Market]:
        return [Market.from_market(m) for m in info.context.markets]

    @strawberry.field(description="One market by code, or null when unknown.")
    def market(self, info: Info, code: strawberry.ID) -> Market | None:
        found = info.context.markets.get(str(code))
        return Market.from_market(found) if found is not None else None

    @strawberry.field(description="The signed-in user, or null for an anonymous request.")
    async def viewer(self, info: Info) -> User | None:
        return await viewer(info)

    @strawberry.field(description="Any object by global id, routed to the market inside the id.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        return await nodes.node(info, str(id))

    @strawberry.field(
        description="The catalog of one market: the request's market unless `market` is given."
    )
    async def products(
        self,
        info: Info,
        market: strawberry.ID | None = None,
        first: int | None = 20,
        after: str | None = None,
        search: str | None = None,
    ) -> ProductConnection:
        return await catalog.products(info, market, first, after, search)

    @strawberry.field(description="A product of any market, by id.")
    async def product(self, info: Info, id: strawberry.ID) -> Product | None:
        return await catalog.product_by_id(info, str(id))

    @strawberry.field(description="One of your orders (admins: any order).")
    async def order(self, info: Info, id: strawberry.ID) -> Order | None:
        return await order_by_id(info, str(id))

    @strawberry.field(
        description="Admin: figures for every market, gathered from all markets' databases."
    )
    async def market_stats(self, info: Info) -> list[admin.MarketStats]:
        return await admin.market_stats(info)

    @strawberry.field(description="Admin: find the market and user that own a phone number.")
    async def user_by_phone(self, info: Info, phone: str) -> User | None:
        return await admin.user_by_phone(info, phone)

    @strawberry.field(
        description="Admin: users of one market, optionally those whose preferences contain "
        "`preferences` (JSON containment)."
    )
    async def users(
        self,
        info: Info,
        market: strawberry.ID,
        first: int | None = 20,
        after: str | None = None,
        preferences: JSON | None = None,
    ) -> admin.UserConnection:
        return await admin.users(info, market, first, after, preferences)


@strawberry.type
class Mutation(AccountMutations, CartMutations, OrderMutations, WalletMutations):
    pass
