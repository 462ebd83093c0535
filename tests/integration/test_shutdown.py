"""Graceful shutdown of `serve` (marketgraph/draining.py): SIGTERM while 50 slow reads are in
flight.

The reads are slow honestly: the server reaches PostgreSQL through a fault proxy
(tests/faults.py) that holds every byte (`blackhole`) until the test lets them pass, so
the reads wait on their store as on a frozen database. Every answer must be complete
JSON: the read's data, or a JSON 503; none cut mid-body, no plain-text 500. While the
server drains, `/health/ready` says "draining" with 503, a new request is a JSON 503,
metrics are still answered, and serve exits 0 once the drain and the shutdown are over.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from marketgraph.db.databases import Databases
from marketgraph.settings import Settings
from tests.factories import create_product
from tests.faults import FaultProxy, postgres_upstream, through
from tests.helpers import ServeProcess, serve_env, serve_process

pytestmark = pytest.mark.slow

READS = 50
READ = "{ products(first: 5) { edges { node { id name price { currency } } } } }"
SETTLE_SECONDS = 1.5  # for the reads to reach the server and wait on their store


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the PostgreSQL server of the session's stores."""
    upstreams = {postgres_upstream(make_url(url)) for url in settings.database_urls.values()}
    assert len(upstreams) == 1, upstreams
    proxy = await FaultProxy(*upstreams.pop()).start()
    try:
        yield proxy
    finally:
        await proxy.close()


@contextlib.asynccontextmanager
async def started(
    settings: Settings, proxy: FaultProxy, directory: Path, grace: float
) -> AsyncIterator[ServeProcess]:
    """serve (one worker) on the session's stores through `proxy`, SHUTDOWN_GRACE=`grace`;
    timeouts long enough that the held reads wait rather than fail."""
    urls = {
        name: through(make_url(url), proxy).render_as_string(hide_password=False)
        for name, url in settings.database_urls.items()
    }
    env = serve_env(
        directory / "data",
        **urls,
        SHUTDOWN_GRACE=str(grace),
        DB_CONNECT_TIMEOUT="20",
        DB_STATEMENT_TIMEOUT="20",
        DB_POOL_TIMEOUT="20",
    )
    async with serve_process(env, directory) as server:
        await server.wait_until_ready()
        yield server


async def read(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/graphql", json={"query": READ}, headers={"X-Market": "kg"})


def complete_json(response: httpx.Response) -> dict[str, Any]:
    """The body of an answer that arrived whole, as JSON (httpx raises on a body cut short
    of its Content-Length)."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert int(response.headers["content-length"]) == len(response.content)
    body: dict[str, Any] = response.json()
    return body


def shutting_down(response: httpx.Response, message: str) -> None:
    """A JSON 503 SERVICE_UNAVAILABLE whose connection closes, with Retry-After."""
    assert response.status_code == 503, response.text
    (error,) = complete_json(response)["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE", error
    assert message in error["message"], error
    assert response.headers["retry-after"] == "1"
    assert response.headers["connection"] == "close"


async def hold_reads(
    server: ServeProcess, proxy: FaultProxy, http: httpx.AsyncClient
) -> list[asyncio.Task[httpx.Response]]:
    """READS reads in flight, each on its connection, held at their store; then SIGTERM,
    once they are all in."""
    warm = await read(http)
    assert warm.status_code == 200, warm.text
    await proxy.set_mode("blackhole")
    reads = [asyncio.create_task(read(http)) for _ in range(READS)]
    await asyncio.sleep(SETTLE_SECONDS)
    assert not any(task.done() for task in reads), "a read was answered while its store hung"
    server.process.send_signal(signal.SIGTERM)
    began = await server.wait_for_output(r"draining started .*in_flight=(\d+)")
    assert int(began.group(1)) == READS, server.output()
    return reads


def drain_outcome(server: ServeProcess) -> dict[str, int]:
    ended = re.search(r"draining ended .*", server.output(tail=1 << 30))
    assert ended is not None, server.output()
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b", ended.group(0))}


async def test_sigterm_lets_the_reads_in_flight_finish_and_refuses_new_ones(
    settings: Settings, stores: Databases, proxy: FaultProxy, tmp_path: Path
) -> None:
    for n in range(5):
        await create_product(stores.store("kg", "app"), name=f"Tea {n}")
    async with started(settings, proxy, tmp_path, grace=15) as server:
        limits = httpx.Limits(max_connections=READS + 10)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as http:
            reads = await hold_reads(server, proxy, http)

            # Draining: the listener still answers, so a load balancer hears it is going.
            ready = await http.get("/health/ready")
            assert ready.status_code == 503, ready.text
            assert complete_json(ready)["status"] == "draining"
            assert complete_json(ready)["inFlight"] == READS
            assert (await http.get("/metrics")).status_code == 200
            shutting_down(await read(http), "shutting down")

            await proxy.set_mode("forward")  # the store answers again: the reads finish
            answers = await asyncio.gather(*reads)
        for answer in answers:
            assert answer.status_code == 200, answer.text
            products = complete_json(answer)["data"]["products"]["edges"]
            assert len(products) == 5
            assert answer.headers["connection"] == "close"  # the next request: elsewhere
        assert await server.terminate(within=15) == 0, server.output()
    outcome = drain_outcome(server)
    assert outcome["finished"] == READS
    assert outcome["refused"] == 1
    assert outcome["cut"] == 0


async def test_reads_still_waiting_when_the_grace_ends_are_answered_503(
    settings: Settings, stores: Databases, proxy: FaultProxy, tmp_path: Path
) -> None:
    async with started(settings, proxy, tmp_path, grace=1) as server:
        limits = httpx.Limits(max_connections=READS + 10)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as http:
            reads = await hold_reads(server, proxy, http)
            # The store never answers within the grace: each read is answered all the same.
            answers = await asyncio.wait_for(asyncio.gather(*reads), 10)
            for answer in answers:
                shutting_down(answer, "shut down before this request finished")
            await proxy.set_mode("forward")  # so the pools close promptly
        assert await server.terminate(within=15) == 0, server.output()
    assert "Exception in ASGI application" not in server.output(tail=1 << 30)
    outcome = drain_outcome(server)
    assert outcome["finished"] == 0
    assert outcome["cut"] == READS
