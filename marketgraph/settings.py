"""Environment → Settings: the variables of the HTTP contract, `NAME_FILE` variants for secrets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from marketgraph.markets import MarketRegistry, load_markets

Role = Literal["auth", "app"]
ROLES: tuple[Role, ...] = ("auth", "app")
DATABASE_URL_SUFFIX = "DATABASE_URL"
REPLICA_URL_SUFFIX = "REPLICA_URL"


class ConfigError(ValueError):
    """Bad configuration, said in terms of the environment variables to fix."""


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool options of one engine."""

    size: int
    max_overflow: int
    timeout: float
    recycle: int
    statement_cache_size: int | None
    echo: bool
    connect_timeout: float
    statement_timeout: float


def _read_file_variable(name: str, value: str) -> str:
    try:
        return Path(value).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {value}: {exc.strerror}") from exc


class _FileVariables(PydanticBaseSettingsSource):
    """`NAME_FILE=/run/secrets/x` gives NAME the file's content (NAME itself wins)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = field_name.upper()
        path = os.environ.get(f"{name}_FILE")
        if path is None or name in os.environ:
            return None, field_name, False
        return _read_file_variable(f"{name}_FILE", path), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


class _DatabaseUrls(PydanticBaseSettingsSource):
    """Every `[<MARKET>_][<ROLE>_]DATABASE_URL` and `..._REPLICA_URL` (or its `_FILE`), keyed
    by variable name."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, suffix in (
            ("database_urls", DATABASE_URL_SUFFIX),
            ("replica_urls", REPLICA_URL_SUFFIX),
        ):
            urls: dict[str, str] = {}
            for name, value in os.environ.items():
                upper = name.upper()
                if upper.endswith(suffix) and value:
                    urls[upper] = value
            for name, value in os.environ.items():
                upper = name.upper()
                if upper.endswith(suffix + "_FILE") and value:
                    urls.setdefault(upper[: -len("_FILE")], _read_file_variable(upper, value))
            if urls:
                found[field_name] = urls
        return found


