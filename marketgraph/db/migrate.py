"""Alembic driven per store: upgrade, downgrade, current, history, revision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import NullPool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from marketgraph.db.topology import StoreLocation
from marketgraph.settings import Role

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"  # shipped in the package


def alembic_config(role: Role) -> Config:
    """One script directory and env; each role's branch lives in its own folder.

    A config sees only its role's folder: a store is only ever at its own
    branch's head, and autogenerate insists the database is at every visible head.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(version_dir(role)))
    return cfg


def version_dir(role: Role) -> Path:
    return MIGRATIONS_DIR / "versions" / role


def head_revision(role: Role) -> str | None:
    """The newest revision of `role`'s branch in the code."""
    revision = ScriptDirectory.from_config(alembic_config(role)).get_revision(f"{role}@head")
    return revision.revision if revision is not None else None


def history(role: Role) -> list[tuple[str, str | None, str]]:
    """(revision, down revision, message) of `role`'s branch, newest first."""
    script = ScriptDirectory.from_config(alembic_config(role))
    out = []
    for rev in script.iterate_revisions(f"{role}@head", "base"):
        down = rev.down_revision if isinstance(rev.down_revision, str) else None
        out.append((rev.revision, down, rev.doc))
    return out


@dataclass(frozen=True, slots=True)
class StoreRevision:
    store: str
    current: str | None
    head: str | None

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def current_revision(connection: Connection, schema: str) -> str | None:
    """The revision a store is at, read from the version table in its schema."""
    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return context.get_current_revision()


async def _run(location: StoreLocation, action: str, **kwargs: Any) -> Any:
    # Prepared statements off (asyncpg's and SQLAlchemy's caches; see `databases._create_engine`):
    # a migration runs each statement about once, and behind PgBouncer in transaction mode a
    # named statement would stay on the server connection after this process has gone, for
    # the next one, whose names start over, to collide with ("... already exists").
    engine = create_async_engine(
        location.url,
        poolclass=NullPool,
        connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0},
    )
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(_run_sync, location, action, kwargs)
    finally:
        await engine.dispose()


def _run_sync(
    connection: Connection, location: StoreLocation, action: str, kwargs: dict[str, Any]
) -> Any:
    role = location.key.role
    if action == "current":
        return StoreRevision(
            str(location.key), current_revision(connection, location.schema), head_revision(role)
        )
    cfg = alembic_config(role)
    cfg.attributes.update(connection=connection, role=role, schema=location.schema)
    if action == "upgrade":
        command.upgrade(cfg, _target(role, kwargs.get("target", "head")))
    elif action == "downgrade":
        command.downgrade(cfg, _target(role, kwargs.get("target", "-1")))
    elif action == "revision":
        command.revision(
            cfg,
            message=kwargs["message"],
            autogenerate=kwargs.get("autogenerate", False),
            head=f"{role}@head",
            version_path=str(version_dir(role)),
            rev_id=kwargs.get("rev_id"),
        )
    else:
        raise ValueError(f"unknown migration action {action!r}")
    return None


def _target(role: Role, target: str) -> str:
    """Scope a revision target to the role's branch: head → auth@head, -1 → auth@-1."""
    if "@" in target:
        return target
    if target in ("head", "base") or target.startswith(("-", "+")):
        return f"{role}@{target}"
    return target


async def upgrade(location: StoreLocation, target: str = "head") -> None:
    await _run(location, "upgrade", target=target)


async def downgrade(location: StoreLocation, target: str = "-1") -> None:
    await _run(location, "downgrade", target=target)


async def current(location: StoreLocation) -> StoreRevision:
    result: StoreRevision = await _run(location, "current")
    return result


async def revision(
    location: StoreLocation, message: str, *, autogenerate: bool, rev_id: str | None = None
) -> None:
    await _run(location, "revision", message=message, autogenerate=autogenerate, rev_id=rev_id)
