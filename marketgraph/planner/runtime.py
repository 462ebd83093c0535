"""What a planned read needs at run time: the request context, its variables, and one raw
driver connection per store, with statements compiled once per schema.

The planner runs the loaders' own Core statements (`resolvers/statements.py`), compiled
once per store schema to SQL text and executed on the asyncpg connection under the
SQLAlchemy pool, so a request pays the driver's cost and not the ORM's. Each store gets
one connection per request (acquired on first use, released when the run ends);
statements for different stores run concurrently, statements for one store take turns on
its connection (a driver connection runs one statement at a time).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from marketgraph.context import RequestContext
from marketgraph.db.databases import Store
from marketgraph.metrics import record_statement

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's own signature


class Fallback(Exception):  # noqa: N818 - a signal, not an error: Strawberry takes over
    """The planned run cannot answer this request exactly; Strawberry's execution will."""


@dataclass(slots=True)
class CompiledStatement:
    """A Core statement and its SQL text per store schema, with the order of its parameters."""

    statement: Select[Any]
    _sql: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def sql_for(self, schema: str) -> tuple[str, tuple[str, ...]]:
        compiled = self._sql.get(schema)
        if compiled is None:
            result = self.statement.compile(
                dialect=_DIALECT,
                schema_translate_map={None: schema},
                render_schema_translate=True,
            )
            compiled = (str(result), tuple(result.positiontup or ()))
            self._sql[schema] = compiled
        return compiled


@dataclass(slots=True)
class _Connection:
    raw: Any  # asyncpg.Connection
    lock: asyncio.Lock


class Run:
    """One planned request: its context and variables, and its store connections."""

    def __init__(self, ctx: RequestContext, variables: Any) -> None:
        self.ctx = ctx
        self.variables = variables
        self._stack = AsyncExitStack()
        self._connections: dict[str, asyncio.Future[_Connection]] = {}

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _connection(self, store: Store) -> _Connection:
        name = str(store.key)
        pending = self._connections.get(name)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._connections[name] = pending
            try:
                conn: AsyncConnection = await self._stack.enter_async_context(
                    store.engine.connect()
                )
                fairy = await conn.get_raw_connection()
                pending.set_result(_Connection(fairy.driver_connection, asyncio.Lock()))
            except BaseException as exc:
                pending.set_exception(exc)
                raise
        return await pending

    async def fetch(
        self, store: Store, statement: CompiledStatement, params: dict[str, Any]
    ) -> list[Any]:
        """Rows (asyncpg Records) of one statement on `store`, counted like every statement."""
        sql, order = statement.sql_for(store.schema)
        connection = await self._connection(store)
        record_statement(self.ctx.databases, str(store.key), sql)
        async with connection.lock:
            rows: list[Any] = await connection.raw.fetch(sql, *(params[n] for n in order))
        return rows
