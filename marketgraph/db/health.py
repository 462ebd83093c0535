"""Health probes of every store and the key-value store, their HTTP routes, and `check`'s table.

Three depths, each bounded per store by `HEALTH_TIMEOUT` and run concurrently across
stores, so one unreachable or hanging store never crashes or stalls an answer:

- `/health` (load balancers): one `SELECT` per store and a key-value ping.
- `/health/ready` (orchestrators): every store answers and sits at its branch's head.
- `/health/detailed` and `marketgraph check` (operators): pool numbers, operation tests
  in a rolled-back transaction, server facts and migration state of each store.

Answers name a failure by a short reason class (`timeout`, `ConnectionRefusedError`),
never by the exception's text, which may carry host names; URLs and passwords never
appear. The full exception goes to the log.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from sqlalchemy import column, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

import marketgraph
from marketgraph.db import replicas
from marketgraph.db.databases import Databases, Store, open_databases
from marketgraph.db.migrate import head_revision
from marketgraph.db.replicas import PRIMARY, ReplicaSet
from marketgraph.errors import describe_error
from marketgraph.kv import KeyValueStore, open_kv
from marketgraph.settings import Role, Settings

if TYPE_CHECKING:
    from rich.table import Table

log = structlog.get_logger(__name__)

SERVICE = "marketgraph"
Overall = Literal["healthy", "degraded", "unhealthy"]
StoreState = Literal["connected", "degraded", "unreachable"]
_NO_CACHE = {"Cache-Control": "no-store"}


class _Services(Protocol):
    """What the probes borrow from `marketgraph.app.Services` (db/ does not import the app)."""

    settings: Settings
    databases: Databases
    kv: KeyValueStore


@functools.cache
def _head(role: Role) -> str | None:
    # The head is fixed by the code this process runs: read the script directory once.
    return head_revision(role)


async def read_revision(conn: AsyncConnection, schema: str) -> str | None:
    """The revision a store is at, from the `alembic_version` table in its schema (None: base).

    The same table `migrate.current_revision` reads, in two plain statements: Alembic's
    own reader logs at INFO each time and inspects the catalogue, too much for a probe.
    """
    found = await conn.execute(
        text("SELECT to_regclass(format('%I.alembic_version', CAST(:schema AS text)))"),
        {"schema": schema},
    )
    if found.scalar_one() is None:
        return None
    version = table("alembic_version", column("version_num"), schema=schema)
    revisions = sorted((await conn.execute(select(version.c.version_num))).scalars())
    return ",".join(revisions) or None


def overall_status(stores_answering: list[bool], kv_answering: bool) -> Overall:
    """healthy: every store and kv answer; unhealthy: no store answers; degraded otherwise."""
    if not any(stores_answering):
        return "unhealthy"
    if all(stores_answering) and kv_answering:
        return "healthy"
    return "degraded"


# --- probes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """Whether one store or the key-value store answered, and how fast."""

    answered: bool
    error: str | None
    latency_ms: float


async def _bounded(name: str, work: Awaitable[Any], limit: float) -> Probe:
    """Run `work` for at most `limit` seconds; any failure becomes a Probe, never an exception."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            await work
    except Exception as exc:
        reason = describe_error(exc)
        log.warning("health probe failed", target=name, reason=reason, error=repr(exc))
        return Probe(False, reason, _ms_since(started))
    return Probe(True, None, _ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


async def _select_one(store: Store) -> None:
    async with store.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def probe_kv(kv: KeyValueStore, limit: float) -> Probe:
    """Whether the key-value store answers a ping within `limit` seconds."""
    return await _bounded("kv", kv.ping(), limit)


def _kv_json(kv: KeyValueStore, probe: Probe) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": "connected" if probe.answered else "unreachable",
        "backend": kv.backend,
    }
    if probe.error is not None:
        out["error"] = probe.error
    return out


