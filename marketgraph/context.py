"""RequestContext: what one GraphQL request's resolvers may use, decided once by the view."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.types import Scope

from marketgraph import policies
from marketgraph.auth.authenticate import authenticate
from marketgraph.auth.principal import Principal
from marketgraph.db import read_your_writes
from marketgraph.db.databases import Databases, Store
from marketgraph.db.replicas import Replica
from marketgraph.errors import DomainError, ErrorCode, ServiceUnavailableError, is_unavailable
from marketgraph.kv import KeyValueStore
from marketgraph.markets import Market, MarketRegistry
from marketgraph.middleware import client_ip, header
from marketgraph.resolvers.loaders import Loaders, build_loaders
from marketgraph.settings import Role, Settings

if TYPE_CHECKING:
    from marketgraph.services import Services

T = TypeVar("T")


@dataclass(eq=False)
class Reads:
    """How one request's reads reach the stores: the one place both read paths (these loaders
    and the planner's `Run`) take their connections.

    Which server: a query's reads may go to a store's standby (`ReplicaSet.choose`), one
    that has replayed the caller's last write there (`read_your_writes`); a mutation's
    reads, like every write, stay on the primary. A standby that cannot be reached is
    marked down and the read goes to the primary.

    In a query (`snapshot` set by the `ReadSnapshots` extension) every batch on a store
    runs on one connection of the request, inside one `REPEATABLE READ` transaction (its
    batches only read), taking turns under a lock: sibling fields resolve concurrently, and no
    connection is ever used by two coroutines at once, yet every read of the store sees one
    snapshot — a cart's lines and its products' prices from the same moment
    (tests/concurrency/test_cart_snapshot.py fails without it). A mutation's reads (after
    its writes) take a connection per batch, each seeing what was committed.
    """

    snapshot: bool = False
    replicas: bool = False  # reads may go to a standby (a query's)
    kv: KeyValueStore | None = None  # where the caller's last writes are kept
    subject: str | None = None  # whose writes they are (`read_your_writes.subject_of`)
    primaries: tuple[str, ...] = ()  # the replicated primaries' names
    _last_writes: asyncio.Future[dict[str, int] | None] | None = None
    _open: dict[str, tuple[AsyncConnection, asyncio.Lock]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def open(self, store: Store, connect: Callable[[AsyncEngine], Awaitable[T]]) -> T:
        """`connect(engine)` on the server this request reads `store` from."""
        chosen = await self._source(store)
        if chosen is None:
            opened = await connect(store.engine)
        else:
            assert store.replicas is not None
            try:
                opened = await connect(chosen.engine)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                store.replicas.failed(chosen, exc)
                chosen, opened = None, await connect(store.engine)
        if store.replicas is not None:
            store.replicas.served(str(store.key), chosen)
        return opened

    async def _source(self, store: Store) -> Replica | None:
        if not self.replicas or store.replicas is None:
            return None
        if self.subject is None or self.kv is None:
            return store.replicas.choose()
        if self._last_writes is None:  # once per request, however many reads ask at once
            self._last_writes = asyncio.ensure_future(self._fetch_last_writes(self.kv))
        last = await asyncio.shield(self._last_writes)
        if last is None:  # not known: only the primary surely has them
            return None
        return store.replicas.choose(last.get(store.replicas.name, 0))

    async def _fetch_last_writes(self, kv: KeyValueStore) -> dict[str, int] | None:
        assert self.subject is not None
        try:
            return await read_your_writes.last_writes(kv, self.subject, self.primaries)
        except Exception as exc:
            if is_unavailable(exc):
                return None
            raise

    @asynccontextmanager
    async def connection(self, store: Store) -> AsyncIterator[AsyncConnection]:
        held = await self._snapshot_of(store) if self.snapshot else None
        if held is None:
            conn = await self.open(store, _connect)
            try:
                yield await conn.execution_options(**store.execution_options)
            finally:
                await conn.close()
            return
        conn, turn = held
        async with turn:
            yield conn

    async def _snapshot_of(self, store: Store) -> tuple[AsyncConnection, asyncio.Lock] | None:
        """The store's connection in this request's snapshot, opened on first use; None once
        the snapshots have ended (a batch a failed sibling left running reads on its own)."""
        async with self._lock:  # one opening per store, however many batches ask at once
            if not self.snapshot:
                return None
            held = self._open.get(str(store.key))
            if held is None:
                conn = await self.open(store, _connect)
                try:
                    # BEGIN ISOLATION LEVEL REPEATABLE READ with the first batch: no round
                    # trip of its own; the pool resets the level when the connection returns.
                    await conn.execution_options(
                        isolation_level="REPEATABLE READ", **store.execution_options
                    )
                    await conn.begin()
                except BaseException:
                    await conn.close()
                    raise
                held = self._open[str(store.key)] = (conn, asyncio.Lock())
            return held

    async def close(self) -> None:
        """End the request's snapshots (their batches only read: rolled back). A batch still
        running finishes first; one that starts later reads on a connection of its own."""
        async with self._lock:
            self.snapshot = False
            opened, self._open = self._open, {}
        for conn, turn in opened.values():
            # Shielded: a request cancelled now (its client gone) still returns the
            # connection to the pool, rather than leaving it to the garbage collector.
            await asyncio.shield(_close(conn, turn))


async def _connect(engine: AsyncEngine) -> AsyncConnection:
    return await engine.connect()


async def _close(conn: AsyncConnection, turn: asyncio.Lock) -> None:
    async with turn:
        try:
            await conn.close()
        except Exception:
            await conn.invalidate()


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Handles, not open sessions: stores hand out connections only inside `async with`."""

    request_id: str
    client_ip: str
    principal: Principal | None  # None: anonymous
    market: Market  # the token's market > X-Market > DEFAULT_MARKET
    header_market: str | None  # X-Market as sent, to detect conflicts with the token
    auth: Store  # this market's auth store
    app: Store  # this market's app store
    services: Services
    # Loaders per market, made on first use: admins may read several markets in one request.
    _loaders: dict[str, Loaders] = field(default_factory=dict)
    # Errors that do not fail a field (a market that is down in marketStats), added to the answer.
    extra_errors: list[DomainError] = field(default_factory=list)
    # The read specs' loaders (`reads.derive`), per (market, spec entry).
    spec_loaders: dict[tuple[str, int], Any] = field(default_factory=dict)
    reads: Reads = field(default_factory=lambda: Reads())

    def reading(self, store: Store) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for one loader batch on `store`: the request's snapshot of the
        store in a query (see `Reads`), a connection of its own otherwise."""
        return self.reads.connection(store)

    def forget_reads(self) -> None:
        """After a write: what this request's loaders read before it is stale."""
        self._loaders.clear()
        self.spec_loaders.clear()

    def loaders_for(self, market: str) -> Loaders:
        loaders = self._loaders.get(market)
        if loaders is None:
            loaders = build_loaders(
                self.databases.store(market, "auth"),
                self.databases.store(market, "app"),
                self.reading,
            )
            self._loaders[market] = loaders
        return loaders

    @property
    def loaders(self) -> Loaders:
        """The loaders of the request's market."""
        return self.loaders_for(self.market.code)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def markets(self) -> MarketRegistry:
        return self.services.settings.markets

    @property
    def databases(self) -> Databases:
        return self.services.databases

    @property
    def kv(self) -> KeyValueStore:
        return self.services.kv

    @property
    def is_admin(self) -> bool:
        return self.principal is not None and self.principal.is_admin

    def require_user(self) -> uuid.UUID:
        """The signed-in user's id; `UNAUTHENTICATED` when anonymous (or an API key),
        `MARKET_MISMATCH` when X-Market names another market than the token."""
        if self.principal is None or self.principal.user_id is None:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "Sign in first")
        self.check_market_header()
        return self.principal.user_id

    def require_admin(self) -> Principal:
        """An admin user or an API key; `UNAUTHENTICATED`/`FORBIDDEN` otherwise."""
        if self.principal is None:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "Sign in first")
        if not self.principal.is_admin:
            raise DomainError(ErrorCode.FORBIDDEN, "Only administrators may do this")
        return self.principal

    def check_market_header(self) -> None:
        if (
            self.principal is not None
            and self.header_market is not None
            and self.header_market.strip().lower() != self.principal.market
        ):
            raise DomainError(
                ErrorCode.MARKET_MISMATCH,
                f"X-Market {self.header_market!r} conflicts with the token's market "
                f"{self.principal.market!r}",
            )

    def reachable_market(self, code: str) -> Market | None:
        """Market `code` when the caller may read its data: the request's own market, or any
        for an admin user (an API key stays in its market); None otherwise, or if unknown."""
        return policies.reachable(self, code)

    def store_for(self, market: str, role: Role) -> Store:
        """A store of a market the caller may reach (`reachable_market`), else `NOT_FOUND`."""
        found = self.reachable_market(market)
        if found is None:
            raise DomainError(ErrorCode.NOT_FOUND, "Not found")
        return self.databases.store(found.code, role)


