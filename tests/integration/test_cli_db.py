"""`marketgraph db create|upgrade|downgrade|current|history`: each acts on the matching stores
only; a store that cannot be reached or found is one line, not a traceback."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from click.testing import Result
from sqlalchemy.engine import URL

from marketgraph.cli import cli
from marketgraph.db import migrate
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.db.topology import Topology
from marketgraph.settings import ROLES, Settings
from tests.conftest import TEST_DB_PREFIX, drop_databases, recreate_database, url_text
from tests.helpers import closed_port, run_command

HEADS = {role: migrate.head_revision(role) for role in ROLES}
STORES = ("kg.auth", "kg.app", "us.auth", "us.app")
PASSWORD = "cli-pa55word-hidden"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if "DATABASE_URL" in name.upper() or name.upper() in ("MARKETS_FILE", "DEFAULT_MARKET"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))


@pytest.fixture(params=["separate", "shared"])
async def fresh_env(
    request: pytest.FixtureRequest,
    postgres_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> AsyncIterator[Settings]:
    """Empty, unmigrated stores in each mode, placed through the environment the CLI reads."""
    tag = uuid.uuid4().hex[:8]
    names = (
        [f"{TEST_DB_PREFIX}_{tag}_{m}_{r}" for m in ("kg", "us") for r in ROLES]
        if request.param == "separate"
        else [f"{TEST_DB_PREFIX}_{tag}_shared"]
    )
    urls = {}
    for name in names:
        url = url_text(await recreate_database(postgres_url, name))
        variable = name.removeprefix(f"{TEST_DB_PREFIX}_{tag}_").upper() + "_DATABASE_URL"
        urls["DATABASE_URL" if variable == "SHARED_DATABASE_URL" else variable] = url
    for variable, url in urls.items():
        monkeypatch.setenv(variable, url)
    try:
        yield Settings(data_dir=tmp_path)
    finally:
        await drop_databases(postgres_url, names)


async def invoke(*args: str) -> Result:
    return await run_command(cli, *args)


async def ok(*args: str) -> list[str]:
    result = await invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


async def revisions(settings: Settings) -> dict[str, str | None]:
    """Each store's revision, read from its own version table."""
    topology = Topology.resolve(settings.markets.codes, settings.database_urls)
    return {str(loc.key): (await migrate.current(loc)).current for loc in topology}


def at(**by_store: str | None) -> dict[str, str | None]:
    """Expected revisions: `kg_auth="head"` means that role's head, anything missing None."""
    out: dict[str, str | None] = {}
    for store in STORES:
        value = by_store.get(store.replace(".", "_"))
        out[store] = HEADS[store.split(".")[1]] if value == "head" else value
    return out


async def test_upgrade_and_downgrade_act_on_matching_stores_only(fresh_env: Settings) -> None:
    settings = fresh_env
    assert await revisions(settings) == at()

    assert await ok("db", "upgrade", "--market", "kg", "--role", "auth") == [
        "kg.auth: upgrading to head"
    ]
    assert await revisions(settings) == at(kg_auth="head")

    assert await ok("db", "upgrade", "--role", "app") == [
        "kg.app: upgrading to head",
        "us.app: upgrading to head",
    ]
    assert await revisions(settings) == at(kg_auth="head", kg_app="head", us_app="head")

    assert await ok("db", "upgrade") == [f"{store}: upgrading to head" for store in STORES]
    assert await revisions(settings) == at(kg_auth="head", kg_app="head", us_auth="head",
                                           us_app="head")  # fmt: skip

    # Market codes are case-insensitive.
    assert await ok("db", "downgrade", "--market", "KG", "--to", "base") == [
        "kg.auth: downgrading to base",
        "kg.app: downgrading to base",
    ]
    assert await revisions(settings) == at(us_auth="head", us_app="head")

    # The default step is one revision back.
    before_head = migrate.history("app")[0][1]
    assert await ok("db", "downgrade", "--market", "us", "--role", "app") == [
        "us.app: downgrading to -1"
    ]
    assert await revisions(settings) == at(us_auth="head", us_app=before_head)


@pytest.mark.parametrize("fresh_env", ["shared"], indirect=True)
async def test_current_reports_matching_stores(fresh_env: Settings) -> None:
    await ok("db", "upgrade", "--market", "us", "--role", "auth")
    auth_head, app_head = HEADS["auth"], HEADS["app"]
    assert await ok("db", "current") == [
        f"kg.auth: (empty) (head is {auth_head})",
        f"kg.app: (empty) (head is {app_head})",
        f"us.auth: {auth_head} (at head)",
        f"us.app: (empty) (head is {app_head})",
    ]
    assert await ok("db", "current", "--market", "us") == [
        f"us.auth: {auth_head} (at head)",
        f"us.app: (empty) (head is {app_head})",
    ]
    assert await ok("db", "current", "--role", "auth") == [
        f"kg.auth: (empty) (head is {auth_head})",
        f"us.auth: {auth_head} (at head)",
    ]
    assert await ok("db", "current", "--market", "kg", "--role", "app") == [
        f"kg.app: (empty) (head is {app_head})"
    ]