async def liveness(services: _Services) -> tuple[Overall, dict[str, Any]]:
    """`/health`'s answer: one cheap statement per store and a key-value ping, concurrently."""
    stores = services.databases.stores
    timeout = services.settings.health_timeout
    *probes, kv_probe = await asyncio.gather(
        *(_bounded(str(s.key), _select_one(s), timeout) for s in stores),
        probe_kv(services.kv, timeout),
    )
    databases: dict[str, Any] = {}
    for store, probe in zip(stores, probes, strict=True):
        entry: dict[str, Any] = {
            "status": "connected" if probe.answered else "unreachable",
            "database_name": store.engine.url.database,
        }
        if probe.error is not None:
            entry["error"] = probe.error
        databases[str(store.key)] = entry
    status = overall_status([p.answered for p in probes], kv_probe.answered)
    return status, {
        "status": status,
        "service": SERVICE,
        "version": marketgraph.__version__,
        "databases": databases,
        "kv": _kv_json(services.kv, kv_probe),
    }


async def readiness(services: _Services) -> tuple[bool, dict[str, Any]]:
    """`/health/ready`'s answer: ready only when every store answers at its branch's head."""
    stores = services.databases.stores
    timeout = services.settings.health_timeout
    revisions: dict[str, str | None] = {}

    async def read(store: Store) -> None:
        async with store.connect() as conn:
            revisions[str(store.key)] = await read_revision(conn, store.schema)

    probes = await asyncio.gather(*(_bounded(str(s.key), read(s), timeout) for s in stores))
    entries: dict[str, Any] = {}
    reasons: list[str] = []
    for store, probe in zip(stores, probes, strict=True):
        key, head = str(store.key), _head(store.key.role)
        entry: dict[str, Any] = {"status": "connected" if probe.answered else "unreachable"}
        if probe.answered:
            current = revisions[key]
            entry["migration"] = {"current": current, "head": head}
            if current != head:
                reasons.append(f"{key}: at migration {current or 'base'}, head is {head}")
        else:
            entry["error"] = probe.error
            reasons.append(f"{key}: unreachable ({probe.error})")
        entries[key] = entry
    ready = not reasons
    return ready, {
        "status": "ready" if ready else "not_ready",
        "stores": entries,
        "reasons": reasons,
    }


# --- the detailed inspection --------------------------------------------------------------------


@dataclass(slots=True)
class OperationTests:
    """What a store was seen to do; each stays False unless it succeeded."""

    connection: bool = False
    read: bool = False
    write: bool = False
    transaction: bool = False

    def all_passed(self) -> bool:
        return self.connection and self.read and self.write and self.transaction


@dataclass(frozen=True, slots=True)
class PoolReport:
    """One engine's pool; stores sharing a database share it (and so the same `id`)."""

    id: str
    shared_by: tuple[str, ...]
    pool_size: int
    checked_in: int
    checked_out: int
    overflow: int  # connections open beyond pool_size
    total: int  # connections open: checked in + checked out

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shared_by": list(self.shared_by),
            "pool_size": self.pool_size,
            "checked_in": self.checked_in,
            "checked_out": self.checked_out,
            "overflow": self.overflow,
            "total": self.total,
        }


@dataclass(slots=True)
class StoreReport:
    """Everything `/health/detailed` and `marketgraph check` say about one store."""

    key: str
    schema: str
    database_name: str | None
    migration_head: str | None
    pool: PoolReport
    tests: OperationTests = field(default_factory=OperationTests)
    server_version: str | None = None
    active_connections: int | None = None
    migration_current: str | None = None
    error: str | None = None
    latency_ms: float = 0.0
    replicas: ReplicaSet | None = None

    @property
    def status(self) -> StoreState:
        """connected: every operation test passed; degraded: it answered but something failed."""
        if not self.tests.connection:
            return "unreachable"
        return "connected" if self.tests.all_passed() else "degraded"

    @property
    def at_head(self) -> bool:
        return self.tests.read and self.migration_current == self.migration_head

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "latency_ms": self.latency_ms,
            "pool_status": self.pool.as_json(),
            "operation_tests": {
                "connection": self.tests.connection,
                "read": self.tests.read,
                "write": self.tests.write,
                "transaction": self.tests.transaction,
            },
            "database_info": {
                "version": self.server_version,
                "database_name": self.database_name,
                "schema": self.schema,
                "active_connections": self.active_connections,
            },
            "migration": {"current": self.migration_current, "head": self.migration_head},
        }
        if self.error is not None:
            out["error"] = self.error
        if self.replicas is not None:
            out["replicas"] = replicas_json(self.key, self.replicas)
        return out


