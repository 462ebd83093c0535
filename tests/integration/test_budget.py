"""The connection budget: start-up refuses pools (times workers) that a server's
max_connections cannot hold, names the variables to change, and skips a server that is down."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from sqlalchemy.engine import URL, make_url
from structlog.typing import EventDict

from marketgraph.db.budget import Budget, ServerBudget, check_budget
from marketgraph.db.embedded import asyncpg_dsn
from marketgraph.services import open_services
from marketgraph.settings import ConfigError, Settings
from tests.conftest import databases_for, make_settings
from tests.helpers import closed_port, silent_server

VARIABLES = (
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "AUTH_DB_",
    "APP_DB_",
    "WEB_CONCURRENCY",
    "--workers",
    "max_connections",
)


async def server_limits(postgres_url: URL) -> tuple[int, int]:
    """max_connections and the reserved slots, asked of the test server directly."""
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true)::int, 0)"
        )
    finally:
        await conn.close()
    assert row is not None
    return row[0], row[1]


def address(postgres_url: URL) -> str:
    return f"{postgres_url.host or 'localhost'}:{postgres_url.port or 5432}"


def over(settings: Settings, tmp_path: Path, **overrides: Any) -> Settings:
    """`settings`' placement with other pool, worker or check settings."""
    return make_settings(tmp_path, dict(settings.database_urls), **overrides)


async def budget_of(settings: Settings) -> Budget:
    databases = databases_for(settings)
    try:
        return await check_budget(databases)
    finally:
        await databases.dispose()


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    """What structlog logs during the test, as event dicts."""
    with structlog.testing.capture_logs() as entries:
        yield entries


# --- the defaults fit ------------------------------------------------------------------------


async def test_the_defaults_fit_four_databases_on_a_stock_server(
    settings: Settings, postgres_url: URL, logs: list[EventDict]
) -> None:
    budget = await budget_of(settings)
    max_connections, reserved = await server_limits(postgres_url)
    assert budget.servers == (
        ServerBudget(address(postgres_url), ((5, 15),) * 4, 1, max_connections, reserved),
    )
    assert (budget.servers[0].wanted, budget.error(), budget.unanswered) == (80, None, ())
    assert logs == []


async def test_the_defaults_fit_one_database_url(
    shared_settings: Settings, postgres_url: URL
) -> None:
    budget = await budget_of(shared_settings)
    ((server,),) = (budget.servers,)
    assert (server.pools, server.wanted, server.is_over) == (((5, 15),), 20, False)


async def test_role_overrides_are_counted_as_the_engines_take_them(
    settings: Settings, shared_settings: Settings, tmp_path: Path
) -> None:
    overrides = {"auth_db_pool_size": 2, "app_db_max_overflow": 0}
    (separate,) = (await budget_of(over(settings, tmp_path, **overrides))).servers
    assert sorted(separate.pools) == [(2, 15), (2, 15), (5, 0), (5, 0)]
    assert separate.wanted == 44
    # One engine serves both roles in a single database: it takes the base values.
    (shared,) = (await budget_of(over(shared_settings, tmp_path, **overrides))).servers
    assert shared.pools == ((5, 15),)


# --- over budget -----------------------------------------------------------------------------


async def test_pools_past_max_connections_are_refused_by_server_and_variable(
    settings: Settings, postgres_url: URL, tmp_path: Path
) -> None:
    max_connections, reserved = await server_limits(postgres_url)
    big = over(settings, tmp_path, db_pool_size=20, db_max_overflow=10)  # 4 x 30 = 120
    with pytest.raises(ConfigError) as caught:
        await budget_of(big)
    message = str(caught.value)
    assert message == (
        f"PostgreSQL {address(postgres_url)} is over its connection budget: 1 worker x 120 "
        f"(4 pools of 20 + 10) = 120 connections, but it accepts {max_connections - reserved} "
        f"(max_connections {max_connections} - {reserved} reserved); lower DB_POOL_SIZE / "
        "DB_MAX_OVERFLOW (or their AUTH_DB_ / APP_DB_ overrides), run fewer workers "
        "(WEB_CONCURRENCY / --workers), or raise max_connections on the server "
        "(DB_BUDGET_CHECK=warn starts anyway)"
    )
    assert "\n" not in message
    assert "postgresql://" not in message
    for variable in VARIABLES:
        assert variable in message


async def test_workers_push_the_defaults_past_max_connections(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r": 2 workers x 80 \(4 pools of 5 \+ 15\) = 160 "):
        await budget_of(over(settings, tmp_path, web_concurrency=2))


