"""Markets as data: the built-ins, MARKETS_FILE, and detect_market's phone parsing and routing."""

from __future__ import annotations

from pathlib import Path

import phonenumbers
import pytest

from marketgraph.errors import DomainError, ErrorCode
from marketgraph.markets import Market, MarketRegistry, detect_market, load_markets

KZ_TABLE = """
[markets.kz]
name = "Қазақстан"
currency = "kzt"
currency_symbol = "₸"
language = "kk"
phone_regions = ["kz"]
"""

# Numbers phonenumbers deems valid, each with its region.
KG_MOBILE = "+996555123456"
US_NUMBER = "+12125550100"
CA_NUMBER = "+16042531234"
KZ_MOBILE = "+77012345678"
GB_NUMBER = "+442079460958"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "markets.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_numbers_are_valid_in_their_regions() -> None:
    for number, region in [
        (KG_MOBILE, "KG"),
        (US_NUMBER, "US"),
        (CA_NUMBER, "CA"),
        (KZ_MOBILE, "KZ"),
        (GB_NUMBER, "GB"),
    ]:
        parsed = phonenumbers.parse(number)
        assert phonenumbers.is_valid_number(parsed)
        assert phonenumbers.region_code_for_number(parsed) == region


def test_kg_and_us_are_built_in() -> None:
    markets = load_markets(None)
    assert markets.codes == ("kg", "us")
    kg, us = markets.require("kg"), markets.require("us")
    assert (kg.code, kg.name, kg.currency, kg.currency_symbol, kg.language, kg.phone_regions) == (
        "kg",
        "Кыргызстан",
        "KGS",
        "сом",
        "ru",
        ("KG",),
    )
    assert (us.code, us.name, us.currency, us.currency_symbol, us.language, us.phone_regions) == (
        "us",
        "United States",
        "USD",
        "$",
        "en",
        ("US",),
    )


def test_lookup_is_case_insensitive_and_unknown_codes_name_the_known() -> None:
    markets = load_markets(None)
    assert markets.get(" KG ") is markets.require("kg")
    assert markets.get("zz") is None
    assert "us" in markets
    assert "zz" not in markets
    with pytest.raises(DomainError) as caught:
        markets.require("zz")
    assert caught.value.code == ErrorCode.UNSUPPORTED_MARKET
    assert "kg, us" in caught.value.message


def test_markets_file_adds_a_market_and_changes_a_built_in(tmp_path: Path) -> None:
    path = write(tmp_path, KZ_TABLE + '\n[markets.kg]\nname = "Kyrgyzstan"\nlanguage = "ky"\n')
    markets = load_markets(path)
    assert markets.codes == ("kg", "us", "kz")
    kz = markets.require("kz")
    assert (kz.name, kz.currency, kz.currency_symbol, kz.language, kz.phone_regions) == (
        "Қазақстан",
        "KZT",
        "₸",
        "kk",
        ("KZ",),
    )
    kg = markets.require("kg")
    assert (kg.name, kg.language) == ("Kyrgyzstan", "ky")
    # Keys the file does not give keep their built-in values.
    assert (kg.currency, kg.phone_regions, kg.timezone) == ("KGS", ("KG",), "Asia/Bishkek")
    assert detect_market("+7 701 234 5678", markets) == (kz, KZ_MOBILE)


def test_an_empty_markets_file_keeps_the_built_ins(tmp_path: Path) -> None:
    assert load_markets(write(tmp_path, "")).codes == ("kg", "us")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[markets.kg]\ncolour = "red"\n', ["[markets.kg]", "unknown keys", "colour"]),
        ('[markets.kz]\nname = "Kazakhstan"\n', ["[markets.kz]", "lacks", "currency",
                                                 "phone_regions"]),
        (KZ_TABLE.replace('["kz"]', '["KZ", "KG"]'), ["KG", "'kg'", "'kz'"]),
        (KZ_TABLE + KZ_TABLE.replace("kz]", "qz]"), ["KZ", "'kz'", "'qz'"]),
        (KZ_TABLE.replace('["kz"]', '"KZ"'), ["phone_regions", "list"]),
        (KZ_TABLE.replace('["kz"]', '["KZX"]'), ["phone_regions", "KZX"]),
        (KZ_TABLE + "minor_digits = \"two\"\n", ["minor_digits", "int"]),
        ('[markets.k-z]\nname = "x"\n', ["'k-z'"]),
        ('[market.kz]\nname = "x"\n', ["market"]),
        ("markets = 3\n", ["[markets]"]),
        ("[markets\n", ["not valid TOML"]),
    ],
    ids=[
        "unknown-key",
        "missing-fields",
        "region-claimed-twice-with-built-in",
        "region-claimed-twice-in-file",
        "regions-not-a-list",
        "unknown-region",
        "wrong-type",
        "bad-code",
        "stray-top-level-table",
        "markets-not-a-table",
        "not-toml",
    ],
)  # fmt: skip
def test_bad_markets_file_says_what_is_wrong(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    with pytest.raises(ValueError) as caught:
        load_markets(write(tmp_path, text))
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_unreadable_markets_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"MARKETS_FILE .* cannot be read"):
        load_markets(tmp_path / "missing.toml")