class Settings(BaseSettings):
    """Everything configurable, read once by `create_app`/the CLI, never at import."""

    # Inputs stay out of ValidationError's text: a database URL carries its password.
    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, hide_input_in_errors=True
    )

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path(".marketgraph")
    markets_file: Path | None = None
    default_market: str = "kg"
    database_urls: dict[str, str] = Field(default_factory=dict)
    # Read replicas per store (`[<MARKET>_][<ROLE>_]REPLICA_URL`, comma-separated URLs), read
    # while they lag at most REPLICA_MAX_LAG seconds (marketgraph/db/replicas.py).
    replica_urls: dict[str, str] = Field(default_factory=dict)
    replica_max_lag: float = Field(5.0, gt=0)

    # Four stores on one stock PostgreSQL (max_connections 100, 3 reserved) fit: 4 × (5 + 15).
    db_pool_size: int = Field(5, ge=1)
    db_max_overflow: int = Field(15, ge=0)
    db_pool_timeout: float = Field(30.0, gt=0)
    db_pool_recycle: int = Field(3600, ge=-1)
    db_statement_cache_size: int | None = Field(None, ge=0)
    db_echo: bool = False
    db_connect_timeout: float = Field(5.0, gt=0)
    db_statement_timeout: float = Field(10.0, gt=0)
    auth_db_pool_size: int | None = Field(None, ge=1)
    auth_db_max_overflow: int | None = Field(None, ge=0)
    auth_db_pool_timeout: float | None = Field(None, gt=0)
    auth_db_pool_recycle: int | None = Field(None, ge=-1)
    auth_db_statement_cache_size: int | None = Field(None, ge=0)
    auth_db_echo: bool | None = None
    auth_db_connect_timeout: float | None = Field(None, gt=0)
    auth_db_statement_timeout: float | None = Field(None, gt=0)
    app_db_pool_size: int | None = Field(None, ge=1)
    app_db_max_overflow: int | None = Field(None, ge=0)
    app_db_pool_timeout: float | None = Field(None, gt=0)
    app_db_pool_recycle: int | None = Field(None, ge=-1)
    app_db_statement_cache_size: int | None = Field(None, ge=0)
    app_db_echo: bool | None = None
    app_db_connect_timeout: float | None = Field(None, gt=0)
    app_db_statement_timeout: float | None = Field(None, gt=0)
    # At start-up the pools' maxima (× WEB_CONCURRENCY workers) are checked against each
    # server's max_connections: `enforce` refuses to start over budget, `warn` logs it.
    db_budget_check: Literal["enforce", "warn"] = "enforce"
    web_concurrency: int = Field(1, ge=1)
    # How long a health probe waits for one store before calling it unreachable.
    health_timeout: float = Field(3.0, gt=0)

    redis_url: str | None = None
    # Seconds a key-value operation may take before the request is SERVICE_UNAVAILABLE.
    redis_timeout: float = Field(1.0, gt=0)
    jwt_secret: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = "marketgraph"
    jwt_audience: str = "marketgraph"
    access_token_ttl: int = Field(900, gt=0)
    refresh_token_ttl: int = Field(30 * 24 * 3600, gt=0)
    payment_webhook_secret: SecretStr | None = None
    # HMAC key for stored login codes; shared by every worker (development: generated).
    login_code_secret: SecretStr | None = None
    sms_backend: Literal["console", "webhook", "memory"] = "console"
    sms_webhook_url: str | None = None
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1"]
    )
    login_code_phone_hourly: int = Field(5, ge=1)
    login_code_ip_hourly: int = Field(30, ge=1)
    # Abuse limits: SMS pumping, code guessing, credential stuffing, mass registration.
    sms_daily_market_limit: int = Field(10_000, ge=1)
    sms_daily_prefix_limit: int = Field(1_000, ge=1)
    login_code_daily_guesses: int = Field(100, ge=1)
    email_login_ip_hourly: int = Field(100, ge=1)
    email_login_account_daily: int = Field(100, ge=1)
    register_ip_hourly: int = Field(10, ge=1)
    register_email_hourly: int = Field(5, ge=1)

    # The edge: everything a client sends is bounded before it costs anything.
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    webhook_max_body_bytes: int = Field(64 * 1024, ge=1024)
    # Seconds a client may take to send its request's headers, and again its body.
    request_read_timeout: float = Field(10.0, gt=0)
    max_document_chars: int = Field(100_000, ge=100)
    max_document_tokens: int = Field(5_000, ge=100)
    max_selections: int = Field(2_000, ge=10)
    max_variables_depth: int = Field(16, ge=2)
    query_max_depth: int = Field(10, ge=2)
    query_max_aliases: int = Field(30, ge=0)
    query_max_objects: int = Field(50_000, ge=1)
    preferences_max_bytes: int = Field(16 * 1024, ge=256)
    preferences_max_depth: int = Field(8, ge=1)
    # Requests one worker serves at once; more are answered 503 at once (health and
    # metrics excepted).
    max_in_flight: int = Field(200, ge=1)
    # Seconds a worker drains on SIGTERM (marketgraph/draining.py): requests in flight
    # finish, new ones are answered 503, /health/ready says "draining"; then it stops.
    shutdown_grace: float = Field(20.0, ge=0)
    query_planner: Literal["on", "off", "shadow"] = "on"
    # Persisted documents (marketgraph/persisted.py): Apollo's automatic persisted queries,
    # or only the trusted documents of the manifest; the manifest's file (default under
    # DATA_DIR); how long a CDN may keep an anonymous read sent by id over GET.
    persisted_documents: Literal["off", "apq", "trusted"] = "apq"
    persisted_documents_manifest: Path | None = None
    public_cache_seconds: int = Field(60, ge=0)
    _markets: MarketRegistry = PrivateAttr()

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["console", "json"] = "console"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # URLs given in code are the whole placement: sources' dicts are merged key by key,
        # so the environment's database variables would otherwise slip in beside them.
        given: dict[str, Any] = getattr(init_settings, "init_kwargs", {})
        urls = () if "database_urls" in given else (_DatabaseUrls(settings_cls),)
        return (init_settings, env_settings, _FileVariables(settings_cls), *urls)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("default_market", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cors_origins", "forwarded_allow_ips", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _markets_and_databases(self) -> Settings:
        markets = load_markets(self.markets_file)
        if self.default_market not in markets:
            raise ValueError(
                f"DEFAULT_MARKET={self.default_market!r} is not a known market; "
                f"known markets: {', '.join(markets.codes)}"
            )
        self._markets = markets
        # Only variables that can place a store count (TEST_DATABASE_URL, say, does not).
        wanted = {
            name
            for code in markets.codes
            for role in ROLES
            for name in database_url_variables(code, role)
        }
        urls = {name.upper(): value for name, value in self.database_urls.items()}
        for name in sorted(wanted & urls.keys()):
            parse_database_url(name, urls[name])
        # The embedded server is all or nothing: once one store is placed, every store must be.
        if wanted & urls.keys():
            for code in markets.codes:
                for role in ROLES:
                    candidates = database_url_variables(code, role)
                    if not urls.keys() & set(candidates):
                        raise ValueError(
                            f"store {code}.{role} has no database: set one of "
                            f"{', '.join(candidates)} (or no database variable at all, "
                            "for the embedded PostgreSQL)"
                        )
        object.__setattr__(
            self, "database_urls", {n: urls[n] for n in sorted(wanted & urls.keys())}
        )
        replicas = {name.upper(): value for name, value in self.replica_urls.items()}
        wanted_replicas = {
            name
            for code in markets.codes
            for role in ROLES
            for name in replica_url_variables(code, role)
        }
        replicas = {n: replicas[n] for n in sorted(wanted_replicas & replicas.keys())}
        if replicas and self.is_embedded:
            raise ValueError(
                f"{', '.join(replicas)} set without a database variable: replicas stand "
                "beside primaries placed by DATABASE_URL variables, not the embedded server"
            )
        for name, value in replicas.items():
            parse_replica_urls(name, value)
        object.__setattr__(self, "replica_urls", replicas)
        return self

    @property
    def markets(self) -> MarketRegistry:
        return self._markets

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def manifest_path(self) -> Path:
        """Where the persisted documents' manifest lives."""
        return self.persisted_documents_manifest or self.data_dir / "persisted-documents.json"

    @property
    def is_embedded(self) -> bool:
        """No database variable is set: every store lives in the embedded PostgreSQL."""
        return not self.database_urls

    def pool(self, role: Role | None) -> PoolSettings:
        """Pool options for an engine serving `role` (None: an engine shared by both roles)."""

        def pick(name: str) -> Any:
            if role is not None:
                override = getattr(self, f"{role}_{name}")
                if override is not None:
                    return override
            return getattr(self, name)

        return PoolSettings(
            size=pick("db_pool_size"),
            max_overflow=pick("db_max_overflow"),
            timeout=pick("db_pool_timeout"),
            recycle=pick("db_pool_recycle"),
            statement_cache_size=pick("db_statement_cache_size"),
            echo=pick("db_echo"),
            connect_timeout=pick("db_connect_timeout"),
            statement_timeout=pick("db_statement_timeout"),
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from the environment, or a `ConfigError` naming each bad variable."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None


def refuse_unshared_workers(settings: Settings) -> None:
    """Several workers need Redis: each would otherwise count limits, keep login codes and
    know revocations of its own (a ConfigError: `serve` exits with it, and a worker started
    some other way fails its start-up)."""
    if settings.web_concurrency > 1 and not settings.redis_url:
        raise ConfigError(
            f"WEB_CONCURRENCY={settings.web_concurrency} needs REDIS_URL: without it each "
            "worker keeps its own login codes, rate limits and revoked tokens, so a limit "
            "or a logout on one worker is unknown to the others; set REDIS_URL or run "
            "one worker (WEB_CONCURRENCY=1)"
        )


def database_url_variables(market: str, role: Role) -> tuple[str, ...]:
    """The variables that can place a store, most specific first (http.md's precedence)."""
    m, r = market.upper(), role.upper()
    return (
        f"{m}_{r}_{DATABASE_URL_SUFFIX}",
        f"{m}_{DATABASE_URL_SUFFIX}",
        f"{r}_{DATABASE_URL_SUFFIX}",
        DATABASE_URL_SUFFIX,
    )


def replica_url_variables(market: str, role: Role) -> tuple[str, ...]:
    """The variables that can name a store's replicas, most specific first (as for primaries)."""
    return tuple(
        name.removesuffix(DATABASE_URL_SUFFIX) + REPLICA_URL_SUFFIX
        for name in database_url_variables(market, role)
    )


def parse_replica_urls(name: str, value: str) -> tuple[URL, ...]:
    """A replica variable's comma-separated URLs (an empty item is ignored); one that names
    no database reads the database of the store's primary (`topology`)."""
    return tuple(
        parse_database_url(name, item.strip(), need_database=False)
        for item in value.split(",")
        if item.strip()
    )


def parse_database_url(name: str, value: str, *, need_database: bool = True) -> URL:
    """`value` as an asyncpg URL, or a `ValueError` that names the variable, not the password."""
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValueError(f"{name} is not a database URL (expected postgresql://...)") from None
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in (
        "asyncpg",
        "psycopg2",
        "psycopg",
    ):
        raise ValueError(
            f"{name} must be a postgresql:// or postgresql+asyncpg:// URL, not {url.drivername}://"
        )
    if need_database and not url.database:
        raise ValueError(f"{name} names no database (postgresql://host/DBNAME)")
    return url.set(drivername="postgresql+asyncpg")


def _explain(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc and loc[0] == "database_urls":
            lines.append(f"  {message}")
        elif loc and "secret" in loc[0]:
            lines.append(f"  {loc[0].upper()}: {message}")
        elif loc:
            lines.append(f"  {loc[0].upper()}: {message} (got {error.get('input')!r})")
        else:
            lines.append(f"  {message}")
    return "\n".join(lines)