async def request_context(scope: Scope, services: Services) -> RequestContext:
    """The context of one HTTP request: its caller (a bad credential raises its `DomainError`)
    and market — the token's, else X-Market, else DEFAULT_MARKET."""
    markets = services.settings.markets
    try:
        principal = await authenticate(
            header(scope, b"authorization"),
            tokens=services.tokens,
            kv=services.kv,
            databases=services.databases,
            markets=markets,
        )
    except DomainError:
        raise
    except Exception as exc:  # an API key's store that cannot answer
        if is_unavailable(exc):
            raise ServiceUnavailableError() from exc
        raise
    header_market = header(scope, b"x-market")
    if services.databases.replicated_primaries:
        read_your_writes.begin_request(services.kv, services.settings.replica_max_lag, principal)
    if principal is not None:
        market = markets.require(principal.market)
    else:
        market = markets.require(header_market or services.settings.default_market)
    return RequestContext(
        request_id=scope["state"]["request_id"],
        client_ip=client_ip(scope, services.settings.forwarded_allow_ips),
        principal=principal,
        market=market,
        header_market=header_market,
        auth=services.databases.store(market.code, "auth"),
        app=services.databases.store(market.code, "app"),
        services=services,
        reads=Reads(
            kv=services.kv,
            subject=read_your_writes.subject_of(principal),
            primaries=services.databases.replicated_primaries,
        ),
    )


Info: TypeAlias = strawberry.Info[RequestContext, None]
