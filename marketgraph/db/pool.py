"""The engines' pool: SQLAlchemy's asyncio QueuePool, with overflow connections kept warm.

SQLAlchemy closes an overflow connection as soon as it comes back while `pool_size`
others sit idle. Under a steady load a little above DB_POOL_SIZE that happens on almost
every request, and each next request opens a new PostgreSQL session (a process fork and
authentication, milliseconds): the benchmark's 16 connections against the default pool
of 10 opened 1,393 sessions in 10 seconds and tripled p99. Here a returned overflow
connection waits in the pool like the others; once the pool has not needed more than
DB_POOL_SIZE connections for OVERFLOW_IDLE_SECONDS, the surplus is closed as connections
come back. DB_POOL_SIZE stays what is kept for good, DB_MAX_OVERFLOW the most opened on
top of it; connections are handed out newest first, so the surplus is the idle one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

# How long the pool must have stayed within DB_POOL_SIZE before it closes its surplus.
OVERFLOW_IDLE_SECONDS = 30.0


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

    def checkedout(self) -> int:
        return self._size + self._overflow - self._pool.qsize()

    def _do_get(self) -> ConnectionPoolEntry:
        entry = super()._do_get()
        if self.checkedout() > self._size:
            self._busy_at = time.monotonic()
        return entry

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        if (
            self._overflow > 0
            and self._pool.qsize() > self._size
            and time.monotonic() - self._busy_at > OVERFLOW_IDLE_SECONDS
        ):
            surplus = self._pool.get(False)
            try:
                surplus.close()
            finally:
                self._dec_overflow()

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
