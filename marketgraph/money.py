"""Money: integer minor units in one market's currency; formatting per market."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from marketgraph.markets import Market


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money(self.amount_minor + other.amount_minor, self.currency)


def format_money(amount_minor: int, market: Market) -> str:
    """The amount as the market writes it: "$1,250.00", "1 250,00 сом", "-$3.50"."""
    return _format(
        amount_minor,
        market.minor_digits,
        market.symbol_first,
        market.decimal_separator,
        market.thousands_separator,
        market.currency_symbol,
    )


@functools.lru_cache(maxsize=16384)  # prices repeat across answers; a hit skips the formatting
def _format(
    amount_minor: int,
    digits: int,
    symbol_first: bool,
    decimal_separator: str,
    thousands_separator: str,
    symbol: str,
) -> str:
    sign = "-" if amount_minor < 0 else ""
    units, minor = divmod(abs(amount_minor), 10**digits)
    whole = f"{units:,}".replace(",", thousands_separator)
    number = f"{whole}{decimal_separator}{minor:0{digits}d}" if digits else whole
    if symbol_first:
        return f"{sign}{symbol}{number}"
    return f"{sign}{number}\u00a0{symbol}"