async def test_history_lists_each_roles_branch() -> None:
    auth_lines = await ok("db", "history", "--role", "auth")
    assert auth_lines[0] == "[auth]"
    assert "[app]" not in auth_lines
    assert len(auth_lines) == 1 + len(migrate.history("auth"))
    assert any(HEADS["auth"] in line for line in auth_lines[1:])
    assert auth_lines[-1].startswith("  <base> -> ")

    both = await ok("db", "history")
    assert both.index("[auth]") < both.index("[app]")
    app_lines = both[both.index("[app]") + 1 :]
    assert len(app_lines) == len(migrate.history("app"))
    assert all(HEADS["auth"] not in line for line in app_lines)


async def test_unknown_market_is_a_usage_error_naming_the_known_ones() -> None:
    for command in ("upgrade", "downgrade", "current"):
        result = await invoke("db", command, "--market", "zz")
        assert result.exit_code == 2, result.output
        assert "'zz'" in result.stderr
        assert "kg, us" in result.stderr


async def test_unknown_role_is_a_usage_error() -> None:
    result = await invoke("db", "upgrade", "--role", "admin")
    assert result.exit_code == 2
    assert "'admin'" in result.stderr


async def test_bad_database_url_stops_with_its_name_and_no_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://fine@127.0.0.1/db")
    monkeypatch.setenv("US_APP_DATABASE_URL", f"postgresql://mg:{PASSWORD}@db:port/marketgraph")
    result = await invoke("db", "upgrade")
    assert result.exit_code == 2
    assert "US_APP_DATABASE_URL" in result.stderr
    assert PASSWORD not in result.output


async def test_partial_configuration_stops_naming_the_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KG_DATABASE_URL", "postgresql://mg@127.0.0.1/kg")
    result = await invoke("db", "current")
    assert result.exit_code == 2
    assert "us.auth" in result.stderr
    assert "US_AUTH_DATABASE_URL" in result.stderr


async def test_revision_needs_a_role() -> None:
    result = await invoke("db", "revision", "-m", "x")
    assert result.exit_code == 2
    assert "--role" in result.stderr


@pytest.fixture(params=["separate", "shared"])
async def missing_env(
    request: pytest.FixtureRequest, postgres_url: URL, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[str]]:
    """Stores placed through the environment on databases that do not exist yet; their names
    (dropped after the test)."""
    tag = uuid.uuid4().hex[:8]
    if request.param == "separate":
        names = [f"{TEST_DB_PREFIX}_{tag}_{m}_{r}" for m in ("kg", "us") for r in ROLES]
        for name, (market, role) in zip(
            names, [(m, r) for m in ("kg", "us") for r in ROLES], strict=True
        ):
            url = url_text(postgres_url.set(database=name, password=PASSWORD))
            monkeypatch.setenv(f"{market.upper()}_{role.upper()}_DATABASE_URL", url)
    else:
        names = [f"{TEST_DB_PREFIX}_{tag}_shared"]
        url = url_text(postgres_url.set(database=names[0], password=PASSWORD))
        monkeypatch.setenv("DATABASE_URL", url)
    try:
        yield names
    finally:
        await drop_databases(postgres_url, names)


async def test_create_then_upgrade_is_the_whole_set_up(missing_env: list[str]) -> None:
    refused = await invoke("db", "upgrade")
    assert refused.exit_code == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith("marketgraph: kg.auth: postgresql://")
    assert f"database '{missing_env[0]}' does not exist; run `marketgraph db create`" in line
    assert PASSWORD not in refused.output

    created = await ok("db", "create")
    assert [line.split(":")[0] for line in created] == list(STORES)
    assert all("schema" in line and "(created)" in line for line in created)
    again = await ok("db", "create")
    assert all(line.endswith("(exists)") and "(exists)," in line for line in again)

    await ok("db", "upgrade")
    assert all("(at head)" in line for line in await ok("db", "current"))


async def test_an_unreachable_server_is_one_line_naming_the_store_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = closed_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://mg:{PASSWORD}@127.0.0.1:{port}/gone")
    commands = (
        ("db", "current"),
        ("db", "upgrade"),
        ("db", "create"),
        ("seed",),
        ("users", "promote", "+996700123456", "--market", "kg"),
    )
    for command in commands:
        result = await invoke(*command)
        assert result.exit_code == 1, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(f"marketgraph: kg.auth: postgresql://mg@127.0.0.1:{port}/gone")
        assert "cannot reach the server" in line and "DATABASE_URL" in line
        assert PASSWORD not in result.output


async def test_a_role_that_may_not_create_databases_is_told_what_to_ask_for(
    postgres_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    name = f"{TEST_DB_PREFIX}_{uuid.uuid4().hex[:8]}_none"
    try:
        await admin.execute("DROP ROLE IF EXISTS mg_no_createdb")
        await admin.execute("CREATE ROLE mg_no_createdb LOGIN NOCREATEDB")
        url = postgres_url.set(username="mg_no_createdb", database=name)
        monkeypatch.setenv("DATABASE_URL", url_text(url))
        result = await invoke("db", "create")
        assert result.exit_code == 1
        [line] = result.stderr.splitlines()
        assert "user 'mg_no_createdb' may not create databases" in line
        assert f'CREATE DATABASE "{name}" OWNER "mg_no_createdb"' in line
    finally:
        await admin.execute("DROP ROLE IF EXISTS mg_no_createdb")
        await admin.close()
