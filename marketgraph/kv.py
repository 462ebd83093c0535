"""The key-value store: one small interface, a Redis and an in-process implementation.

It holds short-lived shared state: login codes, rate-limit counters, revoked
token ids, persisted documents. Values are strings; every key may expire.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketgraph.breaker import Breaker
from marketgraph.errors import ServiceUnavailableError

T = TypeVar("T")

# Connections one worker keeps to Redis at most; more concurrent calls wait their turn.
REDIS_CONNECTIONS = 100


class KeyValueStore(Protocol):
    """What the server needs of a key-value store; both implementations pass one test suite."""

    backend: str

    async def get(self, key: str) -> str | None: ...

    async def get_many(self, *keys: str) -> list[str | None]:
        """The values of `keys`, in order (one round trip)."""

    async def set(
        self, key: str, value: str, ttl: float | None = None, *, only_if_absent: bool = False
    ) -> bool:
        """Store `value`; with `only_if_absent`, only when no live value exists. True if stored."""

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Add `amount` and return the count; the first increment starts a `ttl`-second
        window."""

    async def raise_to(self, key: str, value: int, ttl: float) -> None:
        """Keep the larger of `value` and the stored number, for `ttl` seconds from now
        (atomic: of two concurrent calls, the larger value stays)."""

    async def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires; None when it is missing or never expires."""

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with `prefix`; return how many."""

    async def ping(self) -> None:
        """Raise when the store cannot be reached."""

    async def close(self) -> None: ...


class MemoryStore:
    """In-process store: for the embedded default and tests; one worker only."""

    backend = "memory"

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}

    def _live(self, key: str) -> tuple[str, float] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] <= time.monotonic():
            del self._data[key]
            return None
        return entry

    async def get(self, key: str) -> str | None:
        entry = self._live(key)
        return entry[0] if entry else None

    async def get_many(self, *keys: str) -> list[str | None]:
        return [await self.get(key) for key in keys]

    async def set(
        self, key: str, value: str, ttl: float | None = None, *, only_if_absent: bool = False
    ) -> bool:
        if only_if_absent and self._live(key) is not None:
            return False
        expires = time.monotonic() + ttl if ttl is not None else math.inf
        self._data[key] = (value, expires)
        return True

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        entry = self._live(key)
        if entry is None:
            self._data[key] = (str(amount), time.monotonic() + ttl)
            return amount
        count = int(entry[0]) + amount
        # As Redis's PEXPIRE NX: a key without an expiry gets one; a running window keeps its own.
        expires = entry[1] if entry[1] != math.inf else time.monotonic() + ttl
        self._data[key] = (str(count), expires)
        return count

    async def raise_to(self, key: str, value: int, ttl: float) -> None:
        entry = self._live(key)
        kept = max(value, int(entry[0])) if entry is not None else value
        self._data[key] = (str(kept), time.monotonic() + ttl)

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None or entry[1] == math.inf:
            return None
        return max(entry[1] - time.monotonic(), 0.0)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            del self._data[key]
        return len(doomed)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()


class RedisStore:
    """Redis (redis-py asyncio): shared by every worker and host; keys carry a prefix.

    Every call is bounded by `timeout` (connecting included) and retried once only when a
    pooled connection turns out closed; a Redis that refuses, freezes or errs makes the
    call raise `SERVICE_UNAVAILABLE`, and for a moment after a connection failure calls
    fail at once (`Breaker`) rather than each waiting out the timeout.
    """

    backend = "redis"

    def __init__(self, url: str, prefix: str = "mg:", timeout: float = 1.0) -> None:
        # A blocking pool: past its connections a call waits (within `timeout`) for one to
        # come back; redis-py's default pool fails the call at once ("Too many connections")
        # as soon as 100 are out, which a busy worker reaches.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_CONNECTIONS,
            timeout=timeout,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._redis: Redis = Redis.from_pool(pool)  # owns it: closed with the client
        self._prefix = prefix
        self._breaker = Breaker("The key-value store")
        self._raise_to = self._redis.register_script(_RAISE_TO)

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        self._breaker.before()
        try:
            result = await operation()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._breaker.failed(exc)
            raise ServiceUnavailableError(
                "The key-value store is unavailable; try again shortly"
            ) from exc
        except RedisError as exc:  # out of memory, a read-only replica, ...
            raise ServiceUnavailableError(
                "The key-value store is unavailable; try again shortly"
            ) from exc
        self._breaker.succeeded()
        return result

    async def get(self, key: str) -> str | None:
        value = await self._call(lambda: self._redis.get(self._prefix + key))
        return None if value is None else str(value)

    async def get_many(self, *keys: str) -> list[str | None]:
        values = await self._call(lambda: self._redis.mget([self._prefix + key for key in keys]))
        return [None if value is None else str(value) for value in values]

    async def set(
        self, key: str, value: str, ttl: float | None = None, *, only_if_absent: bool = False
    ) -> bool:
        px = math.ceil(ttl * 1000) if ttl is not None else None
        stored = await self._call(
            lambda: self._redis.set(self._prefix + key, value, px=px, nx=only_if_absent)
        )
        return bool(stored)

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        full = self._prefix + key

        async def incr_with_expiry() -> Any:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrby(full, amount)
                # NX: only the first increment of a window sets its expiry.
                pipe.pexpire(full, math.ceil(ttl * 1000), nx=True)
                return await pipe.execute()

        count, _ = await self._call(incr_with_expiry)
        return int(count)

    async def raise_to(self, key: str, value: int, ttl: float) -> None:
        await self._call(
            lambda: self._raise_to(keys=[self._prefix + key], args=[value, math.ceil(ttl * 1000)])
        )

    async def ttl(self, key: str) -> float | None:
        ms = await self._call(lambda: self._redis.pttl(self._prefix + key))
        return ms / 1000 if ms is not None and ms >= 0 else None

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._redis.delete(self._prefix + key))

    async def delete_prefix(self, prefix: str) -> int:
        return await self._call(lambda: self._delete_prefix(prefix))

    async def _delete_prefix(self, prefix: str) -> int:
        deleted = 0
        batch: list[str] = []
        async for key in self._redis.scan_iter(
            match=_glob_escape(self._prefix + prefix) + "*", count=500
        ):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await self._redis.delete(*batch)
                batch.clear()
        if batch:
            deleted += await self._redis.delete(*batch)
        return deleted

    async def ping(self) -> None:
        await self._call(self._redis.ping)

    async def close(self) -> None:
        await self._redis.aclose()


# Numbers compared in Lua are doubles: exact below 2^53, far past any WAL position.
_RAISE_TO = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
local value = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', math.max(stored, value)), 'PX', ARGV[2])
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def open_kv(redis_url: str | None, timeout: float = 1.0, prefix: str = "mg:") -> KeyValueStore:
    """Redis when `REDIS_URL` is set, else the in-process store."""
    return RedisStore(redis_url, prefix, timeout) if redis_url else MemoryStore()
