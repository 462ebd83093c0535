"""Creating the databases and schemas a topology names, and saying in one line why a store
cannot be reached: what `marketgraph db create` does, and what every `db` command prints
instead of a traceback.

`db create` asks each server (its `postgres` maintenance database, as the configured
role) for the databases it lacks and creates them, then creates each store's schema in its
database; what exists is left alone, so running it again is harmless. A role that may not
create databases gets the one line that says what to ask an administrator for.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import URL

from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.topology import StoreLocation, Topology

MAINTENANCE_DATABASE = "postgres"
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Created:
    """What `db create` did for one store."""

    store: str
    database: str
    database_created: bool
    schema: str
    schema_created: bool


class StoreProblem(Exception):  # noqa: N818 - a verdict for the terminal, not a bug
    """One store could not be reached or found: the message is the one line to print."""


def plain_url(url: URL) -> str:
    """A store's URL as an operator writes it, without the password or the driver."""
    # URL.set(password=None) keeps the password; _replace is URL's documented NamedTuple way.
    bare = url.set(drivername="postgresql")._replace(password=None)
    return bare.render_as_string(hide_password=False)


def explain(location: StoreLocation, exc: BaseException) -> str | None:
    """The one line for a failure to reach or find `location`'s database, or None when the
    failure is something else (a bug, a bad migration): the store, its URL without the
    password, what went wrong and what to do."""
    where = _where(location)
    sqlstate = _sqlstate(exc)
    database = location.url.database
    user = _user(location)
    if sqlstate == "3D000":
        return f"{where}: database {database!r} does not exist; run `marketgraph db create`"
    if sqlstate == "3F000":
        return f"{where}: schema {location.schema!r} does not exist; run `marketgraph db create`"
    if sqlstate is not None and sqlstate.startswith("28"):
        return (
            f"{where}: the server refused user {user!r} (wrong password, or no access to "
            f"{database!r} in pg_hba.conf); fix the URL in {location.source}"
        )
    if sqlstate == "42501":
        return (
            f"{where}: user {user!r} lacks a privilege it needs; grant it, or run as the "
            f"database's owner"
        )
    if sqlstate == "53300":
        return f"{where}: the server has no connection left (too many clients); try again"
    if sqlstate is not None and sqlstate.startswith("57"):
        return f"{where}: the server is shutting down or starting up; try again shortly"
    if isinstance(exc, TimeoutError):
        return f"{where}: the server did not answer in time; is the host right and reachable?"
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return (
            f"{where}: cannot reach the server ({reason}); is PostgreSQL running there, and "
            f"is the host and port in {location.source} right?"
        )
    return None


def _where(location: StoreLocation) -> str:
    """How a message names a store: its key, URL without the password, and variable."""
    return f"{location.key}: {plain_url(location.url)} ({location.source})"


def _user(location: StoreLocation) -> str:
    return location.url.username or "(default user)"


def _sqlstate(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    for _ in range(4):  # the error, what SQLAlchemy wrapped, what that wrapped
        if seen is None:
            return None
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


async def create_databases(topology: Topology) -> list[Created]:
    """Create what `topology` names and the servers lack; a `StoreProblem` for the first
    store that cannot be done."""
    databases: dict[tuple[str, str], bool] = {}  # (server, database) -> created now
    results = []
    for location in topology:
        database = location.url.database or ""
        server = plain_url(location.url.set(database=MAINTENANCE_DATABASE))
        if (server, database) not in databases:
            databases[server, database] = await _create_database(location, database)
        results.append(
            Created(
                store=str(location.key),
                database=database,
                database_created=databases[server, database],
                schema=location.schema,
                schema_created=await _create_schema(location),
            )
        )
    return results


async def _connect(location: StoreLocation, url: URL) -> asyncpg.Connection:
    try:
        # No statement cache: its named statements would outlive the connection on a server
        # connection behind PgBouncer in transaction mode (`migrate._run` says more).
        return await asyncpg.connect(
            asyncpg_dsn(url), timeout=CONNECT_TIMEOUT, statement_cache_size=0
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreProblem(explain(location, exc) or f"{location.key}: {exc!r}") from exc


async def _create_database(location: StoreLocation, database: str) -> bool:
    """Create `database` on the store's server unless it exists; True if created."""
    conn = await _connect(location, location.url.set(database=MAINTENANCE_DATABASE))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            return False
        try:
            # An identifier, not a value: quoted, with its own quotes doubled.
            await conn.execute(f'CREATE DATABASE "{database.replace(chr(34), chr(34) * 2)}"')
        except asyncpg.InsufficientPrivilegeError as exc:
            user = _user(location)
            raise StoreProblem(
                f"{_where(location)}: user {user!r} may not create databases; have an "
                f'administrator run CREATE DATABASE "{database}" OWNER "{user}" (or ALTER '
                f'ROLE "{user}" CREATEDB), then run `marketgraph db create` again'
            ) from exc
        except asyncpg.DuplicateDatabaseError:
            return False  # created meanwhile by someone else
        return True
    finally:
        await conn.close()


async def _create_schema(location: StoreLocation) -> bool:
    """Create the store's schema in its database unless it exists; True if created."""
    conn = await _connect(location, location.url)
    try:
        schema = location.schema
        if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            return False
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except asyncpg.InsufficientPrivilegeError as exc:
            user = _user(location)
            raise StoreProblem(
                f"{_where(location)}: user {user!r} may not create schema {schema!r}; have "
                f'an administrator run GRANT CREATE ON DATABASE "{location.url.database}" '
                f'TO "{user}"'
            ) from exc
        return True
    finally:
        await conn.close()


async def check_reachable(topology: Topology) -> None:
    """Connect once to every database `topology` names: a `StoreProblem` (one line) for the
    first store that cannot be reached or found, before a command starts its work."""
    seen: set[str] = set()
    for location in topology:
        url = plain_url(location.url)
        if url in seen:
            continue
        seen.add(url)
        conn = await _connect(location, location.url)
        await conn.close()
