"""What a planned read needs at run time: the request context, its variables, and one raw
driver connection per store, with statements compiled once per schema.

The planner runs Core statements built from the read specs (`planner/shapes.py`), compiled
once per store schema to SQL text and executed on the asyncpg connection under the
SQLAlchemy pool, so a request pays the driver's cost and not the ORM's. Each database gets
one connection per request (acquired on first use, released when the run ends);
statements on different databases run concurrently, statements on one database take turns
on its connection (a driver connection runs one statement at a time).

A plan that reads one store with more than one statement runs on a `REPEATABLE READ READ
ONLY` transaction per connection, so every read of a store within the request sees one
snapshot (a plan of one statement per store is one snapshot by itself, and pays no
BEGIN).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from marketgraph import tracing
from marketgraph.context import RequestContext
from marketgraph.db import greenlets
from marketgraph.db.databases import Store
from marketgraph.metrics import record_statement

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's own signature


# asyncpg decodes a nested `record[]` (a fused to-many lookup) only once the connection has
# met the type as a result column: each connection is shown one when the planner first
# takes it.
_RECORD_ARRAY = "SELECT ARRAY(SELECT ROW(1))"
_KNOW_RECORD_ARRAYS: weakref.WeakSet[Any] = weakref.WeakSet()


class Fallback(Exception):  # noqa: N818 - a signal, not an error: Strawberry takes over
    """The planned run cannot answer this request exactly; Strawberry's execution will."""


@dataclass(slots=True)
class CompiledStatement:
    """A Core statement and its SQL text per store schema, with the order of its parameters
    and the values of those the statement fixes itself (a `LIMIT 1`, say)."""

    statement: Select[Any]
    _sql: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    def sql_for(self, schema: str) -> tuple[str, tuple[str, ...]]:
        compiled = self._sql.get(schema)
        if compiled is None:
            result = self.statement.compile(
                dialect=_DIALECT,
                schema_translate_map={None: schema},
                render_schema_translate=True,
            )
            compiled = (str(result), tuple(result.positiontup or ()))
            self.fixed = {k: v for k, v in result.params.items() if v is not None}
            self._sql[schema] = compiled
        return compiled

    def arguments(self, order: tuple[str, ...], params: dict[str, Any]) -> list[Any]:
        fixed = self.fixed
        return [params[n] if n in params else fixed[n] for n in order]


@dataclass(slots=True)
class _Connection:
    handle: PoolProxiedConnection
    raw: Any  # asyncpg.Connection
    lock: asyncio.Lock
    snapshot: Any = None  # the REPEATABLE READ transaction, when the plan needs one
    broken: bool = False


async def _raw_connection(engine: AsyncEngine) -> PoolProxiedConnection:
    return await greenlets.call(engine.sync_engine.raw_connection)