def replicas_json(store: str, replicas: ReplicaSet) -> dict[str, Any]:
    """A store's standbys as their last check saw them, and the share of the store's reads
    each served in this process (the primary's share beside them)."""
    now = time.monotonic()
    reads = {server: n for (name, server), n in replicas.reads.items() if name == store}
    total = sum(reads.values())

    def share(server: str) -> float | None:
        return round(reads.get(server, 0) / total, 4) if total else None

    return {
        "max_lag_seconds": replicas.max_lag,
        "primary_reads": reads.get(PRIMARY, 0),
        "primary_reads_share": share(PRIMARY),
        "standbys": [
            {
                "name": r.name,
                "status": r.status(replicas.max_lag, now),
                "lag_seconds": None if r.lag is None else round(r.lag, 3),
                "replayed_lsn": r.replayed,
                "reads": reads.get(r.name, 0),
                "reads_share": share(r.name),
                **({"error": r.error} if r.error else {}),
            }
            for r in replicas.replicas
        ],
    }


@dataclass(frozen=True, slots=True)
class DetailedReport:
    """The inspection of every store and the key-value store at one moment."""

    timestamp: datetime
    stores: list[StoreReport]
    kv_backend: str
    kv: Probe

    @property
    def overall_status(self) -> Overall:
        """As `/health`'s rule, and a store that answers but fails a test makes it degraded."""
        status = overall_status([s.tests.connection for s in self.stores], self.kv.answered)
        if status == "healthy" and any(
            s.status == "degraded" or (s.replicas is not None and s.replicas.degraded)
            for s in self.stores
        ):
            return "degraded"
        return status

    def as_json(self) -> dict[str, Any]:
        kv: dict[str, Any] = {
            "status": "connected" if self.kv.answered else "unreachable",
            "backend": self.kv_backend,
        }
        if self.kv.error is not None:
            kv["error"] = self.kv.error
        return {
            "overall_status": self.overall_status,
            "timestamp": self.timestamp.isoformat(),
            "service": SERVICE,
            "version": marketgraph.__version__,
            "stores": {s.key: s.as_json() for s in self.stores},
            "kv": kv,
        }


async def _operation_tests(store: Store, report: StoreReport) -> None:
    """Fill `report` step by step, so a timeout or failure still shows what did work.

    The write and transaction tests touch only a temporary table created inside a
    transaction that is always rolled back: the store's own tables are never written.
    """
    async with store.connect() as conn:
        await conn.execute(text("SELECT 1"))
        report.tests.connection = True
        row = (
            await conn.execute(
                text(
                    "SELECT current_setting('server_version'), current_database(), "
                    "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())"
                )
            )
        ).one()
        report.server_version, report.database_name, report.active_connections = (
            row[0],
            row[1],
            int(row[2]),
        )
        report.migration_current = await read_revision(conn, store.schema)
        report.tests.read = True
        await conn.rollback()  # end the implicit read transaction before an explicit one

        transaction = await conn.begin()
        try:
            await conn.execute(
                text("CREATE TEMPORARY TABLE mg_health_probe (n integer) ON COMMIT DROP")
            )
            await conn.execute(text("INSERT INTO mg_health_probe (n) VALUES (1)"))
            report.tests.write = await _probe_rows(conn) == [1]
            savepoint = await conn.begin_nested()
            await conn.execute(text("INSERT INTO mg_health_probe (n) VALUES (2)"))
            await savepoint.rollback()
            report.tests.transaction = await _probe_rows(conn) == [1]
        finally:
            await transaction.rollback()


async def _probe_rows(conn: AsyncConnection) -> list[int]:
    result = await conn.execute(text("SELECT n FROM mg_health_probe ORDER BY n"))
    return list(result.scalars())


def _pool_reports(databases: Databases) -> dict[int, PoolReport]:
    """Each engine's pool numbers, keyed by the engine's identity, labelled in store order."""
    engines: dict[int, tuple[AsyncEngine, list[str]]] = {}
    for store in databases.stores:
        engines.setdefault(id(store.engine), (store.engine, []))[1].append(str(store.key))
    reports = {}
    for number, (engine_id, (engine, keys)) in enumerate(engines.items(), start=1):
        pool = engine.pool
        if isinstance(pool, QueuePool):
            size, checked_in, checked_out = pool.size(), pool.checkedin(), pool.checkedout()
            # QueuePool counts overflow from -pool_size; report only connections beyond it.
            overflow = max(pool.overflow(), 0)
        else:
            size = checked_in = checked_out = overflow = 0
        reports[engine_id] = PoolReport(
            id=f"engine-{number}",
            shared_by=tuple(keys),
            pool_size=size,
            checked_in=checked_in,
            checked_out=checked_out,
            overflow=overflow,
            total=checked_in + checked_out,
        )
    return reports


