"""Markets as data: the built-in KG and US, `MARKETS_FILE` overrides, and `detect_market`."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import phonenumbers

from marketgraph.errors import DomainError, ErrorCode


@dataclass(frozen=True, slots=True)
class Market:
    """One market: the unit of data residency, with its currency and language."""

    code: str
    name: str
    currency: str
    currency_symbol: str
    language: str
    phone_regions: tuple[str, ...]
    # How money reads in this market: digits after the decimal point, where the symbol goes.
    minor_digits: int = 2
    symbol_first: bool = True
    decimal_separator: str = "."
    thousands_separator: str = ","
    timezone: str = "UTC"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)


BUILT_IN: tuple[Market, ...] = (
    Market(
        code="kg",
        name="Кыргызстан",
        currency="KGS",
        currency_symbol="сом",
        language="ru",
        phone_regions=("KG",),
        symbol_first=False,
        decimal_separator=",",
        thousands_separator="\u00a0",
        timezone="Asia/Bishkek",
    ),
    Market(
        code="us",
        name="United States",
        currency="USD",
        currency_symbol="$",
        language="en",
        phone_regions=("US",),
        timezone="America/New_York",
    ),
)

# The keys a market table may hold, with the TOML type each must have.
_FIELD_TYPES: dict[str, type] = {
    "name": str,
    "currency": str,
    "currency_symbol": str,
    "language": str,
    "phone_regions": list,
    "minor_digits": int,
    "symbol_first": bool,
    "decimal_separator": str,
    "thousands_separator": str,
    "timezone": str,
}
_FIELDS = set(_FIELD_TYPES)


class MarketRegistry:
    """The known markets by code, in a stable order, with the region → market index."""

    def __init__(self, markets: Iterator[Market] | tuple[Market, ...] | list[Market]) -> None:
        self._by_code: dict[str, Market] = {}
        self._by_region: dict[str, Market] = {}
        for market in markets:
            if market.code in self._by_code:
                raise ValueError(f"market {market.code!r} is defined twice")
            self._by_code[market.code] = market
            for region in market.phone_regions:
                owner = self._by_region.setdefault(region, market)
                if owner is not market:
                    raise ValueError(
                        f"phone region {region} is listed by markets {owner.code!r} "
                        f"and {market.code!r}; a region belongs to one market"
                    )

    def __iter__(self) -> Iterator[Market]:
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self._by_code)

    def get(self, code: str) -> Market | None:
        """The market of `code` (case-insensitive), or None."""
        return self._by_code.get(code.strip().lower())

    def require(self, code: str) -> Market:
        """The market of `code`, or `UNSUPPORTED_MARKET` naming the known ones."""
        market = self.get(code)
        if market is None:
            raise DomainError(
                ErrorCode.UNSUPPORTED_MARKET,
                f"Unknown market {code!r}; known markets: {', '.join(self.codes)}",
                market=code,
            )
        return market

    def for_region(self, region: str) -> Market | None:
        return self._by_region.get(region)


def load_markets(path: Path | None) -> MarketRegistry:
    """The built-in markets, changed or extended by the TOML file at `path`.

    The file holds one table per market code, e.g. `[markets.kz]` with `name`,
    `currency`, `currency_symbol`, `language`, `phone_regions`; a table for a
    built-in code changes only the keys it gives.
    """
    markets = {m.code: m for m in BUILT_IN}
    if path is None:
        return MarketRegistry(list(markets.values()))
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"MARKETS_FILE {path} cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"MARKETS_FILE {path} is not valid TOML: {exc}") from exc
    strays = sorted(set(document) - {"markets"})
    if strays:
        raise ValueError(
            f"MARKETS_FILE {path}: unknown top-level keys {strays}; markets go in [markets.<code>]"
        )
    tables = document.get("markets", {})
    if not isinstance(tables, dict):
        raise ValueError(f"MARKETS_FILE {path}: [markets] must be a table of market tables")
    for raw_code, table in tables.items():
        code = str(raw_code).lower()
        if not code.isidentifier() or not code.isascii():
            raise ValueError(f"MARKETS_FILE {path}: market code {raw_code!r} must be ASCII letters")
        if not isinstance(table, dict):
            raise ValueError(f"MARKETS_FILE {path}: [markets.{code}] must be a table")
        unknown = set(table) - _FIELDS
        if unknown:
            raise ValueError(
                f"MARKETS_FILE {path}: [markets.{code}] has unknown keys {sorted(unknown)}; "
                f"known keys: {sorted(_FIELDS)}"
            )
        for key, value in table.items():
            expected = _FIELD_TYPES[key]
            # TOML booleans are Python ints too; minor_digits = true is still a mistake.
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(
                    f"MARKETS_FILE {path}: [markets.{code}] {key} must be "
                    f"{'a list of region codes' if expected is list else expected.__name__}, "
                    f"not {value!r}"
                )
        values = dict(table)
        if "phone_regions" in values:
            regions = tuple(str(r).upper() for r in values["phone_regions"])
            unknown_regions = sorted(set(regions) - phonenumbers.SUPPORTED_REGIONS)
            if unknown_regions:
                raise ValueError(
                    f"MARKETS_FILE {path}: [markets.{code}] phone_regions lists unknown "
                    f"regions {unknown_regions} (ISO 3166 codes such as KZ)"
                )
            values["phone_regions"] = regions
        if "currency" in values:
            values["currency"] = str(values["currency"]).upper()
        if code in markets:
            markets[code] = replace(markets[code], **values)
            continue
        missing = {"name", "currency", "currency_symbol", "language", "phone_regions"} - set(values)
        if missing:
            raise ValueError(f"MARKETS_FILE {path}: [markets.{code}] lacks {sorted(missing)}")
        markets[code] = Market(code=code, **values)
    return MarketRegistry(list(markets.values()))


def detect_market(phone: str, markets: MarketRegistry) -> tuple[Market, str]:
    """The market that owns `phone`, and the number in E.164.

    Accepts spaces, dashes, parentheses and a missing `+`. Invalid numbers are
    `INVALID_PHONE`; valid numbers whose region no market lists are
    `UNSUPPORTED_MARKET` (a Canadian +1 number is not a US customer).
    """
    number = parse_phone(phone)
    region = phonenumbers.region_code_for_number(number)
    market = markets.for_region(region) if region else None
    if market is None:
        raise DomainError(
            ErrorCode.UNSUPPORTED_MARKET,
            f"Phone numbers from {region or 'this region'} are not served by any market",
            region=region,
        )
    return market, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_phone(phone: str) -> phonenumbers.PhoneNumber:
    """A valid international number, or `INVALID_PHONE`."""
    text = phone.strip()
    if not text or len(text) > 32:
        raise DomainError(ErrorCode.INVALID_PHONE, "Enter a phone number in international form")
    if not text.startswith("+"):
        text = "+" + text.lstrip("0")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise DomainError(ErrorCode.INVALID_PHONE, "This is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise DomainError(ErrorCode.INVALID_PHONE, "This phone number is not valid")
    return number
