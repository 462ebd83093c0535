"""The Market type: a market's public description."""

from __future__ import annotations

import strawberry

from marketgraph import markets


@strawberry.type(description="A market: one country's customers, data, currency and language.")
class Market:
    code: strawberry.ID = strawberry.field(description='Lower-case market code: "kg", "us", ...')
    name: str
    currency: str = strawberry.field(description='ISO 4217 code, e.g. "KGS", "USD".')
    currency_symbol: str = strawberry.field(description='e.g. "сом", "$".')
    language: str = strawberry.field(description='BCP 47 language tag, e.g. "ru", "en".')
    phone_regions: list[str] = strawberry.field(
        description="ISO 3166-1 alpha-2 regions whose phone numbers belong to this market."
    )

    @classmethod
    def from_market(cls, market: markets.Market) -> Market:
        return cls(
            code=strawberry.ID(market.code),
            name=market.name,
            currency=market.currency,
            currency_symbol=market.currency_symbol,
            language=market.language,
            phone_regions=list(market.phone_regions),
        )
