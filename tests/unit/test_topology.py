"""Topology: http.md's precedence of database variables, rule by rule, and each store's schema."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from marketgraph.db.topology import StoreKey, Topology
from marketgraph.settings import ConfigError, Settings

STORES = ("kg.auth", "kg.app", "us.auth", "us.app")
EMBEDDED = "embedded"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if "DATABASE_URL" in name.upper() or name.upper() in ("MARKETS_FILE", "DEFAULT_MARKET"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))


def url_of(variable: str) -> str:
    """A distinct URL per variable, so a location's URL shows which variable placed it."""
    return f"postgresql://mg@db.example/{variable.lower()}"


def embedded_url(key: StoreKey) -> URL:
    return make_url(f"postgresql+asyncpg://embedded/{key.schema}")


def placement(topology: Topology) -> dict[str, str]:
    """store → the variable that placed it, checked against the URL it got."""
    out = {}
    for location in topology:
        expected = (
            embedded_url(location.key) if location.source == EMBEDDED else url_of(location.source)
        )
        assert location.url == make_url(expected).set(drivername="postgresql+asyncpg")
        out[str(location.key)] = location.source
    return out


# Each case: the variables set, then the variable (or the embedded server) each store must use,
# in the order kg.auth, kg.app, us.auth, us.app.
PRECEDENCE = {
    "5-nothing-set-is-embedded": ([], ["embedded"] * 4),
    "4-database-url-places-everything": (["DATABASE_URL"], ["DATABASE_URL"] * 4),
    "3-role-url-places-its-role-in-every-market": (
        ["AUTH_DATABASE_URL", "APP_DATABASE_URL"],
        ["AUTH_DATABASE_URL", "APP_DATABASE_URL", "AUTH_DATABASE_URL", "APP_DATABASE_URL"],
    ),
    "3-over-4-role-beats-database-url": (
        ["AUTH_DATABASE_URL", "DATABASE_URL"],
        ["AUTH_DATABASE_URL", "DATABASE_URL", "AUTH_DATABASE_URL", "DATABASE_URL"],
    ),
    "2-market-url-places-both-roles": (
        ["KG_DATABASE_URL", "US_DATABASE_URL"],
        ["KG_DATABASE_URL", "KG_DATABASE_URL", "US_DATABASE_URL", "US_DATABASE_URL"],
    ),
    "2-over-4-market-beats-database-url": (
        ["US_DATABASE_URL", "DATABASE_URL"],
        ["DATABASE_URL", "DATABASE_URL", "US_DATABASE_URL", "US_DATABASE_URL"],
    ),
    "2-over-3-market-beats-role": (
        ["KG_DATABASE_URL", "APP_DATABASE_URL", "AUTH_DATABASE_URL"],
        ["KG_DATABASE_URL", "KG_DATABASE_URL", "AUTH_DATABASE_URL", "APP_DATABASE_URL"],
    ),
    "1-market-role-urls-place-one-store-each": (
        ["KG_AUTH_DATABASE_URL", "KG_APP_DATABASE_URL", "US_AUTH_DATABASE_URL",
         "US_APP_DATABASE_URL"],
        ["KG_AUTH_DATABASE_URL", "KG_APP_DATABASE_URL", "US_AUTH_DATABASE_URL",
         "US_APP_DATABASE_URL"],
    ),
    "1-over-2-market-role-beats-market": (
        ["KG_APP_DATABASE_URL", "KG_DATABASE_URL", "US_DATABASE_URL"],
        ["KG_DATABASE_URL", "KG_APP_DATABASE_URL", "US_DATABASE_URL", "US_DATABASE_URL"],
    ),
    "1-over-3-market-role-beats-role": (
        ["US_AUTH_DATABASE_URL", "AUTH_DATABASE_URL", "APP_DATABASE_URL"],
        ["AUTH_DATABASE_URL", "APP_DATABASE_URL", "US_AUTH_DATABASE_URL", "APP_DATABASE_URL"],
    ),
    "1-over-4-market-role-beats-database-url": (
        ["US_APP_DATABASE_URL", "DATABASE_URL"],
        ["DATABASE_URL", "DATABASE_URL", "DATABASE_URL", "US_APP_DATABASE_URL"],
    ),
    "every-level-at-once": (
        ["KG_AUTH_DATABASE_URL", "KG_DATABASE_URL", "US_DATABASE_URL", "AUTH_DATABASE_URL",
         "APP_DATABASE_URL", "DATABASE_URL"],
        ["KG_AUTH_DATABASE_URL", "KG_DATABASE_URL", "US_DATABASE_URL", "US_DATABASE_URL"],
    ),
    "mixture-across-markets-and-roles": (
        ["US_APP_DATABASE_URL", "KG_DATABASE_URL", "AUTH_DATABASE_URL", "DATABASE_URL"],
        ["KG_DATABASE_URL", "KG_DATABASE_URL", "AUTH_DATABASE_URL", "US_APP_DATABASE_URL"],
    ),
    "mixture-of-role-and-database-url-per-market": (
        ["KG_AUTH_DATABASE_URL", "APP_DATABASE_URL", "DATABASE_URL"],
        ["KG_AUTH_DATABASE_URL", "APP_DATABASE_URL", "DATABASE_URL", "APP_DATABASE_URL"],
    ),
}  # fmt: skip


