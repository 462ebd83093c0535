"""The connection budget: what the pools of every worker may open on each PostgreSQL server,
against the connections that server accepts.

Each engine opens at most DB_POOL_SIZE + DB_MAX_OVERFLOW connections (or the AUTH_/APP_
overrides its role takes), and each of WEB_CONCURRENCY workers has its own engines. When
their sum on one server passes max_connections minus the reserved slots, the server
refuses connections under load ("too many clients"), far from the configuration that
caused it; start-up is where that is said, by server and variable. The numbers come from
the engines' own pools, so the override rule lives only in `Databases`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from marketgraph.db.databases import Databases
from marketgraph.db.pool import WarmOverflowPool
from marketgraph.errors import describe_error
from marketgraph.settings import ConfigError

DEFAULT_PORT = 5432

# reserved_connections exists from PostgreSQL 16 on (NULL before); the start time and port
# tell two names of one server apart from two servers.
_LIMITS = text(
    "SELECT current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " coalesce(current_setting('reserved_connections', true)::int, 0),"
    " pg_postmaster_start_time(), current_setting('port')"
)


@dataclass(frozen=True, slots=True)
class ServerBudget:
    """One server: the connections our workers' pools may open there, and what it accepts."""

    server: str  # host:port (several, comma-separated, when names reach one server)
    pools: tuple[tuple[int, int], ...]  # (size, max overflow) of each engine on the server
    workers: int
    max_connections: int
    reserved: int  # superuser_reserved_connections + reserved_connections

    @property
    def per_worker(self) -> int:
        return sum(size + overflow for size, overflow in self.pools)

    @property
    def wanted(self) -> int:
        return self.workers * self.per_worker

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    @property
    def is_over(self) -> bool:
        return self.wanted > self.available

    def explain(self) -> str:
        """One line naming the server (never a password), the numbers and what to change."""
        shapes = Counter(self.pools)
        pools = ", ".join(
            f"{n} pool{'s' if n > 1 else ''} of {size} + {overflow}"
            for (size, overflow), n in shapes.items()
        )
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        return (
            f"PostgreSQL {self.server} is over its connection budget: {workers} x "
            f"{self.per_worker} ({pools}) = {self.wanted} connections, but it accepts "
            f"{self.available} (max_connections {self.max_connections} - {self.reserved} "
            "reserved); lower DB_POOL_SIZE / DB_MAX_OVERFLOW (or their AUTH_DB_ / APP_DB_ "
            "overrides), run fewer workers (WEB_CONCURRENCY / --workers), or raise "
            "max_connections on the server (DB_BUDGET_CHECK=warn starts anyway)"
        )


@dataclass(frozen=True, slots=True)
class Unanswered:
    """A server that did not answer in time: its budget is not known."""

    server: str
    reason: str  # a short class (describe_error), never the exception's text


@dataclass(frozen=True, slots=True)
class Budget:
    """Every server's budget, and the servers that could not be asked."""

    servers: tuple[ServerBudget, ...]
    unanswered: tuple[Unanswered, ...]

    @property
    def over(self) -> tuple[ServerBudget, ...]:
        return tuple(server for server in self.servers if server.is_over)

    def error(self) -> ConfigError | None:
        """One line per server over budget, or None when every server fits."""
        lines = [server.explain() for server in self.over]
        return ConfigError("\n".join(lines)) if lines else None


def server_address(url: URL) -> str:
    """`host:port` of a database URL (a Unix socket's directory as the host); no credentials."""
    host = url.host or url.query.get("host") or "localhost"
    if not isinstance(host, str):  # ?host=a&host=b: several hosts
        host = ",".join(host)
    return f"{host}:{url.port or DEFAULT_PORT}"


@dataclass(frozen=True, slots=True)
class _Limits:
    max_connections: int
    reserved: int
    identity: tuple[datetime, str]


async def _ask_limits(engine: AsyncEngine, limit: float) -> _Limits:
    async with asyncio.timeout(limit), engine.connect() as conn:
        row = (await conn.execute(_LIMITS)).one()
    return _Limits(row[0], row[1] + row[2], (row[3], row[4]))


def _pool_limits(engine: AsyncEngine) -> tuple[int, int]:
    pool = engine.sync_engine.pool
    if not isinstance(pool, WarmOverflowPool):
        raise TypeError(f"engines are made with WarmOverflowPool, not {type(pool).__name__}")
    return pool.size(), pool.max_overflow()


async def measure_budget(databases: Databases) -> Budget:
    """Each server's budget, asked of the servers concurrently, each for at most
    HEALTH_TIMEOUT: a store that is down must not keep the service from starting."""
    settings = databases.settings
    engines_at: dict[str, list[AsyncEngine]] = {}
    for engine in databases.engines:
        engines_at.setdefault(server_address(engine.url), []).append(engine)
    addresses = list(engines_at)
    answers = await asyncio.gather(
        *(_ask_limits(engines_at[a][0], settings.health_timeout) for a in addresses),
        return_exceptions=True,
    )
    # Two names (localhost, 127.0.0.1) may reach one server: its budget is the sum of both.
    by_server: dict[tuple[datetime, str], tuple[list[str], _Limits]] = {}
    unanswered = []
    for address, answer in zip(addresses, answers, strict=True):
        if isinstance(answer, Exception):
            unanswered.append(Unanswered(address, describe_error(answer)))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            by_server.setdefault(answer.identity, ([], answer))[0].append(address)
    servers = tuple(
        ServerBudget(
            server=", ".join(names),
            pools=tuple(_pool_limits(e) for name in names for e in engines_at[name]),
            workers=settings.web_concurrency,
            max_connections=limits.max_connections,
            reserved=limits.reserved,
        )
        for names, limits in by_server.values()
    )
    return Budget(servers, tuple(unanswered))


async def check_budget(databases: Databases) -> Budget:
    """Start-up's check: a `ConfigError` for a server over budget (DB_BUDGET_CHECK=enforce)
    or a warning with the same text (warn); a server that does not answer is skipped with
    a warning."""
    # Looked up per call, not at import: a start-up check, and tests capture what it says.
    log = structlog.get_logger(__name__)
    budget = await measure_budget(databases)
    for skipped in budget.unanswered:
        log.warning(
            "connection budget not checked: the server did not answer",
            server=skipped.server,
            reason=skipped.reason,
        )
    error = budget.error()
    if error is not None and databases.settings.db_budget_check == "enforce":
        raise error
    for server in budget.over:
        log.warning(
            server.explain(),
            server=server.server,
            wanted=server.wanted,
            available=server.available,
        )
    return budget
