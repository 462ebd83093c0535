"""Settings from the environment: every variable, `NAME_FILE` secrets, clear startup errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from marketgraph.settings import ConfigError, PoolSettings, Settings

SECRET_PASSWORD = "pa55-w0rd-never-shown"


pytestmark = pytest.mark.usefixtures("clean_env")  # tests/unit/conftest.py


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, **env)
    return str(caught.value)


def test_defaults_are_the_contracts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load(monkeypatch)
    assert settings.environment == "development"
    assert not settings.is_production
    assert settings.default_market == "kg"
    assert settings.markets.codes == ("kg", "us")
    assert settings.database_urls == {}
    assert settings.is_embedded
    assert settings.redis_url is None
    assert settings.data_dir == tmp_path / "data"
    # 4 stores x (5 + 15) = 80 fit one stock PostgreSQL (max_connections 100, 3 reserved).
    assert settings.pool(None) == PoolSettings(
        size=5,
        max_overflow=15,
        timeout=30.0,
        recycle=3600,
        statement_cache_size=None,
        echo=False,
        connect_timeout=5.0,
        statement_timeout=10.0,
    )
    assert settings.pool("auth") == settings.pool(None) == settings.pool("app")
    assert settings.log_format == "console"
    assert settings.forwarded_allow_ips == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("ENVIRONMENT", "development", "environment", "development"),
        ("DATA_DIR", "/srv/marketgraph", "data_dir", Path("/srv/marketgraph")),
        ("DEFAULT_MARKET", " US ", "default_market", "us"),
        ("REDIS_URL", "redis://cache:6379/2", "redis_url", "redis://cache:6379/2"),
        ("DB_POOL_SIZE", "3", "db_pool_size", 3),
        ("DB_MAX_OVERFLOW", "0", "db_max_overflow", 0),
        ("DB_POOL_TIMEOUT", "2.5", "db_pool_timeout", 2.5),
        ("DB_POOL_RECYCLE", "-1", "db_pool_recycle", -1),
        ("DB_STATEMENT_CACHE_SIZE", "0", "db_statement_cache_size", 0),
        ("DB_ECHO", "true", "db_echo", True),
        ("AUTH_DB_POOL_SIZE", "4", "auth_db_pool_size", 4),
        ("APP_DB_MAX_OVERFLOW", "1", "app_db_max_overflow", 1),
        ("APP_DB_STATEMENT_CACHE_SIZE", "0", "app_db_statement_cache_size", 0),
        ("AUTH_DB_ECHO", "1", "auth_db_echo", True),
        ("HEALTH_TIMEOUT", "0.5", "health_timeout", 0.5),
        ("JWT_ISSUER", "issuer.example", "jwt_issuer", "issuer.example"),
        ("JWT_AUDIENCE", "aud.example", "jwt_audience", "aud.example"),
        ("ACCESS_TOKEN_TTL", "60", "access_token_ttl", 60),
        ("REFRESH_TOKEN_TTL", "3600", "refresh_token_ttl", 3600),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("LOG_FORMAT", "json", "log_format", "json"),
        ("CORS_ORIGINS", "https://a.example, https://b.example", "cors_origins",
         ["https://a.example", "https://b.example"]),
        ("FORWARDED_ALLOW_IPS", "10.0.0.1,10.0.0.2", "forwarded_allow_ips",
         ["10.0.0.1", "10.0.0.2"]),
        ("LOGIN_CODE_PHONE_HOURLY", "7", "login_code_phone_hourly", 7),
        ("LOGIN_CODE_IP_HOURLY", "70", "login_code_ip_hourly", 70),
        ("SMS_BACKEND", "webhook", "sms_backend", "webhook"),
        ("SMS_WEBHOOK_URL", "https://sms.example/send", "sms_webhook_url",
         "https://sms.example/send"),
    ],
)  # fmt: skip
def test_each_variable_parses(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: str, expected: Any
) -> None:
    assert getattr(load(monkeypatch, **{variable: value}), attribute) == expected


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch, db_pool_size="6", database_url="postgresql://u@db.example/marketgraph"
    )
    assert settings.db_pool_size == 6
    assert settings.database_urls == {"DATABASE_URL": "postgresql://u@db.example/marketgraph"}


def test_database_variables_are_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "KG_AUTH_DATABASE_URL": "postgresql://u@kg-auth.example/a",
        "US_DATABASE_URL": "postgresql+asyncpg://u@us.example/b",
        "APP_DATABASE_URL": "postgresql://u@app.example/c",
        "DATABASE_URL": "postgresql://u@all.example/d",
    }
    settings = load(monkeypatch, **env)
    assert settings.database_urls == env
    assert not settings.is_embedded


def test_unrelated_database_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch,
        TEST_DATABASE_URL="not even a url",
        ANALYTICS_DATABASE_URL="postgresql://u@elsewhere/analytics",
        KZ_DATABASE_URL="postgresql://u@kz.example/kz",  # no market kz is configured
        KG_REPORTING_DATABASE_URL="postgresql://u@kg.example/reports",
    )
    assert settings.database_urls == {}
    assert settings.is_embedded


def test_a_markets_file_makes_its_database_variables_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    markets_file = tmp_path / "markets.toml"
    markets_file.write_text(
        '[markets.kz]\nname = "Қазақстан"\ncurrency = "KZT"\ncurrency_symbol = "₸"\n'
        'language = "kk"\nphone_regions = ["KZ"]\n',
        encoding="utf-8",
    )
    settings = load(
        monkeypatch,
        MARKETS_FILE=str(markets_file),
        DATABASE_URL="postgresql://u@db.example/all",
        KZ_DATABASE_URL="postgresql://u@kz.example/kz",
        DEFAULT_MARKET="kz",
    )
    assert settings.markets.codes == ("kg", "us", "kz")
    assert settings.default_market == "kz"
    assert settings.database_urls["KZ_DATABASE_URL"] == "postgresql://u@kz.example/kz"


# --- NAME_FILE -------------------------------------------------------------------------------


def test_secret_file_gives_the_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("from-a-file\n", encoding="utf-8")
    webhook = tmp_path / "webhook"
    webhook.write_text("  hook-secret  ", encoding="utf-8")
    settings = load(
        monkeypatch, JWT_SECRET_FILE=str(secret), PAYMENT_WEBHOOK_SECRET_FILE=str(webhook)
    )
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "from-a-file"
    assert settings.payment_webhook_secret is not None
    assert settings.payment_webhook_secret.get_secret_value() == "hook-secret"


def test_name_wins_over_name_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("from-a-file", encoding="utf-8")
    url_file = tmp_path / "url"
    url_file.write_text("postgresql://u@from-file/db", encoding="utf-8")
    settings = load(
        monkeypatch,
        JWT_SECRET="from-the-variable",
        JWT_SECRET_FILE=str(secret),
        KG_AUTH_DATABASE_URL="postgresql://u@from-variable/db",
        KG_AUTH_DATABASE_URL_FILE=str(url_file),
        DATABASE_URL="postgresql://u@everything/db",
    )
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "from-the-variable"
    assert settings.database_urls["KG_AUTH_DATABASE_URL"] == "postgresql://u@from-variable/db"


def test_database_url_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url_file = tmp_path / "kg-auth-url"
    url_file.write_text(f"postgresql://mg:{SECRET_PASSWORD}@kg-auth/db\n", encoding="utf-8")
    settings = load(
        monkeypatch,
        KG_AUTH_DATABASE_URL_FILE=str(url_file),
        DATABASE_URL="postgresql://u@everything/db",
    )
    assert settings.database_urls == {
        "KG_AUTH_DATABASE_URL": f"postgresql://mg:{SECRET_PASSWORD}@kg-auth/db",
        "DATABASE_URL": "postgresql://u@everything/db",
    }


def test_unreadable_secret_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    message = config_error(monkeypatch, JWT_SECRET_FILE=str(tmp_path / "missing"))
    assert "JWT_SECRET_FILE" in message
    assert "missing" in message


# --- startup errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["DATABASE_URL", "KG_AUTH_DATABASE_URL", "US_DATABASE_URL"])
@pytest.mark.parametrize(
    "value",
    [
        "definitely not a url",
        f"postgresql://mg:{SECRET_PASSWORD}@db.example:54x2/marketgraph",  # bad port
        f"mysql://mg:{SECRET_PASSWORD}@db.example/marketgraph",
        f"postgresql://mg:{SECRET_PASSWORD}@db.example/",  # no database name
        f"postgresql+pg8000x://mg:{SECRET_PASSWORD}@db.example/marketgraph",
    ],
)
def test_malformed_database_url_names_the_variable_not_the_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    env = {"DATABASE_URL": "postgresql://u@fine.example/db", variable: value}
    message = config_error(monkeypatch, **env)
    assert variable in message
    assert SECRET_PASSWORD not in message


def test_malformed_database_url_from_a_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(f"mysql://mg:{SECRET_PASSWORD}@db/x", encoding="utf-8")
    message = config_error(monkeypatch, APP_DATABASE_URL_FILE=str(url_file))
    assert "APP_DATABASE_URL" in message
    assert SECRET_PASSWORD not in message


def test_partial_database_configuration_names_the_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = config_error(
        monkeypatch,
        KG_AUTH_DATABASE_URL="postgresql://u@kg/auth",
        US_DATABASE_URL="postgresql://u@us/all",
    )
    assert "kg.app" in message
    assert "KG_APP_DATABASE_URL, KG_DATABASE_URL, APP_DATABASE_URL, DATABASE_URL" in message


def test_unknown_default_market_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, DEFAULT_MARKET="zz")
    assert "DEFAULT_MARKET" in message
    assert "'zz'" in message
    assert "kg, us" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_POOL_SIZE", "ten"),
        ("DB_POOL_SIZE", "0"),
        ("AUTH_DB_POOL_SIZE", "many"),
        ("APP_DB_MAX_OVERFLOW", "-1"),
        ("DB_POOL_TIMEOUT", "soon"),
        ("DB_STATEMENT_CACHE_SIZE", "-5"),
        ("ACCESS_TOKEN_TTL", "15m"),
        ("DB_ECHO", "perhaps"),
        ("LOG_FORMAT", "xml"),
        ("ENVIRONMENT", "staging"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    message = config_error(monkeypatch, **{variable: value})
    assert f"{variable}:" in message
    assert repr(value) in message


def test_bad_markets_file_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    markets_file = tmp_path / "markets.toml"
    markets_file.write_text('[markets.kg]\ncolour = "red"\n', encoding="utf-8")
    message = config_error(monkeypatch, MARKETS_FILE=str(markets_file))
    assert "MARKETS_FILE" in message
    assert "colour" in message


# --- pools ------------------------------------------------------------------------------------


def test_role_pool_overrides_win_over_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch,
        DB_POOL_SIZE="7",
        AUTH_DB_POOL_SIZE="3",
        DB_MAX_OVERFLOW="5",
        APP_DB_MAX_OVERFLOW="0",
        DB_POOL_TIMEOUT="4",
        AUTH_DB_POOL_TIMEOUT="1.5",
        APP_DB_POOL_RECYCLE="60",
        DB_STATEMENT_CACHE_SIZE="0",
        AUTH_DB_STATEMENT_CACHE_SIZE="100",
        APP_DB_ECHO="true",
        DB_CONNECT_TIMEOUT="2",
        APP_DB_CONNECT_TIMEOUT="0.5",
        AUTH_DB_STATEMENT_TIMEOUT="3",
    )
    assert settings.pool("auth") == PoolSettings(
        size=3,
        max_overflow=5,
        timeout=1.5,
        recycle=3600,
        statement_cache_size=100,
        echo=False,
        connect_timeout=2.0,
        statement_timeout=3.0,
    )
    assert settings.pool("app") == PoolSettings(
        size=7,
        max_overflow=0,
        timeout=4.0,
        recycle=60,
        statement_cache_size=0,
        echo=True,
        connect_timeout=0.5,
        statement_timeout=10.0,
    )
    # An engine serving both roles (a shared database) takes the base values.
    assert settings.pool(None) == PoolSettings(
        size=7,
        max_overflow=5,
        timeout=4.0,
        recycle=3600,
        statement_cache_size=0,
        echo=False,
        connect_timeout=2.0,
        statement_timeout=10.0,
    )


def test_database_urls_given_in_code_ignore_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KG_DATABASE_URL", "postgresql://u@from-env/kg")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@from-env/all")
    given = {"DATABASE_URL": "postgresql://u@given/shared"}
    assert Settings(database_urls=given, data_dir=tmp_path).database_urls == given
    assert Settings(database_urls={}, data_dir=tmp_path).is_embedded
    assert Settings(data_dir=tmp_path).database_urls == {
        "KG_DATABASE_URL": "postgresql://u@from-env/kg",
        "DATABASE_URL": "postgresql://u@from-env/all",
    }


def test_validation_errors_never_show_a_password(tmp_path: Path) -> None:
    """Even a traceback of Settings() itself (not from_env's ConfigError) keeps URLs out."""
    with pytest.raises(ValidationError) as caught:
        Settings(
            database_urls={"DATABASE_URL": f"mysql://mg:{SECRET_PASSWORD}@db/x"}, data_dir=tmp_path
        )
    assert "DATABASE_URL" in str(caught.value)
    assert SECRET_PASSWORD not in str(caught.value)
    assert SECRET_PASSWORD not in repr(caught.value)
