"""RequestContext: what one GraphQL request's resolvers may use, decided once by the view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import strawberry

from marketgraph.db.databases import Databases, Store
from marketgraph.kv import KeyValueStore
from marketgraph.markets import Market, MarketRegistry
from marketgraph.settings import Settings

if TYPE_CHECKING:
    from starlette.requests import Request


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Handles, not open sessions: stores hand out connections only inside `async with`."""

    request_id: str
    request: Request
    settings: Settings
    market: Market  # X-Market, else DEFAULT_MARKET
    auth: Store  # this market's auth store
    app: Store  # this market's app store
    kv: KeyValueStore
    databases: Databases

    @property
    def markets(self) -> MarketRegistry:
        return self.settings.markets


Info: TypeAlias = strawberry.Info[RequestContext, None]
