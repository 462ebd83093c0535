"""Money: formatting as each market writes it, and sums that refuse to mix currencies."""

from __future__ import annotations

import dataclasses

import pytest

from marketgraph.markets import BUILT_IN, Market
from marketgraph.money import Money, format_money

KG, US = BUILT_IN
NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (0, "$0.00"),
        (5, "$0.05"),
        (1250, "$12.50"),
        (125000, "$1,250.00"),
        (123456789, "$1,234,567.89"),
        (-350, "-$3.50"),
        (-125000, "-$1,250.00"),
    ],
)
def test_us_dollars(amount: int, expected: str) -> None:
    assert format_money(amount, US) == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (0, f"0,00{NBSP}сом"),
        (5, f"0,05{NBSP}сом"),
        (1250, f"12,50{NBSP}сом"),
        (125000, f"1{NBSP}250,00{NBSP}сом"),
        (123456789, f"1{NBSP}234{NBSP}567,89{NBSP}сом"),
        (-350, f"-3,50{NBSP}сом"),
        (-125000, f"-1{NBSP}250,00{NBSP}сом"),
    ],
)
def test_kyrgyz_som(amount: int, expected: str) -> None:
    assert format_money(amount, KG) == expected


def test_a_currency_without_minor_digits() -> None:
    yen = Market(
        code="jp",
        name="日本",
        currency="JPY",
        currency_symbol="¥",
        language="ja",
        phone_regions=("JP",),
        minor_digits=0,
    )
    assert format_money(1234567, yen) == "¥1,234,567"
    assert format_money(-5, yen) == "-¥5"
    three = dataclasses.replace(US, minor_digits=3)
    assert format_money(1005, three) == "$1.005"


def test_sums_keep_the_currency_and_refuse_to_mix() -> None:
    assert Money(150, "KGS") + Money(-50, "KGS") == Money(100, "KGS")
    with pytest.raises(ValueError, match="USD"):
        Money(150, "KGS") + Money(50, "USD")
