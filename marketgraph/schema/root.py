"""The root Query and Mutation types: one-line fields that call resolvers."""

from __future__ import annotations

import strawberry

from marketgraph.context import Info
from marketgraph.schema.accounts import User
from marketgraph.schema.markets import Market


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
    def viewer(self, info: Info) -> User | None:
        return None
