"""Read-your-writes: after a caller writes to a store with replicas, their reads of it stay
on the primary until a standby has replayed past the write.

When a transaction commits on such a store (`Store.begin`), the primary's WAL position
(`pg_current_wal_lsn()`, read after the commit, so at or past it) is kept in the key-value
store for every subject of the request: the signed-in caller, and a user who signs in by it
(`acting_for`, called where tokens are issued, so a new account's first read finds it).
The key lives REPLICA_MAX_LAG plus two checks: by then every standby still read has
replayed the write (`replicas.ReplicaSet.choose`). Keys are per worker-shared kv, so a
write on one worker or host is honoured by the reads of every other.

The request's `WriteLog` travels in a context variable, set when the request's context is
made: writes deep in a resolver (or in `accounts`, which takes no context) are seen without
threading it through. A request without one (the CLI, the payment webhook) records nothing.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from marketgraph.auth.principal import Principal
from marketgraph.db.replicas import CHECK_SECONDS, primary_position
from marketgraph.errors import is_unavailable
from marketgraph.kv import KeyValueStore

if TYPE_CHECKING:
    from marketgraph.db.databases import Store

log = structlog.get_logger(__name__)


def position_key(primary: str, subject: str) -> str:
    return f"wrote:{primary}:{subject}"


def keep_seconds(max_lag: float) -> int:
    """How long a write's position is kept: past it, no standby that lags less than
    `max_lag` (measured every CHECK_SECONDS) can still miss the write."""
    return math.ceil(max_lag + 2 * CHECK_SECONDS)


@dataclass(eq=False)
class WriteLog:
    """One request's subjects and the positions of its commits on replicated stores."""

    kv: KeyValueStore
    keep: int  # seconds
    subjects: set[str] = field(default_factory=set)
    positions: dict[str, int] = field(default_factory=dict)  # by primary (`ReplicaSet.name`)

    async def committed(self, store: Store) -> None:
        """`store` committed a write of this request: keep the primary's position now."""
        assert store.replicas is not None
        name = store.replicas.name
        try:
            position = await primary_position(store.engine)
            self.positions[name] = max(position, self.positions.get(name, 0))
            await self._keep({name: self.positions[name]}, self.subjects)
        except Exception as exc:
            self._not_kept(exc)

    async def acting_for(self, subject: str) -> None:
        """`subject` (a user signing in) is a subject too, of writes made and to come."""
        if subject in self.subjects:
            return
        self.subjects.add(subject)
        try:
            await self._keep(self.positions, {subject})
        except Exception as exc:
            self._not_kept(exc)

    @staticmethod
    def _not_kept(exc: Exception) -> None:
        """The write committed: its request must not fail now (a retry would repeat it).
        With the key-value store down, reads go to the primary anyway (`Reads`)."""
        if not is_unavailable(exc):
            raise exc
        log.warning("a write's position was not kept", error=type(exc).__name__)

    async def _keep(self, positions: dict[str, int], subjects: set[str]) -> None:
        await asyncio.gather(
            *(
                self.kv.raise_to(position_key(primary, subject), position, self.keep)
                for primary, position in positions.items()
                for subject in subjects
            )
        )


current: ContextVar[WriteLog | None] = ContextVar("read_your_writes", default=None)


def begin_request(kv: KeyValueStore, max_lag: float, principal: Principal | None) -> None:
    """Start the current request's write log (its signed-in caller, if any, a subject)."""
    subject = subject_of(principal)
    current.set(WriteLog(kv, keep_seconds(max_lag), {subject} if subject else set()))


async def acting_for(subject: str) -> None:
    """The current request signs `subject` in: their reads see its writes at once."""
    writes = current.get()
    if writes is not None:
        await writes.acting_for(subject)


async def committed(store: Store) -> None:
    """`store` (which has replicas) committed a write of the current request, if any."""
    writes = current.get()
    if writes is not None:
        await writes.committed(store)


async def last_writes(
    kv: KeyValueStore, subject: str, primaries: tuple[str, ...]
) -> dict[str, int]:
    """The positions of `subject`'s recent writes on `primaries` (absent: none to wait for)."""
    values = await kv.get_many(*(position_key(primary, subject) for primary in primaries))
    return {p: int(value) for p, value in zip(primaries, values, strict=True) if value}


def user_subject(user_id: uuid.UUID) -> str:
    return f"user:{user_id}"


def subject_of(principal: Principal | None) -> str | None:
    """Whose writes a caller's reads must see: a user's, an API key's, none when anonymous."""
    if principal is None:
        return None
    if principal.user_id is not None:
        return user_subject(principal.user_id)
    return f"key:{principal.api_key_id}" if principal.api_key_id is not None else None
