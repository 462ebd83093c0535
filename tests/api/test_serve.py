"""The newcomer's path end to end: `marketgraph serve` with no database configured at all.

It must start the embedded PostgreSQL, migrate every store, load the demo
data, answer `/health` and GraphQL, and stop PostgreSQL again on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from marketgraph.db.embedded import EmbeddedPostgres, asyncpg_dsn
from tests.helpers import REQUEST_CODE, VERIFY_CODE, closed_port, start_serve

STARTUP_TIMEOUT = 60.0  # the promise: a working API within a minute
SHUTDOWN_TIMEOUT = 30.0
STORES = {"kg.auth", "kg.app", "us.auth", "us.app"}
MARKETS = "{ markets { code currency currencySymbol language phoneRegions } }"
BANNER_TIMEOUT = 10.0

pytestmark = pytest.mark.slow


def newcomer_env(data_dir: Path) -> dict[str, str]:
    """This environment without any database or Redis variable, data under `data_dir`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if "DATABASE_URL" not in name.upper() and not name.upper().endswith("REDIS_URL")
    }
    env.update(DATA_DIR=str(data_dir), ENVIRONMENT="development", LOG_FORMAT="console")
    return env


def postmaster_pid(pgdata: Path) -> int | None:
    """The running postmaster's pid, from the file PostgreSQL removes when it stops."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Server:
    process: asyncio.subprocess.Process
    base_url: str
    data_dir: Path
    log: Path

    @property
    def pgdata(self) -> Path:
        return (self.data_dir / "postgres").resolve()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@pytest.fixture
def serve_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mg-serve-") as tmp:
        yield Path(tmp)


@pytest.fixture
async def server(serve_dir: Path) -> AsyncIterator[Server]:
    """`python -m marketgraph serve` in a subprocess; killed (and its PostgreSQL stopped) after."""
    port = closed_port()
    log = serve_dir / "serve.log"
    process = await start_serve(port, serve_dir, newcomer_env(serve_dir / "data"), log)
    srv = Server(process, f"http://127.0.0.1:{port}", serve_dir / "data", log)
    try:
        yield srv
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        # A server that did not shut down cleanly leaves PostgreSQL running: stop it (fast mode).
        pid = postmaster_pid(srv.pgdata)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)


async def wait_until_healthy(srv: Server, http: httpx.AsyncClient) -> httpx.Response:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if srv.process.returncode is not None:
            pytest.fail(f"serve exited with {srv.process.returncode}:\n{srv.output()}")
        try:
            return await http.get("/health")
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on /health after {STARTUP_TIMEOUT} s:\n{srv.output()}")
            await asyncio.sleep(0.25)


async def wait_for_output(srv: Server, pattern: str) -> re.Match[str]:
    """The first match of `pattern` in the server's output, once it is there."""
    deadline = time.monotonic() + BANNER_TIMEOUT
    while (found := re.search(pattern, srv.log.read_text(errors="replace"))) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"no {pattern!r} in the output of serve:\n{srv.output()}")
        await asyncio.sleep(0.1)
    return found


async def sign_in_as_the_first_screen_says(srv: Server, http: httpx.AsyncClient) -> None:
    """The first screen names the URLs and a demo phone per market; with the console SMS
    backend, the code that phone gets is in the log, and signing in with it works."""
    sign_in = (await wait_for_output(srv, r"  Sign in .*\n")).group(0)
    output = srv.log.read_text(errors="replace")
    assert output.count("  GraphQL   ") == 1, output
    assert f"  GraphQL   {srv.base_url}/graphql\n" in output
    assert "StoreLocation(" not in output
    phones = {code: phone for phone, code in re.findall(r"(\+[\d -]+\d) \((\w+)\)", sign_in)}
    assert set(phones) == {"kg", "us"}, sign_in
    for code, phone in phones.items():
        e164 = re.sub(r"[^\d+]", "", phone)
        variables = {"phone": phone}
        answer = await http.post("/graphql", json={"query": REQUEST_CODE, "variables": variables})
        assert answer.json()["data"]["requestLoginCode"]["market"]["code"] == code, answer.text
        sent = await wait_for_output(srv, rf"login code for {re.escape(e164)}: (\d+)")
        variables["code"] = sent.group(1)
        answer = await http.post("/graphql", json={"query": VERIFY_CODE, "variables": variables})
        payload = answer.json()["data"]["verifyLoginCode"]
        assert payload["user"]["phone"] == e164, answer.text
        assert payload["market"]["code"] == code
        assert payload["accessToken"]
        # The seeded demo user, not one this sign-in created.
        assert payload["user"]["email"] == f"demo.{code}0001@example.com", answer.text


async def count_rows(data_dir: Path, database: str, table: str) -> int:
    """Rows of `<database>.<table>` read from the embedded server the CLI started (joined here)."""
    embedded = EmbeddedPostgres(data_dir)
    url = (await asyncio.to_thread(embedded.start)).set(database=database)
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            # Both names are this module's constants; identifiers cannot be parameters.
            sql = f'SELECT count(*) FROM "{database}".{table}'
            value = await conn.fetchval(sql)
            return int(value)
        finally:
            await conn.close()
    finally:
        # Leave the handle, so the server's own exit is the last one and stops PostgreSQL.
        await asyncio.to_thread(embedded.stop)


async def test_serve_on_the_embedded_default_works_and_cleans_up(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        health = await wait_until_healthy(server, http)
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "healthy", body
        assert set(body["databases"]) == STORES

        response = await http.post("/graphql", json={"query": MARKETS})
        assert response.status_code == 200, response.text
        markets = {m["code"]: m for m in response.json()["data"]["markets"]}
        assert markets["kg"] == {
            "code": "kg",
            "currency": "KGS",
            "currencySymbol": "сом",
            "language": "ru",
            "phoneRegions": ["KG"],
        }
        assert markets["us"] == {
            "code": "us",
            "currency": "USD",
            "currencySymbol": "$",
            "language": "en",
            "phoneRegions": ["US"],
        }

        graphiql = await http.get("/graphql", headers={"Accept": "text/html"})
        assert graphiql.status_code == 200
        assert "graphiql" in graphiql.text.lower()

        await sign_in_as_the_first_screen_says(server, http)

    # The demo data was loaded into each market's own databases.
    for database in ("kg_app", "us_app"):
        assert await count_rows(server.data_dir, database, "products") > 0
    for database in ("kg_auth", "us_auth"):
        assert await count_rows(server.data_dir, database, "users") > 0

    pid = postmaster_pid(server.pgdata)
    assert pid is not None, "the embedded PostgreSQL is not running"
    server.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(server.process.wait(), SHUTDOWN_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"serve did not stop within {SHUTDOWN_TIMEOUT} s of SIGTERM")
    assert code == 0, server.output()
    assert postmaster_pid(server.pgdata) is None, "the embedded PostgreSQL was left running"
