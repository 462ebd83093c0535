"""Moving stores between placements: the plan, the copy and the verification behind
`marketgraph db move`.

A store is a schema named `<market>_<role>`; a placement is the database each store's schema
lives in, decided by the database URL variables. Moving a store copies its rows from its
current database (the configuration the server runs on now) to the database the target
variables name, into a schema migrated to head first, so the tables are identical.

**Writes must stop.** The copy is a snapshot, not a replication: a row written to a source
table after that table was copied is not in the target. So writes to the moved stores stop
from the start of the copy until the server runs on the new placement; reads may go on. The
verification recomputes every table on the source at its end, so a write that slipped through
shows up there as a mismatch instead of as lost data.

**How rows travel.** Tables go in foreign-key order (`MetaData.sorted_tables`), each in
primary-key order, in batches of a primary-key range: the source decides each range's upper
key (`ORDER BY key OFFSET n-1 LIMIT 1`), so only the source's ordering of keys matters, then
streams the range with `COPY (SELECT ...) TO STDOUT` straight into `COPY ... FROM STDIN` on
the target (text format, as pg_dump uses, portable across server versions; a bounded queue
in between, so no table is held in memory). The whole store is read in one `REPEATABLE READ
READ ONLY` transaction: one snapshot, so parents and children agree. A column that refers to
its own table (a refresh token's `replaced_by` names a later token) is copied as NULL and
filled in by a second pass once all of its table's rows are in, since a batch may name a row
of a later batch. Sequences (order numbers) are set to the source's value at the end.
`alembic_version` is not copied: the migration wrote it.

**Progress is recorded in the target**, where a resumed run must look: schema
`marketgraph_move` of each target database holds `moves` (one row per store: where it comes
from, when the copy started, ended and was verified) and `progress` (per store, table and
pass: the last key copied, rows copied, done). A batch's rows and its progress row commit in
one target transaction, so an interrupted move resumes after the last committed batch. The
record stays after the move (an audit trail; `DROP SCHEMA marketgraph_move CASCADE` removes
it); it keeps the target "not empty" for a later move without `--resume`.

**Verification** computes, on source and target, each table's row count and a checksum: the
sum, as numeric, of the first 64 bits of the MD5 of each row's text (`ROW(columns)::text`,
columns in the models' order, with the session's output settings pinned). A sum does not
depend on row order, so PostgreSQL computes it in one streaming pass with constant memory (an
ordered `string_agg` would build the whole table as one value, which fails past 1 GB); MD5
is the same on every server version, unlike the internal `hashtext`. It detects lost,
extra or changed rows — not an adversary forging collisions, which a copy has not to fear.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from sqlalchemy import Column, Table
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine import URL

from marketgraph.db import migrate
from marketgraph.db.create import StoreProblem, create_databases, explain, plain_url
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.models import metadata_for
from marketgraph.db.topology import StoreKey, StoreLocation, Topology
from marketgraph.settings import (
    DATABASE_URL_SUFFIX,
    ROLES,
    ConfigError,
    database_url_variables,
    parse_database_url,
)

PROGRESS_SCHEMA = "marketgraph_move"
DEFAULT_BATCH_ROWS = 10_000
CONNECT_TIMEOUT = 10.0
# Chunks of COPY data in flight between source and target (asyncpg's are about 64 KiB).
PIPE_CHUNKS = 16

# Every connection of a move talks in the same terms, so row texts (and so checksums) agree
# between servers whatever their defaults, and nothing times out a long COPY.
SESSION_SETTINGS = {
    "statement_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "search_path": "pg_catalog",
}

WRITE_POLICY = (
    "Writes to the moved stores must stop before the copy starts and stay stopped until the "
    "server runs on the new placement: the copy is a snapshot, not a replication, so a row "
    "written meanwhile would be missing from the target (the verification would report it). "
    "Reads may go on: a read-only window."
)

_VARIABLE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")

# The two passes a table's copy can take; `links` only for tables that refer to themselves.
ROWS, LINKS = "rows", "links"


class MoveError(Exception):
    """A move that cannot or must not go on; the message says why and what to do."""


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreMove:
    """One store's move: where it is, where it goes (the same schema, another database)."""

    source: StoreLocation
    target: StoreLocation

    @property
    def key(self) -> StoreKey:
        return self.source.key

    @property
    def tables(self) -> list[Table]:
        """The store's tables, parents before children."""
        return list(metadata_for(self.key.role).sorted_tables)


