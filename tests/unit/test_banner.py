"""The first screen of `serve`: the URLs a browser opens, where stores live, how to sign in,
and never a password."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.engine import make_url

from marketgraph.banner import FirstScreen, first_demo_phones, first_screen
from marketgraph.db.topology import StoreKey, Topology
from marketgraph.markets import detect_market
from marketgraph.settings import Settings

DB_PASSWORD = "db-pa55-never-shown"
SSL_PASSWORD = "ssl-pa55-never-shown"
REDIS_PASSWORD = "redis-pa55-never-shown"
PHONES = {"kg": "+996700000001", "us": "+12125550100"}


pytestmark = pytest.mark.usefixtures("clean_env")  # tests/unit/conftest.py


def embedded_topology(settings: Settings) -> Topology:
    def url_for(key: StoreKey) -> Any:
        return make_url(f"postgresql+asyncpg://postgres:{DB_PASSWORD}@/{key.schema}?host=/tmp/s")

    return Topology.resolve(settings.markets.codes, {}, url_for)


def screen_of(settings: Settings, host: str = "127.0.0.1", **options: Any) -> FirstScreen:
    topology = (
        embedded_topology(settings)
        if settings.is_embedded
        else Topology.resolve(settings.markets.codes, settings.database_urls)
    )
    options.setdefault("demo_phones", PHONES)
    return first_screen(settings, topology, host=host, port=8000, **options)


def curl_bodies(text: str) -> list[dict[str, Any]]:
    """The JSON bodies of the screen's curl examples, as a shell would pass them."""
    return [json.loads(body) for body in re.findall(r"-d '([^']*)'", text)]


def test_development_on_the_embedded_default_says_where_and_how_to_sign_in() -> None:
    settings = Settings(data_dir=Path(".marketgraph"))
    text = screen_of(settings).text()

    assert text.startswith("marketgraph 0.1.0 — development, planner on, 1 worker\n")
    assert "  GraphQL   http://127.0.0.1:8000/graphql\n" in text
    assert "  GraphiQL  http://127.0.0.1:8000/graphql  (in a browser" in text
    assert '{"X-Market": "us"}' in text
    assert "http://127.0.0.1:8000/health" in text
    assert "http://127.0.0.1:8000/metrics" in text
    assert "kg.auth, kg.app, us.auth, us.app → embedded PostgreSQL in ./.marketgraph/postgres" in (
        text
    )
    assert "not set: an in-process key-value store" in text
    # A demo phone per market, readable, and where the code shows up.
    assert "+996 700 000 001 (kg), +1 212-555-0100 (us)" in text
    assert "SMS_BACKEND=console: the code appears in this log" in text
    request, verify = curl_bodies(text)
    assert request["query"] == 'mutation { requestLoginCode(phone: "+996700000001") { expiresAt } }'
    assert 'verifyLoginCode(phone: "+996700000001", code: "CODE")' in verify["query"]
    # No StoreLocation reprs, no URLs of the embedded server (its password included).
    assert "StoreLocation" not in text
    assert DB_PASSWORD not in text


def test_production_shows_no_graphiql_and_no_sign_in_hint() -> None:
    settings = Settings(
        environment="production",
        database_urls={"DATABASE_URL": "postgresql://mg@db.example:5432/market"},
        sms_backend="webhook",
    )
    screen = screen_of(settings, workers=4)
    text = screen.text()

    assert text.startswith("marketgraph 0.1.0 — production, planner on, 4 workers\n")
    assert "GraphiQL" not in text
    assert "Sign in" not in text
    assert "requestLoginCode" not in text
    assert "+996" not in text
    assert "http://127.0.0.1:8000/graphql" in text
    assert "kg.auth, kg.app, us.auth, us.app → postgresql://mg@db.example:5432/market" in text
    assert "(DATABASE_URL)" in text
    event = screen.event()
    assert event["graphiql"] is None
    assert event["demo_phones"] == {}


def test_passwords_in_database_and_redis_urls_are_hidden() -> None:
    settings = Settings(
        database_urls={
            "KG_DATABASE_URL": (
                f"postgresql://mg:{DB_PASSWORD}@db-kg:5432/market?sslpassword={SSL_PASSWORD}"
            ),
            "US_AUTH_DATABASE_URL": f"postgresql+asyncpg://mg:{DB_PASSWORD}@db-us/auth",
            "US_APP_DATABASE_URL": "postgresql://mg@db-us/app",
        },
        redis_url=f"redis://:{REDIS_PASSWORD}@cache:6379/0?password={REDIS_PASSWORD}",
    )
    screen = screen_of(settings)
    text = screen.text()
    logged = orjson.dumps(screen.event()).decode()

    for shown in (text, logged):
        for secret in (DB_PASSWORD, SSL_PASSWORD, REDIS_PASSWORD):
            assert secret not in shown
    assert "kg.auth, kg.app → postgresql://mg:***@db-kg:5432/market (KG_DATABASE_URL)" in text
    assert "us.auth → postgresql://mg:***@db-us/auth (US_AUTH_DATABASE_URL)" in text
    assert "us.app → postgresql://mg@db-us/app (US_APP_DATABASE_URL)" in text
    assert "each store in its own schema: kg_auth, kg_app, us_auth, us_app" in text
    assert "  Redis     redis://:***@cache:6379/0\n" in text


@pytest.mark.parametrize(
    ("host", "local", "elsewhere"),
    [
        ("0.0.0.0", "http://127.0.0.1:8000", "http://api.example:8000"),  # noqa: S104
        ("::", "http://[::1]:8000", "http://api.example:8000"),
        ("::1", "http://[::1]:8000", None),
        ("localhost", "http://localhost:8000", None),
    ],
)
def test_the_urls_are_ones_a_browser_can_open(host: str, local: str, elsewhere: str | None) -> None:
    screen = screen_of(Settings(), host=host, hostname="api.example")
    text = screen.text()

    assert screen.graphql == f"{local}/graphql"
    assert f"  GraphQL   {local}/graphql\n" in text
    assert "0.0.0.0" not in text  # noqa: S104
    assert "http://::" not in text
    assert screen.elsewhere == elsewhere
    if elsewhere:
        assert f"{elsewhere}/graphql from other machines" in text


def test_the_json_event_holds_the_same_facts_without_art() -> None:
    event = screen_of(Settings()).event()

    assert event["graphql"] == "http://127.0.0.1:8000/graphql"
    assert event["graphiql"] == "http://127.0.0.1:8000/graphql"
    assert event["demo_phones"] == PHONES
    assert list(event["stores"]) == ["kg.auth, kg.app, us.auth, us.app"]
    assert all("\n" not in str(value) for value in event.values())
    orjson.dumps(event)  # every field is JSON


def test_the_sms_hint_follows_the_backend() -> None:
    memory = screen_of(Settings(sms_backend="memory")).text()
    assert "SMS_BACKEND=memory keeps codes inside the process" in memory
    assert "appears in this log" not in memory


def test_the_demo_phones_are_the_first_users_seed_creates_in_each_market() -> None:
    settings = Settings()
    phones = first_demo_phones(settings.markets)

    assert phones == PHONES
    for code, phone in phones.items():
        assert detect_market(phone, settings.markets)[0].code == code
