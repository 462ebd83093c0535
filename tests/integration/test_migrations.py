"""Migrations: models and migrations agree, the branches go up and down in both modes, upgrades
are idempotent, and `db revision --autogenerate` writes an empty revision when nothing changed."""

from __future__ import annotations

import ast
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from click.testing import Result
from sqlalchemy import NullPool
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from marketgraph.cli import cli
from marketgraph.db import migrate
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.models import metadata_for
from marketgraph.db.topology import StoreLocation, Topology
from marketgraph.settings import ROLES, Role, Settings
from tests.conftest import TEST_DB_PREFIX, drop_databases, recreate_database, url_text
from tests.helpers import run_command

SCHEMAS = {"kg_auth", "kg_app", "us_auth", "us_app"}
HEADS = {role: migrate.head_revision(role) for role in ROLES}

FreshDatabases = Callable[[str], Awaitable[Settings]]


def tables_of(role: Role) -> set[str]:
    return set(metadata_for(role).tables)


@pytest.fixture
async def fresh(postgres_url: URL, tmp_path: Path) -> AsyncIterator[FreshDatabases]:
    """Empty databases for one mode (`separate` or `shared`), dropped after the test."""
    created: list[str] = []

    async def make(mode: str) -> Settings:
        tag = uuid.uuid4().hex[:8]
        urls = {}
        if mode == "separate":
            for market in ("kg", "us"):
                for role in ROLES:
                    name = f"{TEST_DB_PREFIX}_{tag}_{market}_{role}"
                    created.append(name)
                    variable = f"{market.upper()}_{role.upper()}_DATABASE_URL"
                    urls[variable] = url_text(await recreate_database(postgres_url, name))
        else:
            name = f"{TEST_DB_PREFIX}_{tag}_shared"
            created.append(name)
            urls["DATABASE_URL"] = url_text(await recreate_database(postgres_url, name))
        return Settings(database_urls=urls, data_dir=tmp_path)

    yield make
    await drop_databases(postgres_url, created)


def locations(settings: Settings) -> list[StoreLocation]:
    return list(Topology.resolve(settings.markets.codes, settings.database_urls))