def place_of(url: URL) -> str:
    """Where a URL's data lives — server and database, without user, password or driver — so
    two URLs that differ only in those name the same place."""
    host = url.host or _query_value(url, "host") or ""
    port = url.port or int(_query_value(url, "port") or 5432)
    return f"{host.lower() if url.host else host}:{port}/{url.database}"


def _query_value(url: URL, name: str) -> str | None:
    value = url.query.get(name)
    if isinstance(value, tuple):
        return value[0] if value else None
    return value


def store_variables(market_codes: Iterable[str]) -> set[str]:
    """Every variable that can place a store of these markets."""
    return {
        name
        for code in market_codes
        for role in ROLES
        for name in database_url_variables(code, role)
    }


def parse_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """`NAME=URL` pairs (as `--to` takes them) as a dict; a `ConfigError` names a malformed
    one by its name only, since its value may carry a password."""
    variables: dict[str, str] = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        name = name.strip().upper()
        if not equals or not _VARIABLE_NAME.fullmatch(name) or not value.strip():
            # Echo the name only if it is one: "postgresql://user:password@..." is not.
            shown = f" {name}" if _VARIABLE_NAME.fullmatch(name) else ""
            raise ConfigError(
                f"--to{shown}: expected NAME=URL, e.g. KG_AUTH_DATABASE_URL=postgresql://..."
            )
        variables[name] = value.strip()
    return variables


def read_env_file(path: Path) -> dict[str, str]:
    """The database variables of an environment file (`NAME=VALUE` lines; blank lines,
    `# comments`, `export ` and quotes around a value allowed; `NAME_FILE=path` reads NAME
    from that file, as the server does). Other variables are the server's and ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--to-env: cannot read {path}: {exc.strerror}") from exc
    variables: dict[str, str] = {}
    files: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.removeprefix("export ").partition("=")
        name = name.strip().upper()
        if not equals or not name:
            raise ConfigError(f"--to-env {path}, line {number}: expected NAME=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name.endswith(DATABASE_URL_SUFFIX) and value:
            variables[name] = value
        elif name.endswith(DATABASE_URL_SUFFIX + "_FILE") and value:
            files[name.removesuffix("_FILE")] = value
    for name, file in files.items():
        if name not in variables:  # NAME itself wins, as in the server's settings
            try:
                variables[name] = Path(file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{name}_FILE: cannot read {file}: {exc.strerror}") from exc
    return variables


def target_topology(
    source: Topology, market_codes: Sequence[str], variables: Mapping[str, str]
) -> Topology:
    """Where each store goes: the target variables, resolved by the server's own rule (the
    most specific wins); a store they do not place stays where it is.

    Variables that place no store are refused (a misspelt name would silently move nothing).
    """
    unknown = sorted(set(variables) - store_variables(market_codes))
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)}: not a variable that places a store "
            f"(<MARKET>_<ROLE>_DATABASE_URL, <MARKET>_DATABASE_URL, <ROLE>_DATABASE_URL, "
            f"DATABASE_URL; markets: {', '.join(market_codes)})"
        )
    try:
        resolved = Topology.resolve(tuple(market_codes), variables, lambda key: source[key].url)
    except ValueError as exc:  # parse_database_url's message names the variable, not the URL
        raise ConfigError(str(exc)) from None
    # Topology.resolve labels a store no variable placed "embedded": here it stays put.
    return Topology([loc if loc.source != "embedded" else source[loc.key] for loc in resolved])


def plan_moves(source: Topology, target: Topology, stores: Sequence[str] = ()) -> list[StoreMove]:
    """The stores to move: those named (`kg.auth`), or every store whose database changes. A
    store whose target is where it is already has nothing to move."""
    changing = {
        loc.key: StoreMove(loc, target[loc.key])
        for loc in source
        if place_of(loc.url) != place_of(target[loc.key].url)
    }
    if not stores:
        return list(changing.values())
    known = {str(loc.key): loc.key for loc in source}
    chosen: list[StoreMove] = []
    for name in stores:
        key = known.get(name.strip().lower())
        if key is None:
            raise ConfigError(f"--store {name!r}: not a store; stores: {', '.join(known)}")
        if key not in changing:
            raise ConfigError(
                f"--store {key}: its target is where it is ({plain_url(source[key].url)}); "
                "nothing to move"
            )
        if changing[key] not in chosen:
            chosen.append(changing[key])
    return sorted(chosen, key=lambda move: source.keys().index(move.key))


def switch_notes(
    current: Mapping[str, str], target: Mapping[str, str], moves: Sequence[StoreMove]
) -> list[str]:
    """What to watch when switching the server's variables: a current variable that would
    still win over the target's for a moved store if both were set."""
    if not current:
        return []
    merged = {**current, **target}
    notes = []
    for move in moves:
        for name in database_url_variables(move.key.market, move.key.role):
            if name in merged:  # the variable that would win with both sets of variables set
                url = parse_database_url(name, merged[name])
                if place_of(url) != place_of(move.target.url):
                    notes.append(
                        f"{move.key}: {name} (set now) would still place it at "
                        f"{plain_url(url)}; unset it when you set {move.target.source}"
                    )
                break
    return notes


