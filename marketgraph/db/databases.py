"""Databases: one AsyncEngine per distinct URL, and Store handles that apply each store's schema."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from marketgraph.breaker import Breaker
from marketgraph.db import read_your_writes
from marketgraph.db.embedded import EmbeddedPostgres, ensure_databases
from marketgraph.db.pool import WarmOverflowPool
from marketgraph.db.replicas import Replica, ReplicaSet, replica_name
from marketgraph.db.topology import StoreKey, StoreLocation, Topology
from marketgraph.errors import is_unavailable
from marketgraph.settings import ROLES, PoolSettings, Role, Settings


@dataclass(frozen=True, slots=True)
class Store:
    """One (market, role) store: an engine shared with its database's other stores, plus a schema.

    Connections and sessions exist only inside `async with`, so nothing
    outlives its block and a request has nothing to close.
    """

    key: StoreKey
    engine: AsyncEngine  # the primary's
    sessionmaker: async_sessionmaker[AsyncSession]
    replicas: ReplicaSet | None = None  # its read replicas, when REPLICA_URL variables name some

    @property
    def schema(self) -> str:
        return self.key.schema

    @property
    def execution_options(self) -> dict[str, Any]:
        return {"schema_translate_map": {None: self.key.schema}}

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads, in autocommit-free mode; rolled back when the block ends."""
        async with self.engine.connect() as conn:
            yield await conn.execution_options(**self.execution_options)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction on the primary: committed when the block ends, rolled
        back on error. With replicas, the commit's position is kept for the request's
        caller, whose reads then wait for it (`read_your_writes`)."""
        async with self.sessionmaker() as session, session.begin():
            yield session
        if self.replicas is not None:
            await read_your_writes.committed(self)


class Databases:
    """Owns every engine; nothing else in the code creates one.

    Stores whose URLs are equal share one engine, hence one pool: with a single
    `DATABASE_URL` the four stores are four schemas behind one pool.
    """

    def __init__(self, topology: Topology, settings: Settings) -> None:
        self.topology = topology
        self.settings = settings
        # Called with (store, SQL) for every statement: how tests and the benchmark count.
        self.statement_observers: list[Callable[[str, str], None]] = []
        roles_by_url: dict[URL, set[Role]] = {}
        for location in topology:
            roles_by_url.setdefault(location.url, set()).add(location.key.role)
        self._engines: dict[URL, AsyncEngine] = {}
        for url, roles in roles_by_url.items():
            # An engine serving one role takes that role's overrides; a shared one the base values.
            role = next(iter(roles)) if len(roles) == 1 else None
            self._engines[url] = _create_engine(url, settings.pool(role))
        # Standbys likewise: one engine per URL, one ReplicaSet per (primary, its standbys).
        self._replica_engines: dict[URL, AsyncEngine] = {}
        self._replica_sets: dict[tuple[URL, tuple[URL, ...]], ReplicaSet] = {}
        self._stores: dict[StoreKey, Store] = {}
        for location in topology:
            engine = self._engines[location.url]
            options = {"schema_translate_map": {None: location.schema}}
            maker = async_sessionmaker(engine.execution_options(**options), expire_on_commit=False)
            replicas = self._replica_set(location, settings) if location.replicas else None
            self._stores[location.key] = Store(location.key, engine, maker, replicas)
        # Where a caller's recent writes are looked up, once per request (`context.Reads`).
        self.replicated_primaries = tuple(replicas.name for replicas in self.replica_sets)

    def _replica_set(self, location: StoreLocation, settings: Settings) -> ReplicaSet:
        key = (location.url, location.replicas)
        found = self._replica_sets.get(key)
        if found is None:
            standbys = []
            for url in location.replicas:
                engine = self._replica_engines.get(url)
                if engine is None:
                    engine = self._replica_engines[url] = _create_engine(
                        url, settings.pool(location.key.role)
                    )
                standbys.append(Replica(replica_name(url), engine))
            found = self._replica_sets[key] = ReplicaSet(
                replica_name(location.url),
                self._engines[location.url],
                standbys,
                max_lag=settings.replica_max_lag,
                timeout=settings.health_timeout,
            )
        return found

    def store(self, market: str, role: Role) -> Store:
        return self._stores[StoreKey(market, role)]

    @property
    def stores(self) -> list[Store]:
        return list(self._stores.values())

    @property
    def engines(self) -> list[AsyncEngine]:
        """Every engine: the primaries', then the standbys'."""
        return [*self._engines.values(), *self._replica_engines.values()]

    @property
    def primaries(self) -> list[AsyncEngine]:
        return list(self._engines.values())

    @property
    def replica_sets(self) -> list[ReplicaSet]:
        return list(self._replica_sets.values())

    async def dispose(self) -> None:
        for engine in self.engines:
            await engine.dispose()


def _create_engine(url: URL, pool: PoolSettings) -> AsyncEngine:
    # Both timeouts are the driver's, so they hold whatever the network does: a server that
    # swallows packets fails a connection after DB_CONNECT_TIMEOUT and a statement after
    # DB_STATEMENT_TIMEOUT (asyncpg then asks the server to cancel it).
    connect_args: dict[str, Any] = {
        "timeout": pool.connect_timeout,
        "command_timeout": pool.statement_timeout,
    }
    if pool.statement_cache_size is not None:
        # 0 is all PgBouncer in transaction mode needs (before 1.21, which tracks prepared
        # statements itself), on both paths: SQLAlchemy's connections and the planner's raw
        # driver ones. It hands a server connection to a client for one transaction (one
        # statement outside any), so a named statement prepared on one server connection is
        # missing on the next ("prepared statement ... does not exist"). With both caches at 0,
        # SQLAlchemy prepares unnamed statements and asyncpg (0.29 and later) parses an unnamed
        # one again in the same round trip as it runs it: nothing named is ever left on a
        # server connection, so no `prepared_statement_name_func` is needed either.
        # tests/integration/test_pgbouncer.py runs this against a real PgBouncer.
        connect_args["statement_cache_size"] = pool.statement_cache_size
        # SQLAlchemy keeps its own prepared-statement cache in front of asyncpg's. Passed as a
        # connect argument, not in the URL: `engine.url` stays the URL as configured, which
        # asyncpg and PgBouncer take as it is (either refuses the unknown startup parameter).
        connect_args["prepared_statement_cache_size"] = pool.statement_cache_size
    engine = create_async_engine(
        url,
        poolclass=WarmOverflowPool,
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout,
        pool_recycle=pool.recycle,
        echo=pool.echo,
        connect_args=connect_args,
    )
    _ping_idle_connections(engine)
    _break_on_failed_connects(engine, Breaker("A database"))
    return engine


def _break_on_failed_connects(engine: AsyncEngine, breaker: Breaker) -> None:
    """New connections to the engine's server go through `breaker`: after a refused, timed
    out or "too many clients" connect, requests needing a new connection are refused at
    once for a moment rather than each waiting DB_CONNECT_TIMEOUT. Pooled connections
    keep serving; a blackholed one fails once, after DB_STATEMENT_TIMEOUT."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        breaker.before()
        try:
            connection = dialect.connect(*cargs, **cparams)
        except Exception as exc:
            if is_unavailable(exc):
                breaker.failed(exc)
            else:
                breaker.succeeded()  # the server answered (a bad password, say)
            raise
        breaker.succeeded()
        return connection

    @event.listens_for(engine.sync_engine, "handle_error")
    def drop_unavailable(context: Any) -> None:
        # A lost server SQLAlchemy recognises itself, and drops every pooled connection. A
        # statement that timed out (DB_STATEMENT_TIMEOUT) may be one slow query, so only its
        # connection is dropped — and at once: SQLAlchemy would first try a graceful close
        # that waits up to two more seconds on a server that does not answer.
        original = context.original_exception
        if context.is_disconnect or not is_unavailable(original):
            return
        context.is_disconnect = True
        if isinstance(original, TimeoutError):
            context.invalidate_pool_on_disconnect = False
        fairy = context.connection.connection if context.connection is not None else None
        if fairy is not None and fairy.driver_connection is not None:
            fairy.driver_connection.terminate()


