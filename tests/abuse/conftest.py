"""A real server for the abuse suite: `python -m marketgraph serve` in a subprocess, on the
session's migrated stores (and Redis when TEST_REDIS_URL is set), with a customer, an admin
and products of both markets, and tokens a client would hold."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from marketgraph.auth.principal import ADMIN, MEMBER
from marketgraph.auth.tokens import TokenService
from marketgraph.db.databases import Databases
from marketgraph.settings import Settings
from tests.conftest import make_settings, truncate_all
from tests.factories import WEBHOOK_SECRET, create_customer, create_product, gid
from tests.helpers import closed_port, start_serve

JWT_SECRET = "abuse-suite-jwt-secret-of-some-length"
STARTUP_TIMEOUT = 30.0


@dataclass
class RealServer:
    """A running server and what a client of it holds."""

    base_url: str
    pid: int
    log: Path
    member_token: str
    admin_token: str
    member_gid: str
    product_gid: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def rss_mib(self) -> float:
        """The server process's resident memory."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def server_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """This environment with the session's stores, small pools and fixed secrets."""
    env = {
        name: value
        for name, value in os.environ.items()
        if "DATABASE_URL" not in name.upper() and not name.upper().endswith("REDIS_URL")
    }
    env.update(settings.database_urls)
    env.update(
        DATA_DIR=str(data_dir),
        ENVIRONMENT="development",
        LOG_LEVEL="WARNING",
        JWT_SECRET=JWT_SECRET,
        PAYMENT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        DB_POOL_SIZE="2",
        DB_MAX_OVERFLOW="4",
        QUERY_PLANNER=os.environ.get("TEST_QUERY_PLANNER", "on"),
    )
    redis_url = os.environ.get("TEST_REDIS_URL")
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


@pytest.fixture(scope="module")
def abuse_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("abuse")


@pytest.fixture(scope="module")
async def real_server(
    settings: Settings, _databases: Databases, abuse_dir: Path
) -> AsyncIterator[RealServer]:
    customer = await create_customer(_databases, "kg", balance_minor=10_000)
    admin = await create_customer(_databases, "kg", user_type="ADMIN")
    product = await create_product(_databases.store("kg", "app"), name="Tea")
    await create_product(_databases.store("us", "app"), name="Coffee")
    tokens = TokenService.from_settings(make_settings(abuse_dir, {}, jwt_secret=JWT_SECRET))
    port = closed_port()
    log = abuse_dir / "serve.log"
    process = await start_serve(port, abuse_dir, server_env(settings, abuse_dir / "data"), log)
    server = RealServer(
        base_url=f"http://127.0.0.1:{port}",
        pid=process.pid,
        log=log,
        member_token=tokens.issue(gid("User", "kg", customer.id), "kg", [MEMBER]).token,
        admin_token=tokens.issue(gid("User", "kg", admin.id), "kg", [ADMIN, MEMBER]).token,
        member_gid=gid("User", "kg", customer.id),
        product_gid=gid("Product", "kg", product.id),
    )
    try:
        await _wait_until_up(server, process)
        yield server
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
        await truncate_all(_databases)


async def _wait_until_up(server: RealServer, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        while True:
            if process.returncode is not None:
                pytest.fail(f"serve exited with {process.returncode}:\n{server.output()}")
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on /health after {STARTUP_TIMEOUT} s:\n{server.output()}")
            await asyncio.sleep(0.2)


def assert_sound(response: httpx.Response, *allowed: int) -> dict[str, Any]:
    """What the issue promises of every answer, whatever was sent: JSON, never a 5xx (a 503
    of load shedding aside), never INTERNAL_SERVER_ERROR. The decoded body."""
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.status_code,
        response.headers,
        response.text[:500],
    )
    body: dict[str, Any] = response.json()
    assert response.status_code < 500 or response.status_code == 503, response.text[:500]
    if allowed:
        assert response.status_code in allowed, (response.status_code, response.text[:500])
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors") or ()]
    assert "INTERNAL_SERVER_ERROR" not in codes, body
    assert all(codes), body  # every error carries its code
    return body
