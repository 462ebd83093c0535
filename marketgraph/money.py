"""Money: integer minor units in one market's currency; formatting per market."""

from __future__ import annotations

import functools
from collections.abc import Callable
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
    return formatter(market)(amount_minor)


def formatter(market: Market) -> Callable[[int], str]:
    """`format_money` for one market, remembering amounts (prices repeat across answers, and
    a remembered one costs no Python call: a planned page formats 50 per request)."""
    return _formatter(
        market.minor_digits,
        market.symbol_first,
        market.decimal_separator,
        market.thousands_separator,
        market.currency_symbol,
    )


@functools.lru_cache(maxsize=64)
def _formatter(
    digits: int,
    symbol_first: bool,
    decimal_separator: str,
    thousands_separator: str,
    symbol: str,
) -> Callable[[int], str]:
    def format_amount(amount_minor: int) -> str:
        sign = "-" if amount_minor < 0 else ""
        units, minor = divmod(abs(amount_minor), 10**digits)
        whole = f"{units:,}".replace(",", thousands_separator)
        number = f"{whole}{decimal_separator}{minor:0{digits}d}" if digits else whole
        if symbol_first:
            return f"{sign}{symbol}{number}"
        return f"{sign}{number}\u00a0{symbol}"

    return functools.lru_cache(maxsize=16384)(format_amount)
