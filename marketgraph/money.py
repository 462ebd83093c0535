"""Money: integer minor units in one market's currency; formatting per market."""

from __future__ import annotations

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
    sign = "-" if amount_minor < 0 else ""
    units, minor = divmod(abs(amount_minor), 10**market.minor_digits)
    whole = f"{units:,}".replace(",", market.thousands_separator)
    number = (
        f"{whole}{market.decimal_separator}{minor:0{market.minor_digits}d}"
        if market.minor_digits
        else whole
    )
    if market.symbol_first:
        return f"{sign}{market.currency_symbol}{number}"
    return f"{sign}{number}\u00a0{market.currency_symbol}"
