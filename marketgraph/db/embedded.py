"""The embedded PostgreSQL (pgserver) under DATA_DIR: the zero-configuration default."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from marketgraph.db.topology import StoreKey

# Set by `serve` for its workers: the embedded server it started, as {"pgdata", "url"} JSON.
# Internal: a process that finds its data directory here connects without joining the server.
SHARED_SERVER_VARIABLE = "MARKETGRAPH_EMBEDDED_POSTGRES"


def _pgserver() -> Any:
    # pgserver asks platformdirs for XDG_RUNTIME_DIR at import and warns when a
    # container has none; the fallback it takes is fine for a local server.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    # Its exit handler logs at INFO after logging has shut down; keep it quiet.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return pgserver


class EmbeddedPostgres:
    """A PostgreSQL cluster in `<data_dir>/postgres`, listening on a Unix socket only.

    Each process that starts it joins it (pgserver keeps the joined processes' ids in the
    data directory), and the server stops when the last of them stops or exits. `serve`
    starts it once and `share`s it with its workers, which then only connect: a worker
    that dies of a signal (as uvicorn's workers do on SIGTERM) would otherwise stay on the
    list, and the server would never stop.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def start(self) -> URL:
        """Start (or join) the cluster and return its maintenance-database URL; in a process
        the server was shared with, only its URL."""
        if self._server is None:
            shared = self._shared_url()
            if shared is not None:
                return shared
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            pgserver = _pgserver()
            _forget_exited_processes(pgserver, self.pgdata)
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        return make_url(self._server.get_uri()).set(drivername="postgresql+asyncpg")

    def share(self) -> None:
        """Hand the started server to the processes this one starts from now on (through the
        environment): they connect to it without joining, and it stops with this process."""
        url = self.start().render_as_string(hide_password=False)
        os.environ[SHARED_SERVER_VARIABLE] = json.dumps({"pgdata": str(self.pgdata), "url": url})

    def url_for(self, key: StoreKey) -> URL:
        """Each store gets a database of its own, named like its schema."""
        return self.start().set(database=key.schema)

    def stop(self) -> None:
        """Leave the server (stopping it when no other process joined it); a shared one is
        no longer handed on."""
        if self._server is not None:
            if self._shared_url() is not None:
                del os.environ[SHARED_SERVER_VARIABLE]
            self._server.cleanup()
            self._server = None

    def _shared_url(self) -> URL | None:
        try:
            shared = json.loads(os.environ.get(SHARED_SERVER_VARIABLE) or "null")
        except ValueError:
            return None
        if not isinstance(shared, dict) or shared.get("pgdata") != str(self.pgdata):
            return None
        return make_url(shared["url"])


def _forget_exited_processes(pgserver: Any, pgdata: Path) -> None:
    """Drop the processes that exited without leaving from the server's list of joined
    processes (killed, or workers of an older version): with them listed, the server would
    outlive every process that uses it. Under pgserver's own lock, as it edits the list."""
    handles = pgdata / ".handle_pids.json"
    with pgserver.PostgresServer._lock:
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def asyncpg_dsn(url: URL) -> str:
    """A URL as asyncpg's own `connect()` takes it (no SQLAlchemy driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def ensure_databases(server_url: URL, names: list[str]) -> list[str]:
    """Create each database in `names` that the server lacks; return the ones created."""
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        existing = {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
        created = []
        for name in names:
            if name not in existing:
                # Identifiers cannot be bound parameters; names come from market codes.
                await conn.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
        return created
    finally:
        await conn.close()