# --- what the source and target hold ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """One recorded pass over one table: how far the copy got."""

    table: str
    phase: str
    last_key: str | None
    rows: int
    done: bool


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """A store's move as recorded in its target."""

    source: str
    started_at: dt.datetime
    copied_at: dt.datetime | None
    verified_at: dt.datetime | None
    progress: tuple[Progress, ...]

    def tables_done(self) -> int:
        return sum(1 for p in self.progress if p.phase == ROWS and p.done)


@dataclass(frozen=True, slots=True)
class TargetState:
    """What a target store's database holds now."""

    problem: str | None = None  # it cannot be reached (one line)
    database_exists: bool = False
    schema_exists: bool = False
    revision: str | None = None
    tables_with_rows: tuple[str, ...] = ()
    record: MoveRecord | None = None
    # Tables whose rows do not end at the key the record says: written to since.
    off_record: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StorePlan:
    """One store's move as it would go now: the verdict before anything is changed."""

    move: StoreMove
    source_rows: Mapping[str, int]  # table -> rows (empty unless counted)
    target: TargetState
    problem: str | None  # why it is refused; None: it can go
    action: str  # what it would do to the target


def _where(location: StoreLocation) -> str:
    return f"{plain_url(location.url)} schema {location.schema} ({location.source})"


async def inspect_moves(
    moves: Sequence[StoreMove], *, resume: bool, count_rows: bool = False
) -> list[StorePlan]:
    """Each move's verdict, reading source and target and changing nothing."""
    plans = []
    for move in moves:
        source_rows: dict[str, int] = {}
        source_problem: str | None = None
        try:
            revision, source_rows = await _inspect_source(move, count_rows)
            head = migrate.head_revision(move.key.role)
            if revision != head:
                source_problem = (
                    f"{move.key}: the source is at revision {revision or '(none)'}, the code's "
                    f"head is {head}; run `marketgraph db upgrade` first, so both sides have "
                    "the same tables"
                )
        except MoveError as exc:
            source_problem = str(exc)
        target = await _inspect_target(move)
        problem, action = _verdict(move, target, resume)
        plans.append(StorePlan(move, source_rows, target, source_problem or problem, action))
    return plans


def _verdict(move: StoreMove, target: TargetState, resume: bool) -> tuple[str | None, str]:
    """Whether the target may receive the move (a reason if not), and what would be done."""
    key, where = move.key, _where(move.target)
    if target.problem is not None:
        return target.problem, "none"
    record = target.record
    if record is not None and record.source != place_of(move.source.url):
        return (
            f"{key}: {where} holds a move recorded from {record.source}, not from "
            f"{place_of(move.source.url)}; empty the target and drop its schema "
            f"{PROGRESS_SCHEMA} first",
            "none",
        )
    prepare = []
    if not target.database_exists:
        prepare.append(f"create database {move.target.url.database}")
    if target.revision != migrate.head_revision(move.key.role):
        prepare.append("migrate to head")
    if not resume:
        if target.tables_with_rows or record is not None:
            held = ", ".join(target.tables_with_rows) or "no rows yet"
            forget = f"DELETE FROM {PROGRESS_SCHEMA}.moves WHERE store = '{key}'"  # noqa: S608 - printed advice
            return (
                f"{key}: {where} is not empty ({held}; a move recorded: "
                f"{'yes' if record else 'no'}); pass --resume to continue a move recorded "
                f"there, or empty the target (its tables, and its record: {forget})",
                "none",
            )
        return None, "; ".join([*prepare, "copy every table"])
    if record is None:
        if target.tables_with_rows:
            return (
                f"{key}: {where} holds rows ({', '.join(target.tables_with_rows)}) that no "
                "move recorded; --resume continues only a move recorded in the target",
                "none",
            )
        return None, "; ".join([*prepare, "nothing recorded: copy every table"])
    if target.off_record:
        return (
            f"{key}: {where}: the rows of {', '.join(target.off_record)} do not end where the "
            "recorded progress says (written to since?); empty the target and move again",
            "none",
        )
    if record.copied_at is not None:
        return None, "already copied: verify"
    tables = len(move.tables)
    return None, f"resume: {record.tables_done()} of {tables} tables copied"