def test_registry_refuses_a_code_defined_twice() -> None:
    kg = load_markets(None).require("kg")
    with pytest.raises(ValueError, match="'kg' is defined twice"):
        MarketRegistry([kg, Market("kg", "Again", "KGS", "сом", "ru", ())])


# --- detect_market ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "market_code", "e164"),
    [
        ("+996555123456", "kg", KG_MOBILE),
        ("+996 555 123 456", "kg", KG_MOBILE),
        ("+996-555-123-456", "kg", KG_MOBILE),
        ("+996 (555) 12-34-56", "kg", KG_MOBILE),
        ("996555123456", "kg", KG_MOBILE),
        ("996 555 123 456", "kg", KG_MOBILE),
        ("00996555123456", "kg", KG_MOBILE),
        ("00 996 555 123 456", "kg", KG_MOBILE),
        ("  +996555123456  ", "kg", KG_MOBILE),
        ("+1 (212) 555-0100", "us", US_NUMBER),
        ("1 212 555 0100", "us", US_NUMBER),
        ("12125550100", "us", US_NUMBER),
        ("001-212-555-0100", "us", US_NUMBER),
    ],
)
def test_detect_market_normalises_to_e164(phone: str, market_code: str, e164: str) -> None:
    markets = load_markets(None)
    market, normalised = detect_market(phone, markets)
    assert market is markets.require(market_code)
    assert normalised == e164


@pytest.mark.parametrize(
    "phone",
    [
        "",
        "   ",
        "hello",
        "+996 123",  # too short for Kyrgyzstan
        "+996 555 123 456 789",  # too long
        "+1 212 555 010",
        "+999 555 123 456",  # no such country code
        "+" + "1" * 40,
    ],
)
def test_invalid_numbers_are_invalid_phone(phone: str) -> None:
    with pytest.raises(DomainError) as caught:
        detect_market(phone, load_markets(None))
    assert caught.value.code == ErrorCode.INVALID_PHONE


@pytest.mark.parametrize(
    ("phone", "region"),
    [("+1 604 253 1234", "CA"), ("16042531234", "CA"), (KZ_MOBILE, "KZ"), (GB_NUMBER, "GB")],
)
def test_valid_numbers_of_unlisted_regions_are_unsupported(phone: str, region: str) -> None:
    with pytest.raises(DomainError) as caught:
        detect_market(phone, load_markets(None))
    assert caught.value.code == ErrorCode.UNSUPPORTED_MARKET
    assert caught.value.extensions["region"] == region


def test_a_market_listing_ca_takes_canadian_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[markets.ca]\nname = "Canada"\ncurrency = "CAD"\ncurrency_symbol = "$"\n'
        'language = "en"\nphone_regions = ["CA"]\n',
    )
    markets = load_markets(path)
    assert detect_market("+1 604 253 1234", markets) == (markets.require("ca"), CA_NUMBER)
    # +1 numbers of the US stay in the US market.
    assert detect_market("+1 212 555 0100", markets) == (markets.require("us"), US_NUMBER)


def test_us_market_may_list_ca_too(tmp_path: Path) -> None:
    markets = load_markets(write(tmp_path, '[markets.us]\nphone_regions = ["US", "CA"]\n'))
    assert detect_market(CA_NUMBER, markets) == (markets.require("us"), CA_NUMBER)