async def test_a_server_reached_by_two_names_is_one_budget(
    settings: Settings, postgres_url: URL, tmp_path: Path
) -> None:
    if postgres_url.host != "127.0.0.1":
        pytest.skip("needs TEST_DATABASE_URL on 127.0.0.1 (reachable as localhost too)")
    urls = dict(settings.database_urls)
    for variable in ("US_AUTH_DATABASE_URL", "US_APP_DATABASE_URL"):
        aliased = make_url(urls[variable]).set(host="localhost")
        urls[variable] = aliased.render_as_string(hide_password=False)
    (server,) = (await budget_of(make_settings(tmp_path, urls))).servers
    assert len(server.pools) == 4
    assert set(server.server.split(", ")) == {f"127.0.0.1:{postgres_url.port or 5432}"} | {
        f"localhost:{postgres_url.port or 5432}"
    }


async def test_warn_only_warns_with_the_same_text(
    settings: Settings, tmp_path: Path, logs: list[EventDict]
) -> None:
    with pytest.raises(ConfigError) as caught:
        await budget_of(over(settings, tmp_path, db_pool_size=50))
    budget = await budget_of(over(settings, tmp_path, db_pool_size=50, db_budget_check="warn"))
    (server,) = budget.over
    assert [(e["log_level"], e["event"]) for e in logs] == [("warning", str(caught.value))]
    assert (logs[0]["wanted"], logs[0]["available"]) == (260, server.available)


async def test_open_services_refuses_to_start_over_budget(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="over its connection budget"):
        await open_services(over(settings, tmp_path, db_max_overflow=100))


# --- a server that is down -------------------------------------------------------------------


async def test_a_server_that_refuses_is_skipped_with_a_warning(
    settings: Settings, postgres_url: URL, tmp_path: Path, logs: list[EventDict]
) -> None:
    port = closed_port()
    down = make_settings(
        tmp_path,
        {
            **settings.database_urls,
            "KG_AUTH_DATABASE_URL": f"postgresql://mg:s3cret-pw@127.0.0.1:{port}/mg",
        },
    )
    budget = await budget_of(down)
    (server,) = budget.servers
    assert (server.server, server.wanted) == (address(postgres_url), 60)
    assert logs == [
        {
            "event": "connection budget not checked: the server did not answer",
            "log_level": "warning",
            "server": f"127.0.0.1:{port}",
            "reason": "ConnectionRefusedError",
        }
    ]


async def test_a_hung_server_is_skipped_after_the_health_timeout(
    settings: Settings, tmp_path: Path
) -> None:
    async with silent_server() as port:
        hung = make_settings(
            tmp_path,
            {
                **settings.database_urls,
                "US_APP_DATABASE_URL": f"postgresql://mg@127.0.0.1:{port}/mg",
            },
            health_timeout=0.5,
        )
        started = asyncio.get_running_loop().time()
        budget = await budget_of(hung)
        elapsed = asyncio.get_running_loop().time() - started
    assert [(u.server, u.reason) for u in budget.unanswered] == [(f"127.0.0.1:{port}", "timeout")]
    assert len(budget.servers[0].pools) == 3
    assert 0.5 <= elapsed < 3


# --- marketgraph serve -----------------------------------------------------------------------


async def serve(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`python -m marketgraph serve ARGS` in a subprocess: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "marketgraph",
        "serve",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):  # a server that did start would never end
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("workers", ["flag", "environment"])
async def test_serve_refuses_over_budget_in_one_line(
    settings: Settings, postgres_url: URL, tmp_path: Path, workers: str
) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if "DATABASE_URL" not in name.upper() and name.upper() not in ("WEB_CONCURRENCY",)
    }
    env.update(settings.database_urls)
    env.update(DATA_DIR=str(tmp_path), REDIS_URL="redis://127.0.0.1:6379/15")
    args = ["--port", str(closed_port())]
    if workers == "flag":
        args += ["--workers", "2"]
    else:
        env["WEB_CONCURRENCY"] = "2"
    code, out, err = await serve(env, *args)
    max_connections, reserved = await server_limits(postgres_url)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"marketgraph: PostgreSQL {address(postgres_url)} is over its connection budget: "
        f"2 workers x 80 (4 pools of 5 + 15) = 160 connections, but it accepts "
        f"{max_connections - reserved} (max_connections {max_connections} - {reserved} "
        "reserved); lower DB_POOL_SIZE / DB_MAX_OVERFLOW (or their AUTH_DB_ / APP_DB_ "
        "overrides), run fewer workers (WEB_CONCURRENCY / --workers), or raise "
        "max_connections on the server (DB_BUDGET_CHECK=warn starts anyway)"
    ]