async def _inspect_source(move: StoreMove, count_rows: bool) -> tuple[str | None, dict[str, int]]:
    async with _connect(move.source) as conn:
        revision = await _revision(conn, move.key.schema)
        counts = {}
        if count_rows:
            for table in move.tables:
                counts[table.name] = int(
                    await conn.fetchval(f"SELECT count(*) FROM {_table(move.key, table)}")  # noqa: S608
                )
        return revision, counts


async def _revision(conn: Any, schema: str) -> str | None:
    if await conn.fetchval("SELECT to_regclass($1)", f"{_ident(schema)}.alembic_version") is None:
        return None
    revision = await conn.fetchval(f"SELECT version_num FROM {_ident(schema)}.alembic_version")  # noqa: S608
    return None if revision is None else str(revision)


async def _inspect_target(move: StoreMove) -> TargetState:
    try:
        conn = await asyncpg.connect(asyncpg_dsn(move.target.url), timeout=CONNECT_TIMEOUT)
    except asyncpg.InvalidCatalogNameError:
        return TargetState(database_exists=False)
    except (OSError, asyncpg.PostgresError) as exc:
        return TargetState(problem=_explain(move.target, exc))
    try:
        await _apply_session_settings(conn)
        schema = move.key.schema
        schema_exists = bool(
            await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
        )
        with_rows = []
        for table in move.tables:
            name = _table(move.key, table)
            if await conn.fetchval("SELECT to_regclass($1)", name) is None:
                continue
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {name})"):  # noqa: S608
                with_rows.append(table.name)
        record = await _read_record(conn, move.key)
        off_record = []
        if record is not None:
            tables = {table.name: table for table in move.tables}
            for progress in record.progress:
                copied = tables.get(progress.table)
                if progress.phase != ROWS or progress.done or copied is None:
                    continue
                pk = _ident(_primary_key(copied).name)
                last = await conn.fetchval(
                    f"SELECT {pk}::text FROM {_table(move.key, copied)} "  # noqa: S608
                    f"ORDER BY {pk} DESC LIMIT 1"
                )
                if last != progress.last_key:
                    off_record.append(copied.name)
        return TargetState(
            database_exists=True,
            schema_exists=schema_exists,
            revision=await _revision(conn, schema) if schema_exists else None,
            tables_with_rows=tuple(with_rows),
            record=record,
            off_record=tuple(off_record),
        )
    finally:
        await conn.close()


# --- the copy ------------------------------------------------------------------------------------


class MoveReporter(Protocol):
    """Told how a copy goes: how the command draws its progress bars, and how a test
    interrupts a move between batches."""

    def started(self, store: StoreKey, item: str, total: int, done: int) -> None:
        """Copying `item` (a table, or `table (links)`) begins: `total` rows, `done` of them
        already copied by an earlier run."""

    def advanced(self, store: StoreKey, item: str, rows: int) -> None:
        """A batch of `rows` was committed with its progress: a resume starts after it."""

    def finished(self, store: StoreKey, item: str) -> None:
        """`item` is fully copied."""


class QuietReporter:
    """Reports nothing."""

    def started(self, store: StoreKey, item: str, total: int, done: int) -> None:
        pass

    def advanced(self, store: StoreKey, item: str, rows: int) -> None:
        pass

    def finished(self, store: StoreKey, item: str) -> None:
        pass