# A connection back in the pool for less than this was just working; one idle longer is
# pinged before use (a server restart or an idle timeout may have closed it).
PING_AFTER_IDLE_SECONDS = 2.0


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Pre-ping, but only for connections that sat idle.

    SQLAlchemy's `pool_pre_ping` pings on every checkout; with asyncpg a ping is three
    round trips (BEGIN, `;`, ROLLBACK), more than the one statement a batched read sends.
    Under load connections cycle within milliseconds, so only idle ones are pinged; a
    failed ping raises `DisconnectionError`, on which the pool replaces the connection
    and retries (SQLAlchemy's documented pessimistic-disconnect recipe).
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def remember_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # Dropped at once: the pool's graceful close would wait on a silent server.
            dbapi_connection.driver_connection.terminate()
            raise DisconnectionError("the connection did not answer a ping") from exc


async def prepare_topology(settings: Settings) -> Topology:
    """Every store's location; the embedded server is started (with its databases) only when
    no database variable is set."""
    if not settings.is_embedded:
        return Topology.resolve(
            settings.markets.codes, settings.database_urls, replica_urls=settings.replica_urls
        )
    embedded = EmbeddedPostgres(settings.data_dir)
    server_url = await asyncio.to_thread(embedded.start)
    keys = [StoreKey(m, r) for m in settings.markets.codes for r in ROLES]
    await ensure_databases(server_url, [key.schema for key in keys])
    return Topology.resolve(settings.markets.codes, {}, embedded.url_for)


async def open_databases(settings: Settings) -> Databases:
    """The engines of every store (starting the embedded server when that is the configuration)."""
    return Databases(await prepare_topology(settings), settings)
