"""Many processes, one Redis and one PostgreSQL: what one `serve` process counts, revokes or
sends, every other one knows.

Two servers as operators run them, each a `python -m marketgraph serve` subprocess with a
data directory of its own (two hosts): `one` with a single worker, `two` with
`--workers 2` (uvicorn's process manager); both on the session's migrated stores and on a
Redis database of their own (flushed). And `serve --workers 2` on the embedded default:
one PostgreSQL for both workers, gone when serve exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis.asyncio as redis

from marketgraph.app import create_app
from marketgraph.auth.login_codes import TOO_MANY_CODES
from marketgraph.db.databases import Databases
from marketgraph.kv import RedisStore
from marketgraph.settings import ConfigError, Settings
from tests.conftest import make_settings, truncate_all
from tests.helpers import (
    LOGOUT,
    ServeProcess,
    allow_resend,
    data,
    error,
    error_code,
    gql,
    phone_sign_in,
    request_code,
    serve_env,
    serve_process,
)

pytestmark = pytest.mark.slow

PHONE_HOURLY = 2  # LOGIN_CODE_PHONE_HOURLY of both servers
VIEWER = "{ viewer { id phone market { code } wallet { balance { currency } } } }"
CURRENCY = {"kg": "KGS", "us": "USD"}
MARKETS = "{ markets { code currency } }"


def redis_url_of_its_own() -> str:
    """TEST_REDIS_URL's server, the database below its own: the servers' keys carry a fixed
    prefix, so they get a database that can be flushed. Skipped without Redis, except on
    CI, where Redis is expected."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        reason = (
            "TEST_REDIS_URL is not set: separate processes share limits, revocations and "
            "login codes only through Redis"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(database - 1) % 16}"))


async def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@dataclass
class Servers:
    one: ServeProcess  # serve: one worker
    two: ServeProcess  # serve --workers 2
    kv: RedisStore  # what the servers keep, as they name it (for the resend wait)


@pytest.fixture(scope="module")
async def servers(
    settings: Settings, _databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Servers]:
    redis_url = redis_url_of_its_own()
    await flush(redis_url)
    directory = tmp_path_factory.mktemp("processes")
    common = {
        **settings.database_urls,
        "REDIS_URL": redis_url,
        "LOGIN_CODE_PHONE_HOURLY": str(PHONE_HOURLY),
    }
    kv = RedisStore(redis_url)
    try:
        env_one, env_two = (serve_env(directory / name, **common) for name in ("one", "two"))
        async with (
            serve_process(env_one, directory) as one,
            serve_process(env_two, directory, "--workers", "2") as two,
        ):
            await asyncio.gather(one.wait_until_ready(), two.wait_until_ready())
            yield Servers(one, two, kv)
            codes = await asyncio.gather(one.terminate(), two.terminate())
            assert codes == [0, 0], (one.output(), two.output())
    finally:
        await kv.close()
        await flush(redis_url)
        await truncate_all(_databases)