async def copy_stores(
    moves: Sequence[StoreMove],
    *,
    resume: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    reporter: MoveReporter | None = None,
) -> list[StorePlan]:
    """Copy every store of `moves` into its target, after checking them all; returns the
    plans it went by. Refuses (`MoveError`, nothing changed) a target that is not empty unless
    `resume` and the target's record matches; interrupted, it can be run again with `resume`.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    for move in moves:
        _check_copyable(move)
    plans = await inspect_moves(moves, resume=resume)
    problems = [plan.problem for plan in plans if plan.problem is not None]
    if problems:
        raise MoveError("\n".join(problems))
    # Schemas are created by the migration; databases only where missing, since creating one
    # asks the server's maintenance database, which a store's role may not reach.
    missing = [plan.move.target for plan in plans if not plan.target.database_exists]
    if missing:
        try:
            await create_databases(Topology(missing))
        except StoreProblem as exc:
            raise MoveError(str(exc)) from exc
    for plan in plans:
        if plan.target.revision != migrate.head_revision(plan.move.key.role):
            await migrate.upgrade(plan.move.target)
    for move in moves:
        await _copy_store(move, batch_rows, reporter or QuietReporter(), resume=resume)
    return plans


def _check_copyable(move: StoreMove) -> None:
    for table in move.tables:
        _primary_key(table)
        for column in _self_references(table):
            if not column.nullable:
                raise MoveError(
                    f"{move.key}: {table.name}.{column.name} refers to its own table and is "
                    "NOT NULL; a move cannot copy it in key order"
                )


async def _copy_store(
    move: StoreMove, batch_rows: int, reporter: MoveReporter, *, resume: bool
) -> None:
    key = move.key
    async with _connect(move.source) as src, _connect(move.target) as tgt:
        # Held while this connection lives: two runs must not copy into one store at once.
        if not await tgt.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1))", f"{PROGRESS_SCHEMA} {key}"
        ):
            raise MoveError(f"{key}: another move into {_where(move.target)} is running")
        if not resume and await _read_record(tgt, key) is not None:
            # Empty when inspected: another run has started since (and may have finished).
            raise MoveError(f"{key}: another move into {_where(move.target)} has started")
        await _start_record(tgt, move)
        record = await _read_record(tgt, key)
        assert record is not None  # just written
        progress = {(p.table, p.phase): p for p in record.progress}
        # One snapshot for the whole store: parents and children agree.
        snapshot = src.transaction(isolation="repeatable_read", readonly=True)
        await snapshot.start()
        for table in move.tables:
            await _copy_rows(
                src, tgt, move, table, progress[table.name, ROWS], batch_rows, reporter
            )
        for table in move.tables:
            if _self_references(table):
                await _copy_links(
                    src, tgt, move, table, progress[table.name, LINKS], batch_rows, reporter
                )
        await _copy_sequences(src, tgt, key)
        await tgt.execute(
            f"UPDATE {PROGRESS_SCHEMA}.moves SET copied_at = now() WHERE store = $1",  # noqa: S608
            str(key),
        )
        await snapshot.commit()


async def _copy_rows(
    src: Any,
    tgt: Any,
    move: StoreMove,
    table: Table,
    progress: Progress,
    batch_rows: int,
    reporter: MoveReporter,
) -> None:
    """Copy `table` in primary-key ranges of `batch_rows`, each range and its progress in one
    target transaction."""
    key, name = move.key, _table(move.key, table)
    if progress.done:
        reporter.started(key, table.name, progress.rows, progress.rows)
        reporter.finished(key, table.name)
        return
    total = int(await src.fetchval(f"SELECT count(*) FROM {name}"))  # noqa: S608
    reporter.started(key, table.name, total, progress.rows)
    pk = _primary_key(table)
    pk_sql, pk_type = _ident(pk.name), _type_of(pk)
    links = {column.name for column in _self_references(table)}
    columns = [column.name for column in table.columns]
    # Links to the same table are filled in afterwards: their rows may not be copied yet.
    select_list = ", ".join("NULL" if c in links else _ident(c) for c in columns)
    last = progress.last_key
    while True:
        after = f"WHERE {pk_sql} > $1::text::{pk_type}" if last is not None else ""
        upper = await src.fetchval(
            f"SELECT {pk_sql}::text FROM {name} {after} ORDER BY {pk_sql} "  # noqa: S608
            f"OFFSET {batch_rows - 1} LIMIT 1",
            *([last] if last is not None else []),
        )
        conditions, args = [], []
        if last is not None:
            args.append(last)
            conditions.append(f"{pk_sql} > ${len(args)}::text::{pk_type}")
        if upper is not None:
            args.append(upper)
            conditions.append(f"{pk_sql} <= ${len(args)}::text::{pk_type}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        query = f"SELECT {select_list} FROM {name} {where} ORDER BY {pk_sql}"  # noqa: S608
        async with tgt.transaction():
            copied = await _pipe(src, tgt, query, args, move.key.schema, table.name, columns)
            await _record_progress(
                tgt,
                key,
                table.name,
                ROWS,
                upper if upper is not None else last,
                copied,
                upper is None,
            )
        reporter.advanced(key, table.name, copied)
        if upper is None:
            break
        last = upper
    reporter.finished(key, table.name)


async def _pipe(
    src: Any,
    tgt: Any,
    query: str,
    args: Sequence[str],
    schema: str,
    table: str,
    columns: list[str],
) -> int:
    """Stream `query`'s rows from the source into `table` on the target; the rows copied.

    A bounded queue links the two COPYs, so at most PIPE_CHUNKS chunks are held; if either
    side fails, the other is cancelled and the error raised.
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=PIPE_CHUNKS)

    async def produce() -> None:
        await src.copy_from_query(query, *args, output=queue.put, format="text")
        await queue.put(None)

    async def chunks() -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            yield chunk

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            consumed = group.create_task(
                tgt.copy_to_table(
                    table, schema_name=schema, columns=columns, source=chunks(), format="text"
                )
            )
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    status = str(consumed.result())  # "COPY <rows>"
    return int(status.rsplit(" ", 1)[-1])


