"""The engines' pool: SQLAlchemy's asyncio QueuePool, with overflow connections kept warm.

SQLAlchemy closes an overflow connection as soon as it comes back while `pool_size`
others sit idle. Under a steady load a little above DB_POOL_SIZE that happens on almost
every request, and each next request opens a new PostgreSQL session (a process fork and
authentication, milliseconds): the benchmark's 16 connections against the default pool
of 10 opened 1,393 sessions in 10 seconds and tripled p99. Here a returned overflow
connection waits in the pool like the others; once the pool has not needed more than
DB_POOL_SIZE connections for OVERFLOW_IDLE_SECONDS, the surplus is closed: as connections
come back, and by `close_idle_overflow`, the housekeeping task `open_services` starts, when
none come back at all (after a burst and then silence, the surplus would otherwise stay
open for good). DB_POOL_SIZE stays what is kept for good, DB_MAX_OVERFLOW the most opened
on top of it; connections are handed out newest first, so the surplus is the idle one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from marketgraph.db import greenlets

log = structlog.get_logger(__name__)

# How long the pool must have stayed within DB_POOL_SIZE before it closes its surplus.
OVERFLOW_IDLE_SECONDS = 30.0
# How often the housekeeping task looks for a surplus to close: it goes at most this long
# after OVERFLOW_IDLE_SECONDS.
HOUSEKEEPING_SECONDS = 5.0


class WarmOverflowPool(AsyncAdaptedQueuePool):
    """The pool every engine uses (see the module's docstring)."""

    def __init__(self, creator: Any, pool_size: int = 5, max_overflow: int = 10, **kw: Any):
        # The queue holds every open connection, overflow included (0: unbounded, as
        # QueuePool's own pool_size=0 or max_overflow=-1 mean).
        bounded = pool_size > 0 and max_overflow >= 0
        super().__init__(
            creator,
            pool_size=pool_size + max_overflow if bounded else 0,
            max_overflow=max_overflow,
            use_lifo=True,
            **kw,
        )
        self._size = pool_size
        self._overflow = -pool_size
        self._max_overflow = max_overflow if pool_size > 0 else -1
        self._busy_at = 0.0  # last time more than pool_size connections were out

    def size(self) -> int:
        return self._size

    def max_overflow(self) -> int:
        """How many connections may be opened beyond `size()` (-1: no limit)."""
        return self._max_overflow

    def checkedout(self) -> int:
        return self._size + self._overflow - self._pool.qsize()

    def has_idle_surplus(self) -> bool:
        """More than `size()` connections sit idle, and the overflow was last needed more
        than OVERFLOW_IDLE_SECONDS ago."""
        return (
            self._overflow > 0
            and self._pool.qsize() > self._size
            and time.monotonic() - self._busy_at > OVERFLOW_IDLE_SECONDS
        )

    def close_idle_surplus(self) -> int:
        """Close idle connections while `has_idle_surplus()`; how many were closed.

        Run it in a greenlet (`greenlets.call`): closing awaits the driver, and other
        tasks run meanwhile. Each connection leaves the queue before it is closed, so no
        checkout can be handed one that is closing, and the overflow count drops only
        once it is closed, so the server never sees more than size + max overflow.
        """
        closed = 0
        while self.has_idle_surplus():
            self._close_one_idle()
            closed += 1
        return closed

    def _close_one_idle(self) -> None:
        surplus = self._pool.get(False)
        try:
            surplus.close()
        finally:
            self._dec_overflow()

    def _do_get(self) -> ConnectionPoolEntry:
        entry = super()._do_get()
        if self.checkedout() > self._size:
            self._busy_at = time.monotonic()
        return entry

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        if self.has_idle_surplus():
            self._close_one_idle()

    def recreate(self) -> WarmOverflowPool:
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            pool_size=self._size,
            max_overflow=self._max_overflow,
            pre_ping=self._pre_ping,
            timeout=self._timeout,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )


# SQLAlchemy keeps its own loggers at WARNING unless asked; the pool's housekeeping lines
# ("Pool recreating", "Pool disposed") would otherwise reach the app's INFO log from here.
logging.getLogger(f"{__name__}.{WarmOverflowPool.__name__}").setLevel(logging.WARNING)


async def close_idle_overflow(engines: Sequence[AsyncEngine]) -> None:
    """Until cancelled: every HOUSEKEEPING_SECONDS, close each pool's idle surplus, so the
    overflow a burst opened is let go even when no request comes back to return it."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        for engine in engines:
            pool = engine.sync_engine.pool  # looked up each time: dispose() replaces it
            if not isinstance(pool, WarmOverflowPool) or not pool.has_idle_surplus():
                continue
            try:
                await greenlets.call(pool.close_idle_surplus)
            except Exception:  # the next round tries again; the task must outlive a failure
                log.exception("closing idle overflow connections failed", pool=pool.status())