class Run:
    """One planned request: its context and variables, and its database connections."""

    def __init__(self, ctx: RequestContext, variables: Any, snapshot: bool = False) -> None:
        self.ctx = ctx
        self.variables = variables
        self.snapshot = snapshot
        self._once: dict[Hashable, asyncio.Future[Any]] = {}
        self._dropped: set[int] = set()  # handles whose connection was terminated
        self._background: list[asyncio.Task[Any]] = []
        self._connections: dict[int, asyncio.Future[_Connection]] = {}
        self._handles: list[PoolProxiedConnection] = []  # every one taken, closed at the end
        # Sibling branches run concurrently only when they can reach different databases:
        # on one database they would take turns on its one connection anyway, and tasks
        # cost more than they overlap (one DATABASE_URL, the usual set-up).
        self.concurrent = len(ctx.databases.primaries) > 1
        ctx.reads.replicas = True  # a planned operation is a query: a standby may answer it

    async def __aenter__(self) -> Run:
        return self

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` beside the request's other statements; the run waits for it (or
        cancels it) before it ends, so no statement outlives its connection."""
        self._background.append(asyncio.ensure_future(work))

    async def __aexit__(self, *exc: object) -> None:
        for task in self._background:
            if not task.done():
                task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for pending in self._connections.values():
            if pending.done() and not pending.cancelled() and pending.exception() is None:
                connection = pending.result()
                if connection.snapshot is not None and not connection.broken:
                    try:
                        await connection.snapshot.rollback()  # read only: nothing to keep
                    except Exception:
                        connection.broken = True
                        connection.raw.terminate()
        broken = {
            id(pending.result().handle)
            for pending in self._connections.values()
            if pending.done()
            and not pending.cancelled()
            and pending.exception() is None
            and pending.result().broken
        } | self._dropped
        for handle in self._handles:
            # A snapshot interrupted before its rollback (a sibling's failure cancelled it)
            # must not go back to the pool still open, read-only, for the next request.
            raw = handle.driver_connection
            if raw is not None and not raw.is_closed() and raw.is_in_transaction():
                raw.terminate()
                broken.add(id(handle))
            if id(handle) in broken:
                # Tell the pool, so neither path gets this connection again.
                await greenlets.call(handle.invalidate)
            await greenlets.call(handle.close)

    async def _connection(self, store: Store) -> _Connection:
        """One connection per database: the compiled SQL names its schema, so every store of
        a database (all four with a single DATABASE_URL) shares it — taken from the server
        `Reads` picks, the primary or one of its standbys."""
        key = id(store.engine)
        pending = self._connections.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._connections[key] = pending
            try:
                # Straight from the pool (checkout events, the idle ping, included): a
                # SQLAlchemy Connection around it would cost more than the statement.
                handle = await self.ctx.reads.open(store, _raw_connection)
                self._handles.append(handle)
                connection = _Connection(handle, handle.driver_connection, asyncio.Lock())
                try:
                    await self._prepare(connection)
                except BaseException:
                    # Interrupted half way (a BEGIN sent, its answer not read): not reusable.
                    connection.raw.terminate()
                    self._dropped.add(id(handle))
                    raise
                pending.set_result(connection)
            except BaseException as exc:
                # The branches waiting for this connection share its failure; a cancelled
                # creator (a sibling branch failed) cancels it, and nothing is left for
                # asyncio to log as "exception was never retrieved".
                if isinstance(exc, asyncio.CancelledError):
                    pending.cancel()
                else:
                    pending.set_exception(exc)
                    pending.exception()
                raise
        # Shielded: a waiter being cancelled must not cancel the shared future under the
        # branch that is still connecting (its set_result would fail and leak the connection).
        return await asyncio.shield(pending)

    async def _prepare(self, connection: _Connection) -> None:
        if connection.raw not in _KNOW_RECORD_ARRAYS:
            await connection.raw.fetchval(_RECORD_ARRAY)
            _KNOW_RECORD_ARRAYS.add(connection.raw)
        if self.snapshot:
            connection.snapshot = connection.raw.transaction(
                isolation="repeatable_read", readonly=True
            )
            await connection.snapshot.start()

    async def once(self, key: Hashable, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """`fetch()`'s result, computed once per key for the whole run: sibling fields that
        share a statement wait for the first one's."""
        pending = self._once.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = self._once[key] = asyncio.get_running_loop().create_future()
        try:
            result = await fetch()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                pending.cancel()
            else:
                pending.set_exception(exc)
                pending.exception()  # retrieved: the waiters, if any, raise it themselves
            raise
        pending.set_result(result)
        return result

    async def fetch(
        self, store: Store, statement: CompiledStatement, params: dict[str, Any]
    ) -> list[Any]:
        """Rows (asyncpg Records) of one statement on `store`, counted like every statement."""
        sql, order = statement.sql_for(store.schema)
        connection = await self._connection(store)
        record_statement(self.ctx.databases, str(store.key), sql)
        async with connection.lock:
            try:
                with tracing.statement(store, sql):
                    rows: list[Any] = await connection.raw.fetch(
                        sql, *statement.arguments(order, params)
                    )
            except (
                OSError,
                asyncpg.InterfaceError,
                asyncpg.PostgresConnectionError,
                asyncio.CancelledError,
            ):
                # Lost, or timed out with its statement still running: dropped at once (the
                # pool's own close would first wait for a server that may not answer).
                connection.broken = True
                connection.raw.terminate()
                raise
        return rows