@contextlib.asynccontextmanager
async def clients(servers: Servers) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A client of each server; the second's requests each on a new connection, so that
    both of its workers take some (the kernel picks the worker that accepts)."""
    async with (
        httpx.AsyncClient(base_url=servers.one.base_url, timeout=10) as one,
        httpx.AsyncClient(
            base_url=servers.two.base_url, timeout=10, headers={"Connection": "close"}
        ) as two,
    ):
        yield one, two


async def test_a_login_code_limit_hit_on_one_process_holds_on_the_others(
    servers: Servers,
) -> None:
    phone = "+996700000011"
    async with clients(servers) as (one, two):
        data(await request_code(one, phone))
        await allow_resend(servers.kv, phone)  # the hourly limit is the one under test
        data(await request_code(two, phone))
        await allow_resend(servers.kv, phone)
        # Each process alone has sent at most one code: only the shared count refuses.
        for client in (one, two, two):
            refused = await request_code(client, phone)
            assert error_code(refused) == "RATE_LIMITED", refused
            assert error(refused)["message"] == TOO_MANY_CODES
            assert error(refused)["extensions"]["retryAfter"] > 60  # the hour, not the resend


async def test_b_a_logout_on_one_process_is_honoured_by_the_others(servers: Servers) -> None:
    phone = "+996700000012"
    async with clients(servers) as (one, two):
        # The code asked of one process is verified by another: login codes are shared too.
        session = await phone_sign_in(one, two, servers.one, phone)
        token = session["accessToken"]
        for client in (one, two, two):
            assert data(await gql(client, VIEWER, token=token))["viewer"]["phone"] == phone
        assert data(await gql(two, LOGOUT, {"token": session["refreshToken"]}, token=token))
        for client in (one, one, two, two, two, two):
            refused = await gql(client, VIEWER, token=token)
            assert error_code(refused) == "UNAUTHENTICATED", refused
            assert "revoked" in error(refused)["message"]


async def test_c_requests_alternating_markets_and_processes_get_their_own_market(
    servers: Servers,
) -> None:
    phones = {"kg": "+996700000013", "us": "+12125550113"}
    async with clients(servers) as (one, two):
        users: dict[str, dict[str, Any]] = {}
        for market, phone in phones.items():
            users[market] = await phone_sign_in(two, one, servers.two, phone)
            assert users[market]["market"]["code"] == market

        limit = asyncio.Semaphore(16)
        wrong: list[tuple[str, Any]] = []

        async def ask(i: int) -> None:
            market = ("kg", "us")[i % 2]
            client = (one, one, two, two)[i % 4]  # each market on both servers
            user = users[market]
            async with limit:
                body = await gql(client, VIEWER, token=user["accessToken"])
            got = data(body)["viewer"]
            expected = {
                "id": user["user"]["id"],
                "phone": phones[market],
                "market": {"code": market},
                "wallet": {"balance": {"currency": CURRENCY[market]}},
            }
            if got != expected:
                wrong.append((market, got))

        await asyncio.gather(*(ask(i) for i in range(500)))
    assert wrong == []


async def test_a_worker_of_several_refuses_to_start_without_redis(
    settings: Settings, tmp_path: Path
) -> None:
    """For deployments that run uvicorn or gunicorn themselves (serve refuses earlier): the
    lifespan fails, so uvicorn's supervisor stops instead of starting workers again."""
    app = create_app(make_settings(tmp_path, settings.database_urls, web_concurrency=3))
    with pytest.raises(ConfigError, match=r"^WEB_CONCURRENCY=3 needs REDIS_URL: "):
        async with app.router.lifespan_context(app):
            pass


def postmaster(pgdata: Path) -> tuple[int, Path] | None:
    """The running postmaster's pid and socket directory, from the file PostgreSQL removes
    when it stops."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), Path(lines[4])
    except (OSError, IndexError, ValueError):
        return None


def running_process(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def processes_on(pgdata: Path) -> list[int]:
    """Processes whose command line names `pgdata` (a postgres server on it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(pgdata).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


@pytest.fixture
def serve_dir() -> Iterator[Path]:
    """A directory PostgreSQL's own user can reach (pytest's are its runner's alone: pytest
    makes their root private again whenever a run starts)."""
    with tempfile.TemporaryDirectory(prefix="mg-workers-") as tmp:
        yield Path(tmp)


async def test_d_workers_on_the_embedded_default_share_one_postgresql_that_stops_with_serve(
    serve_dir: Path,
) -> None:
    redis_url = redis_url_of_its_own()
    await flush(redis_url)
    data_dir = serve_dir / "data"
    pgdata = data_dir / "postgres"
    # No database variable: the embedded default. Small pools: two workers' pools must
    # fit the embedded server's max_connections (the start-up budget check).
    env = serve_env(data_dir, REDIS_URL=redis_url)
    try:
        async with serve_process(env, serve_dir, "--workers", "2") as server:
            await server.wait_until_ready(within=60)
            running = postmaster(pgdata)
            assert running is not None, server.output()
            pid, socket_dir = running
            async with httpx.AsyncClient(
                base_url=server.base_url, timeout=10, headers={"Connection": "close"}
            ) as http:
                for _ in range(6):  # each on a new connection, which either worker may take
                    answer = await http.post("/graphql", json={"query": MARKETS})
                    assert answer.status_code == 200, answer.text
                    assert {m["code"] for m in answer.json()["data"]["markets"]} == {"kg", "us"}
                    health = (await http.get("/health")).json()
                    assert health["status"] == "healthy", health
            assert len(processes_on(pgdata.resolve())) >= 1  # the postmaster and its backends

            assert await server.terminate() == 0, server.output()
            assert postmaster(pgdata) is None, "postmaster.pid is left: PostgreSQL still runs"
            assert processes_on(pgdata.resolve()) == [], server.output()
            assert not list(socket_dir.glob(".s.PGSQL.*")), "the socket is left"
            assert not running_process(pid)
    finally:
        left = postmaster(pgdata)
        if left is not None:  # a failed run: stop it (fast shutdown), not leave it running
            with contextlib.suppress(ProcessLookupError):
                os.kill(left[0], signal.SIGINT)
        await flush(redis_url)