@pytest.mark.parametrize(("variables", "expected"), PRECEDENCE.values(), ids=PRECEDENCE.keys())
def test_precedence_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variables: list[str], expected: list[str]
) -> None:
    """Each rule of http.md, through the whole path: environment → Settings → Topology."""
    for variable in variables:
        monkeypatch.setenv(variable, url_of(variable))
    settings = Settings.from_env()
    assert settings.is_embedded == (not variables)
    topology = Topology.resolve(settings.markets.codes, settings.database_urls, embedded_url)
    assert placement(topology) == dict(zip(STORES, expected, strict=True))


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (["KG_AUTH_DATABASE_URL"], ["KG_AUTH_DATABASE_URL", "embedded", "embedded", "embedded"]),
        (["US_DATABASE_URL"], ["embedded", "embedded", "US_DATABASE_URL", "US_DATABASE_URL"]),
        (["APP_DATABASE_URL"], ["embedded", "APP_DATABASE_URL", "embedded", "APP_DATABASE_URL"]),
    ],
)
def test_embedded_fallback_places_what_no_variable_does(
    variables: list[str], expected: list[str]
) -> None:
    topology = Topology.resolve(("kg", "us"), {v: url_of(v) for v in variables}, embedded_url)
    assert placement(topology) == dict(zip(STORES, expected, strict=True))


@pytest.mark.parametrize(
    ("variables", "unplaced", "candidates"),
    [
        (
            ["KG_AUTH_DATABASE_URL"],
            "kg.app",
            "KG_APP_DATABASE_URL, KG_DATABASE_URL, APP_DATABASE_URL, DATABASE_URL",
        ),
        (
            ["KG_DATABASE_URL", "APP_DATABASE_URL"],
            "us.auth",
            "US_AUTH_DATABASE_URL, US_DATABASE_URL, AUTH_DATABASE_URL, DATABASE_URL",
        ),
    ],
)
def test_partial_configuration_without_fallback_names_the_candidates(
    variables: list[str], unplaced: str, candidates: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Topology.resolve(("kg", "us"), {v: url_of(v) for v in variables})
    assert f"store {unplaced} has no database" in str(caught.value)
    assert candidates in str(caught.value)


def test_partial_configuration_fails_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_DATABASE_URL", url_of("KG_DATABASE_URL"))
    with pytest.raises(ConfigError, match=r"store us\.auth has no database"):
        Settings.from_env()


@pytest.mark.parametrize(
    "written",
    [
        "postgresql://mg:pw@db.example:5433/marketgraph",
        "postgresql+asyncpg://mg:pw@db.example:5433/marketgraph",
        "postgresql+psycopg2://mg:pw@db.example:5433/marketgraph",
    ],
)
def test_postgresql_urls_are_normalised_to_asyncpg(written: str) -> None:
    topology = Topology.resolve(("kg", "us"), {"DATABASE_URL": written})
    urls = {location.url for location in topology}
    assert urls == {make_url("postgresql+asyncpg://mg:pw@db.example:5433/marketgraph")}
    (url,) = urls
    assert url.drivername == "postgresql+asyncpg"
    assert url.password == "pw"


def test_the_same_database_written_two_ways_is_one_url() -> None:
    topology = Topology.resolve(
        ("kg", "us"),
        {
            "KG_DATABASE_URL": "postgresql://mg@db.example/marketgraph",
            "US_DATABASE_URL": "postgresql+asyncpg://mg@db.example/marketgraph",
        },
    )
    assert len({location.url for location in topology}) == 1


def test_every_store_has_its_own_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    markets_file = tmp_path / "markets.toml"
    markets_file.write_text(
        '[markets.kz]\nname = "Kazakhstan"\ncurrency = "KZT"\ncurrency_symbol = "₸"\n'
        'language = "kk"\nphone_regions = ["KZ"]\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("MARKETS_FILE", str(markets_file))
    monkeypatch.setenv("DATABASE_URL", url_of("DATABASE_URL"))
    settings = Settings.from_env()
    topology = Topology.resolve(settings.markets.codes, settings.database_urls)
    assert {str(loc.key): loc.schema for loc in topology} == {
        "kg.auth": "kg_auth",
        "kg.app": "kg_app",
        "us.auth": "us_auth",
        "us.app": "us_app",
        "kz.auth": "kz_auth",
        "kz.app": "kz_app",
    }
    # One database, six stores: the schemas are what keeps them apart.
    assert len({loc.url for loc in topology}) == 1


def test_select_filters_by_market_and_role() -> None:
    topology = Topology.resolve(("kg", "us"), {"DATABASE_URL": url_of("DATABASE_URL")})
    assert [str(loc.key) for loc in topology] == list(STORES)
    assert topology.keys() == [StoreKey("kg", "auth"), StoreKey("kg", "app"),
                               StoreKey("us", "auth"), StoreKey("us", "app")]  # fmt: skip
    assert [str(loc.key) for loc in topology.select(market="us")] == ["us.auth", "us.app"]
    assert [str(loc.key) for loc in topology.select(role="app")] == ["kg.app", "us.app"]
    assert [str(loc.key) for loc in topology.select("kg", "auth")] == ["kg.auth"]
    assert topology.select(market="zz") == []
    assert topology[StoreKey("us", "app")].source == "DATABASE_URL"