async def _copy_links(
    src: Any,
    tgt: Any,
    move: StoreMove,
    table: Table,
    progress: Progress,
    batch_rows: int,
    reporter: MoveReporter,
) -> None:
    """Fill in `table`'s columns that refer to its own rows, in primary-key batches."""
    key, item, name = move.key, f"{table.name} (links)", _table(move.key, table)
    if progress.done:
        reporter.started(key, item, progress.rows, progress.rows)
        reporter.finished(key, item)
        return
    pk = _primary_key(table)
    pk_sql, pk_type = _ident(pk.name), _type_of(pk)
    links = _self_references(table)
    any_set = " OR ".join(f"{_ident(c.name)} IS NOT NULL" for c in links)
    total = int(await src.fetchval(f"SELECT count(*) FROM {name} WHERE {any_set}"))  # noqa: S608
    reporter.started(key, item, total, progress.rows)
    values = ", ".join(f"{_ident(c.name)}::text" for c in links)
    assignments = ", ".join(
        f"{_ident(c.name)} = v.c{i}::{_type_of(c)}" for i, c in enumerate(links)
    )
    arrays = ", ".join(f"${i + 2}::text[]" for i in range(len(links)))
    aliases = ", ".join(f"c{i}" for i in range(len(links)))
    last = progress.last_key
    while True:
        after = f"AND {pk_sql} > $1::text::{pk_type}" if last is not None else ""
        rows = await src.fetch(
            f"SELECT {pk_sql}::text, {values} FROM {name} WHERE ({any_set}) {after} "  # noqa: S608
            f"ORDER BY {pk_sql} LIMIT {batch_rows}",
            *([last] if last is not None else []),
        )
        async with tgt.transaction():
            if rows:
                await tgt.execute(
                    f"UPDATE {name} AS t SET {assignments} "  # noqa: S608
                    f"FROM unnest($1::text[], {arrays}) AS v(k, {aliases}) "
                    f"WHERE t.{pk_sql} = v.k::{pk_type}",
                    [row[0] for row in rows],
                    *([row[i + 1] for row in rows] for i in range(len(links))),
                )
            done = len(rows) < batch_rows
            last = rows[-1][0] if rows else last
            await _record_progress(tgt, key, table.name, LINKS, last, len(rows), done)
        reporter.advanced(key, item, len(rows))
        if done:
            break
    reporter.finished(key, item)


async def _copy_sequences(src: Any, tgt: Any, key: StoreKey) -> None:
    """Set each of the store's sequences on the target to where the source's is."""
    for sequence in await _sequences(src, key.schema):
        name = f"{_ident(key.schema)}.{_ident(sequence)}"
        row = await src.fetchrow(f"SELECT last_value, is_called FROM {name}")  # noqa: S608
        await tgt.execute(
            "SELECT setval($1::regclass, $2, $3)", name, row["last_value"], row["is_called"]
        )