async def inspect(databases: Databases, kv: KeyValueStore, limit: float) -> DetailedReport:
    """Inspect every store and the key-value store concurrently, each within `limit` seconds."""
    stores = databases.stores
    reports = [
        StoreReport(
            key=str(store.key),
            schema=store.schema,
            database_name=store.engine.url.database,
            migration_head=_head(store.key.role),
            # Replaced below, once the probes have returned their connections.
            pool=PoolReport("", (), 0, 0, 0, 0, 0),
            replicas=store.replicas,
        )
        for store in stores
    ]
    # The standbys checked meanwhile (each server within HEALTH_TIMEOUT), so the report is now.
    checking = asyncio.ensure_future(replicas.check_all(databases.replica_sets))
    *probes, kv_probe = await asyncio.gather(
        *(
            _bounded(report.key, _operation_tests(store, report), limit)
            for store, report in zip(stores, reports, strict=True)
        ),
        probe_kv(kv, limit),
    )
    await checking
    pools = _pool_reports(databases)
    for store, report, probe in zip(stores, reports, probes, strict=True):
        report.error, report.latency_ms = probe.error, probe.latency_ms
        report.pool = pools[id(store.engine)]
    return DetailedReport(datetime.now(UTC), reports, kv.backend, kv_probe)


# --- `marketgraph check` ----------------------------------------------------------------------


async def check(settings: Settings) -> DetailedReport:
    """Open every store (starting the embedded server when configured), inspect, close."""
    databases = await open_databases(settings)
    kv = open_kv(settings.redis_url, settings.redis_timeout)
    try:
        return await inspect(databases, kv, settings.health_timeout)
    finally:
        await kv.close()
        await databases.dispose()


_STATUS_STYLE = {"connected": "green", "degraded": "yellow", "unreachable": "red"}


def check_table(report: DetailedReport) -> Table:
    """The report as a terminal table, one row per store and one for the key-value store."""
    from rich.markup import escape  # the server itself never draws tables
    from rich.table import Table

    grid = Table(title=f"marketgraph {marketgraph.__version__}: {report.overall_status}")
    for heading in ("store", "status", "database", "schema", "server", "migration", "latency"):
        grid.add_column(heading, justify="right" if heading == "latency" else "left")
    grid.add_column("pool")
    for store in report.stores:
        style = _STATUS_STYLE[store.status]
        status = store.status if store.error is None else f"{store.status} ({store.error})"
        if not store.tests.read:
            migration = f"? / {store.migration_head}"
        else:
            current = store.migration_current or "base"
            mark = "" if store.at_head else " [yellow](behind)[/]"
            migration = f"{current} / {store.migration_head}{mark}"
        grid.add_row(
            store.key,
            f"[{style}]{status}[/]",
            escape(store.database_name or ""),
            store.schema,
            escape(store.server_version or ""),
            migration,
            f"{store.latency_ms:.0f} ms",
            f"{store.pool.id} ({store.pool.checked_out}/{store.pool.total} in use)",
        )
        if store.replicas is not None:
            for standby in replicas_json(store.key, store.replicas)["standbys"]:
                state = standby["status"]
                lag = standby["lag_seconds"]
                detail = standby.get("error") or (f"lag {lag} s" if lag is not None else "")
                colour = {"ok": "green", "lagging": "yellow"}.get(state, "red")
                grid.add_row(
                    "  standby",
                    f"[{colour}]{state}[/] ({escape(detail)})",
                    escape(standby["name"]),
                    "",
                    "",
                    "",
                    "",
                    "",
                )
    kv_status = "connected" if report.kv.answered else "unreachable"
    if report.kv.error is not None:
        kv_status += f" ({report.kv.error})"
    style = "green" if report.kv.answered else "red"
    grid.add_row(
        "kv",
        f"[{style}]{kv_status}[/]",
        report.kv_backend,
        "",
        "",
        "",
        f"{report.kv.latency_ms:.0f} ms",
        "",
    )
    return grid
