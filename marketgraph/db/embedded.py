"""The embedded PostgreSQL (pgserver) under DATA_DIR: the zero-configuration default."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from marketgraph.db.topology import StoreKey


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

    Starting is idempotent across processes (workers share one server); the
    server stops when the last process that started it exits.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def start(self) -> URL:
        """Start (or join) the cluster and return its maintenance-database URL."""
        if self._server is None:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            self._server = _pgserver().get_server(self.pgdata, cleanup_mode="stop")
        return make_url(self._server.get_uri()).set(drivername="postgresql+asyncpg")

    def url_for(self, key: StoreKey) -> URL:
        """Each store gets a database of its own, named like its schema."""
        return self.start().set(database=key.schema)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


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
