"""Read replicas: which of a store's standbys may serve a read, and how far behind each is.

A `ReplicaSet` is one primary database's standbys (`[<MARKET>_][<ROLE>_]REPLICA_URL`).
Every CHECK_SECONDS `watch` samples the primary's WAL position (`pg_current_wal_lsn()`)
and each standby's replay position (`pg_last_wal_replay_lsn()`). A standby's lag is how
long ago the primary was first seen past what the standby has replayed — 0 once it has
replayed the newest sample — so an idle primary never makes a caught-up standby look
late, and no clock but this process's is read. Measured at a check, the bound grows with
the time since: a standby serves reads only while `lag + time since its check` stays
within REPLICA_MAX_LAG, so a stalled check stops its reads too. A standby that fails a
check (or a connect, `failed`), or is not in recovery at all (a URL that names some other
server), is down until a check succeeds again.

`choose(need)` is the one place a read's source is decided (`context.Reads.source`):
a standby that is fresh enough and has replayed past `need` — the caller's last write,
see `read_your_writes` — taken in turn; None means the primary.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

# How often the primaries and their standbys are sampled. A standby's lag is known to this
# resolution, and a write is looked for on the primary for REPLICA_MAX_LAG plus two of it.
CHECK_SECONDS = 1.0
# The primary's WAL positions kept (one per check that saw it move): a standby behind the
# oldest is at least that late, already far past any sensible REPLICA_MAX_LAG.
SAMPLES_KEPT = 600

PRIMARY = "primary"  # the server name a read of the primary is counted under

ReplicaState = Literal["unknown", "ok", "lagging", "down"]

_PRIMARY_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_STANDBY_POSITION = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"


def replica_name(url: URL) -> str:
    """How health and metrics name a standby: host:port/database, never its credentials."""
    host = url.host or (url.query.get("host") or "local")
    return f"{host}:{url.port or 5432}/{url.database}"


@dataclass(eq=False)
class Replica:
    """One standby and what the last check saw of it."""

    name: str
    engine: AsyncEngine
    state: ReplicaState = "unknown"
    lag: float | None = None  # seconds, at the last successful check
    replayed: int = 0  # its replay position (a WAL byte offset) at that check
    checked_at: float | None = None  # monotonic time of that check
    error: str | None = None  # why it is down

    def status(self, max_lag: float, now: float) -> ReplicaState:
        """ok only while fresh enough to be read: a check overdue counts as lag."""
        if self.fresh_enough(max_lag, now):
            return "ok"
        return "lagging" if self.state == "ok" else self.state

    def fresh_enough(self, max_lag: float, now: float) -> bool:
        """Its lag now is at most `max_lag`, taking the time since its check as lag too."""
        return (
            self.state == "ok"
            and self.lag is not None
            and self.checked_at is not None
            and self.lag + (now - self.checked_at) <= max_lag
        )


@dataclass(eq=False)
class ReplicaSet:
    """A primary and its standbys; several stores on one database share one set."""

    name: str  # the primary's (`replica_name`): a write's position is kept under it
    primary: AsyncEngine
    replicas: list[Replica]
    max_lag: float
    timeout: float  # a check's bound on each server
    # Reads this process sent, by (store, server): the standby's name, or PRIMARY.
    reads: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (monotonic time, primary WAL position), one per check that saw the position move.
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def choose(self, need: int = 0) -> Replica | None:
        """A standby for a read by a caller whose last write is at WAL position `need`
        (0: none known), in turn among those that qualify; None: read the primary."""
        now = time.monotonic()
        ready = [
            r for r in self.replicas if r.replayed >= need and r.fresh_enough(self.max_lag, now)
        ]
        return ready[next(self._turn) % len(ready)] if ready else None

    def served(self, store: str, replica: Replica | None) -> None:
        """Count a read of `store` served by `replica` (None: the primary)."""
        self.reads[store, PRIMARY if replica is None else replica.name] += 1

    def failed(self, replica: Replica, exc: BaseException) -> None:
        """A read could not reach `replica`: no more reads go there until a check passes."""
        replica.state = "down"
        replica.error = _reason(exc)

    @property
    def degraded(self) -> bool:
        """Some standby is down or too far behind (reads it would take go elsewhere)."""
        now = time.monotonic()
        return any(not r.fresh_enough(self.max_lag, now) for r in self.replicas)

    def lag_of(self, replayed: int, now: float) -> float:
        """How long the standby that replayed up to `replayed` has been behind the primary."""
        for seen_at, position in self.samples:
            if position > replayed:
                return max(0.0, now - seen_at)
        return 0.0

    async def check(self) -> None:
        """Sample the primary, then every standby, each within `timeout`."""
        try:
            async with asyncio.timeout(self.timeout):
                position = await primary_position(self.primary)
        except Exception as exc:  # the standbys are still measured against what was seen
            log.debug("replica check: the primary did not answer", error=_reason(exc))
        else:
            if not self.samples or position > self.samples[-1][1]:
                self.samples.append((time.monotonic(), position))
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))

    async def _check(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                async with replica.engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    row: Any = (await conn.exec_driver_sql(_STANDBY_POSITION)).one()
            in_recovery, replayed = row
        except Exception as exc:
            if replica.state != "down":
                log.warning("replica down", replica=replica.name, error=_reason(exc))
            self.failed(replica, exc)
            return
        if not in_recovery or replayed is None:
            if replica.state != "down":
                log.warning("replica is not a standby", replica=replica.name)
            replica.state, replica.error = "down", "not a standby (pg_is_in_recovery() is false)"
            return
        now = time.monotonic()
        replica.replayed, replica.checked_at = int(replayed), now
        replica.lag = self.lag_of(replica.replayed, now)
        state: ReplicaState = "ok" if replica.lag <= self.max_lag else "lagging"
        if state != replica.state and replica.state != "unknown":
            log.info("replica " + state, replica=replica.name, lag=round(replica.lag, 3))
        replica.state, replica.error = state, None


async def primary_position(engine: AsyncEngine) -> int:
    """The primary's WAL position now: one statement in autocommit (no BEGIN/ROLLBACK)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return int((await conn.exec_driver_sql(_PRIMARY_POSITION)).scalar_one())


async def check_all(sets: Iterable[ReplicaSet]) -> None:
    await asyncio.gather(*(s.check() for s in sets))


async def watch(sets: list[ReplicaSet]) -> None:
    """Until cancelled: check every set each CHECK_SECONDS."""
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        try:
            await check_all(sets)
        except Exception:  # the next round tries again; the task must outlive a failure
            log.exception("checking the replicas failed")


def _reason(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