async def _sequences(conn: Any, schema: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind = 'S' ORDER BY c.relname",
        schema,
    )
    return [str(row["relname"]) for row in rows]


# --- the record in the target -------------------------------------------------------------------


async def _start_record(tgt: Any, move: StoreMove) -> None:
    """Create the record's tables if need be, and the store's rows unless a run wrote them."""
    async with tgt.transaction():
        # Two runs creating the schema at once would race; one lock per database settles it.
        await tgt.execute("SELECT pg_advisory_xact_lock(hashtext($1))", PROGRESS_SCHEMA)
        await tgt.execute(f"CREATE SCHEMA IF NOT EXISTS {PROGRESS_SCHEMA}")
        await tgt.execute(
            f"""CREATE TABLE IF NOT EXISTS {PROGRESS_SCHEMA}.moves (
                store text PRIMARY KEY,
                source text NOT NULL,
                started_at timestamptz NOT NULL DEFAULT now(),
                copied_at timestamptz,
                verified_at timestamptz
            )"""
        )
        await tgt.execute(
            f"""CREATE TABLE IF NOT EXISTS {PROGRESS_SCHEMA}.progress (
                store text NOT NULL REFERENCES {PROGRESS_SCHEMA}.moves ON DELETE CASCADE,
                table_name text NOT NULL,
                phase text NOT NULL,
                last_key text,
                rows_copied bigint NOT NULL DEFAULT 0,
                done boolean NOT NULL DEFAULT false,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (store, table_name, phase)
            )"""
        )
        store = str(move.key)
        await tgt.execute(
            f"INSERT INTO {PROGRESS_SCHEMA}.moves (store, source) VALUES ($1, $2) "  # noqa: S608
            "ON CONFLICT (store) DO NOTHING",
            store,
            place_of(move.source.url),
        )
        passes = [(table.name, ROWS) for table in move.tables] + [
            (table.name, LINKS) for table in move.tables if _self_references(table)
        ]
        await tgt.executemany(
            f"INSERT INTO {PROGRESS_SCHEMA}.progress (store, table_name, phase) "  # noqa: S608
            "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [(store, table, phase) for table, phase in passes],
        )


async def _record_progress(
    tgt: Any, key: StoreKey, table: str, phase: str, last: str | None, rows: int, done: bool
) -> None:
    await tgt.execute(
        f"UPDATE {PROGRESS_SCHEMA}.progress SET last_key = $4, "  # noqa: S608
        "rows_copied = rows_copied + $5, done = $6, updated_at = now() "
        "WHERE store = $1 AND table_name = $2 AND phase = $3",
        str(key),
        table,
        phase,
        last,
        rows,
        done,
    )


async def _read_record(conn: Any, key: StoreKey) -> MoveRecord | None:
    if await conn.fetchval("SELECT to_regclass($1)", f"{PROGRESS_SCHEMA}.moves") is None:
        return None
    move = await conn.fetchrow(
        f"SELECT source, started_at, copied_at, verified_at FROM {PROGRESS_SCHEMA}.moves "  # noqa: S608
        "WHERE store = $1",
        str(key),
    )
    if move is None:
        return None
    rows = await conn.fetch(
        f"SELECT table_name, phase, last_key, rows_copied, done FROM {PROGRESS_SCHEMA}.progress "  # noqa: S608
        "WHERE store = $1 ORDER BY phase DESC, table_name",
        str(key),
    )
    return MoveRecord(
        source=move["source"],
        started_at=move["started_at"],
        copied_at=move["copied_at"],
        verified_at=move["verified_at"],
        progress=tuple(
            Progress(r["table_name"], r["phase"], r["last_key"], r["rows_copied"], r["done"])
            for r in rows
        ),
    )


async def read_record(location: StoreLocation) -> MoveRecord | None:
    """The move recorded in a target store's database, if any."""
    async with _connect(location) as conn:
        return await _read_record(conn, location.key)


# --- the verification ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One side of a check: a table's rows and checksum, or a sequence's value (no rows)."""

    rows: int | None
    checksum: str


MISSING = Fingerprint(None, "missing")


@dataclass(frozen=True, slots=True)
class Check:
    """A table (or sequence) compared on source and target."""

    store: str
    item: str
    source: Fingerprint
    target: Fingerprint

    @property
    def matches(self) -> bool:
        return self.source == self.target and self.source != MISSING