async def fetch(url: URL, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def tables_in(location: StoreLocation) -> set[str]:
    rows = await fetch(
        location.url, "SELECT tablename FROM pg_tables WHERE schemaname = $1", location.schema
    )
    return {row["tablename"] for row in rows}


async def revision_in(location: StoreLocation) -> str | None:
    return (await migrate.current(location)).current


def _diff(connection: Connection, location: StoreLocation) -> list[Any]:
    """Autogenerate's view of one store: the diff itself, then env.py's own check."""
    role = location.key.role
    connection.exec_driver_sql(f'SET search_path TO "{location.schema}"')
    connection.dialect.default_schema_name = location.schema
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    diff = compare_metadata(context, metadata_for(role))
    if not diff:
        # The same comparison through migrations/env.py (raises when anything differs).
        cfg: Config = migrate.alembic_config(role)
        cfg.attributes.update(connection=connection, role=role, schema=location.schema)
        command.check(cfg)
    return diff


async def autogenerate_diff(location: StoreLocation) -> list[Any]:
    engine = create_async_engine(location.url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            diff: list[Any] = await conn.run_sync(_diff, location)
            await conn.rollback()
            return diff
    finally:
        await engine.dispose()


@pytest.fixture(params=["settings", "shared_settings"], ids=["separate", "shared"])
def migrated(request: pytest.FixtureRequest) -> Settings:
    """The session's migrated stores, in each mode (read here, never changed)."""
    settings: Settings = request.getfixturevalue(request.param)
    return settings


async def test_models_and_migrations_agree(migrated: Settings) -> None:
    for location in locations(migrated):
        assert await autogenerate_diff(location) == [], str(location.key)


async def test_migrated_stores_hold_their_roles_tables(migrated: Settings) -> None:
    for location in locations(migrated):
        assert await tables_in(location) == tables_of(location.key.role) | {"alembic_version"}
        assert await revision_in(location) == HEADS[location.key.role]


async def test_every_table_is_migrated() -> None:
    assert HEADS["auth"] is not None
    assert HEADS["app"] is not None
    assert {"users", "refresh_tokens", "api_keys"} <= tables_of("auth")
    assert {"products", "carts", "cart_items", "orders", "order_items", "wallets",
            "wallet_transactions"} <= tables_of("app")  # fmt: skip


@pytest.mark.parametrize("mode", ["separate", "shared"])
async def test_upgrade_downgrade_base_upgrade(fresh: FreshDatabases, mode: str) -> None:
    stores = locations(await fresh(mode))
    for location in stores:
        assert await revision_in(location) is None
        await migrate.upgrade(location)
    for location in stores:
        assert await tables_in(location) == tables_of(location.key.role) | {"alembic_version"}
        assert await revision_in(location) == HEADS[location.key.role]

    for location in stores:
        await migrate.downgrade(location, "base")
    for location in stores:
        assert await tables_in(location) == {"alembic_version"}
        assert await revision_in(location) is None

    for location in stores:
        await migrate.upgrade(location)
    for location in stores:
        assert await tables_in(location) == tables_of(location.key.role) | {"alembic_version"}
        assert await revision_in(location) == HEADS[location.key.role]
        assert await autogenerate_diff(location) == [], str(location.key)


async def schemas_in(url: URL) -> set[str]:
    rows = await fetch(
        url,
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
        "AND nspname NOT IN ('information_schema', 'public')",
    )
    return {row["nspname"] for row in rows}


async def snapshot(url: URL) -> dict[str, Any]:
    """Everything a migration could change in the four schemas, with row identities.

    Object ids show a table or index that was dropped and made again; the xmin of a
    catalog row shows one that was altered; the version rows' xmin shows a rewritten
    alembic_version.
    """
    schemas = sorted(SCHEMAS)
    out: dict[str, Any] = {}
    out["relations"] = [
        tuple(r)
        for r in await fetch(
            url,
            "SELECT n.nspname, c.relname, c.relkind, c.oid::int8, c.xmin::text "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY($1) ORDER BY 1, 2",
            schemas,
        )
    ]
    out["columns"] = [
        tuple(r)
        for r in await fetch(
            url,
            "SELECT table_schema, table_name, column_name, ordinal_position, data_type, "
            "is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = ANY($1) ORDER BY 1, 2, 4",
            schemas,
        )
    ]
    out["constraints"] = [
        tuple(r)
        for r in await fetch(
            url,
            "SELECT n.nspname, c.conname, pg_get_constraintdef(c.oid), c.oid::int8 "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = ANY($1) ORDER BY 1, 2",
            schemas,
        )
    ]
    out["indexes"] = [
        tuple(r)
        for r in await fetch(
            url,
            "SELECT schemaname, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = ANY($1) ORDER BY 1, 2",
            schemas,
        )
    ]
    for schema in schemas:
        query = f"SELECT version_num, xmin::text FROM {schema}.alembic_version"
        out[f"{schema}.alembic_version"] = [tuple(r) for r in await fetch(url, query)]
    return out


def set_database_env(monkeypatch: pytest.MonkeyPatch, urls: dict[str, str], data_dir: Path) -> None:
    for name in list(os.environ):
        if "DATABASE_URL" in name.upper():
            monkeypatch.delenv(name)
    for name, value in urls.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATA_DIR", str(data_dir))


async def invoke(*args: str) -> Result:
    return await run_command(cli, *args)


async def test_db_upgrade_twice_with_only_database_url_changes_nothing(
    fresh: FreshDatabases, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = await fresh("shared")
    set_database_env(monkeypatch, dict(settings.database_urls), tmp_path)
    url = make_url(settings.database_urls["DATABASE_URL"])

    first = await invoke("db", "upgrade")
    assert first.exit_code == 0, first.output
    # One database, exactly four schemas, each with its own tables and version table.
    assert await schemas_in(url) == SCHEMAS
    for location in locations(settings):
        assert await tables_in(location) == tables_of(location.key.role) | {"alembic_version"}
        query = f"SELECT version_num FROM {location.schema}.alembic_version"
        rows = await fetch(url, query)
        assert [row["version_num"] for row in rows] == [HEADS[location.key.role]]
    before = await snapshot(url)

    second = await invoke("db", "upgrade")
    assert second.exit_code == 0, second.output
    assert await snapshot(url) == before
    assert await schemas_in(url) == SCHEMAS

    current = await invoke("db", "current")
    assert current.exit_code == 0, current.output
    assert sorted(current.output.splitlines()) == sorted(
        f"{market}.{role}: {HEADS[role]} (at head)" for market in ("kg", "us") for role in ROLES
    )


@pytest.mark.parametrize("role", ROLES)
async def test_autogenerated_revision_is_empty_when_models_match(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, role: Role
) -> None:
    def revision_files(migrations: Path) -> set[str]:
        return {str(p.relative_to(migrations)) for p in (migrations / "versions").glob("*/*.py")}

    real = migrate.MIGRATIONS_DIR
    real_before = revision_files(real)
    copy = tmp_path / "migrations"
    shutil.copytree(real, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", copy)
    set_database_env(monkeypatch, dict(settings.database_urls), tmp_path)

    result = await invoke(
        "db", "revision", "--role", role, "-m", "nothing changed", "--autogenerate"
    )
    assert result.exit_code == 0, result.output

    # Exactly one new file, in the role's branch of the copy; the real migrations untouched.
    assert revision_files(real) == real_before
    (added,) = revision_files(copy) - real_before
    assert added.startswith(f"versions/{role}/")
    text = (copy / added).read_text(encoding="utf-8")
    assert "nothing changed" in text
    module = ast.parse(text)
    functions = {node.name: node.body for node in module.body if isinstance(node, ast.FunctionDef)}
    assert set(functions) == {"upgrade", "downgrade"}
    for name, body in functions.items():
        assert [type(statement) for statement in body] == [ast.Pass], name
    assignments = {
        target.id: node.value
        for node in module.body
        if isinstance(node, ast.AnnAssign) and isinstance((target := node.target), ast.Name)
        and node.value is not None
    }  # fmt: skip
    assert ast.literal_eval(assignments["down_revision"]) == HEADS[role]