async def verify_stores(moves: Sequence[StoreMove]) -> list[Check]:
    """Row counts and checksums of every table (and each sequence's value) of each move, on
    source and target; a store whose checks all match is recorded as verified."""
    checks: list[Check] = []
    for move in moves:
        source, target = await asyncio.gather(
            _fingerprints(move.source, move), _fingerprints(move.target, move)
        )
        items = list(source) + [item for item in target if item not in source]
        store_checks = [
            Check(str(move.key), item, source.get(item, MISSING), target.get(item, MISSING))
            for item in items
        ]
        if all(check.matches for check in store_checks):
            async with _connect(move.target) as conn:
                if await conn.fetchval("SELECT to_regclass($1)", f"{PROGRESS_SCHEMA}.moves"):
                    await conn.execute(
                        f"UPDATE {PROGRESS_SCHEMA}.moves SET verified_at = now() "  # noqa: S608
                        "WHERE store = $1",
                        str(move.key),
                    )
        checks.extend(store_checks)
    return checks


async def _fingerprints(location: StoreLocation, move: StoreMove) -> dict[str, Fingerprint]:
    """Each table's fingerprint, then each sequence's (`sequence <name>`), read in one
    snapshot."""
    prints: dict[str, Fingerprint] = {}
    async with (
        _connect(location) as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        for table in move.tables:
            name = _table(move.key, table)
            if await conn.fetchval("SELECT to_regclass($1)", name) is None:
                prints[table.name] = MISSING
                continue
            row_text = f"ROW({', '.join(_ident(c.name) for c in table.columns)})::text"
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(('x' || left(md5("  # noqa: S608
                f"{row_text}), 16))::bit(64)::bigint), 0)::text AS s FROM {name}"
            )
            prints[table.name] = Fingerprint(int(row["n"]), f"{int(row['s']) % 2**64:016x}")
        for sequence in await _sequences(conn, move.key.schema):
            row = await conn.fetchrow(
                f"SELECT last_value, is_called FROM {_ident(move.key.schema)}.{_ident(sequence)}"  # noqa: S608
            )
            value = f"{row['last_value']}" + ("" if row["is_called"] else " (not called)")
            prints[f"sequence {sequence}"] = Fingerprint(None, value)
    return prints


# --- small pieces ---------------------------------------------------------------------------------


@asynccontextmanager
async def _connect(location: StoreLocation) -> AsyncIterator[Any]:
    """A connection to the store's database in the move's session settings; closed at the
    end, dropped at once after an error (a half-done COPY must not hold the block)."""
    try:
        conn = await asyncpg.connect(asyncpg_dsn(location.url), timeout=CONNECT_TIMEOUT)
    except (OSError, asyncpg.PostgresError) as exc:
        raise MoveError(_explain(location, exc)) from exc
    clean = False
    try:
        await _apply_session_settings(conn)
        yield conn
        clean = True
    finally:
        if clean:
            await conn.close()
        else:
            conn.terminate()


async def _apply_session_settings(conn: Any) -> None:
    await conn.execute(
        "SELECT set_config(name, value, false) "
        "FROM unnest($1::text[], $2::text[]) AS s(name, value)",
        list(SESSION_SETTINGS),
        list(SESSION_SETTINGS.values()),
    )


def _explain(location: StoreLocation, exc: BaseException) -> str:
    return explain(location, exc) or f"{location.key}: {_where(location)}: {type(exc).__name__}"


def _ident(name: str) -> str:
    """An identifier quoted for SQL (names come from the models and market codes)."""
    return '"' + name.replace('"', '""') + '"'


def _table(key: StoreKey, table: Table) -> str:
    return f"{_ident(key.schema)}.{_ident(table.name)}"


def _primary_key(table: Table) -> Column[Any]:
    columns = list(table.primary_key.columns)
    if len(columns) != 1:
        raise MoveError(f"{table.name}: a move copies tables with a one-column primary key only")
    return columns[0]


def _self_references(table: Table) -> list[Column[Any]]:
    """The columns of `table` that refer to its own rows."""
    return [fk.parent for fk in table.foreign_keys if fk.column.table is table]


def _type_of(column: Column[Any]) -> str:
    """The column's SQL type, to cast keys carried as text back to it."""
    dialect = PGDialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's own signature
    return str(column.type.compile(dialect=dialect))
