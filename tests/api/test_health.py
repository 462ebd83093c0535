"""The health endpoints over HTTP: liveness, readiness, the detailed view, and store outages."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import URL
from starlette.applications import Starlette

import marketgraph
from marketgraph.breaker import DEFAULT_COOLDOWN
from marketgraph.db import migrate
from marketgraph.db.databases import Databases
from marketgraph.db.embedded import EmbeddedPostgres, ensure_databases
from marketgraph.db.topology import StoreKey, Topology
from marketgraph.settings import Settings
from tests.conftest import (
    TEST_DB_PREFIX,
    drop_databases,
    make_settings,
    recreate_database,
    url_text,
)
from tests.helpers import closed_port, served, silent_server

STORES = {"kg.auth", "kg.app", "us.auth", "us.app"}


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app over its own engines for `settings`, as the lifespan would open them; closed after."""
    async with served(settings) as (http, _):
        yield http


def with_store_at(
    settings: Settings, tmp: Path, store_urls: dict[str, str], **extra: Any
) -> Settings:
    """The session's separate-mode placement with some stores moved elsewhere."""
    return make_settings(tmp, {**settings.database_urls, **store_urls}, **extra)


# --- everything up ----------------------------------------------------------------------------


async def test_health_is_healthy_with_every_store_and_kv(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "marketgraph"
    assert body["version"] == marketgraph.__version__
    assert set(body["databases"]) == STORES
    for key, entry in body["databases"].items():
        market, role = key.split(".")
        assert entry == {
            "status": "connected",
            "database_name": f"{TEST_DB_PREFIX}_{market}_{role}",
        }
    assert body["kv"] == {"status": "connected", "backend": "memory"}


async def test_ready_when_every_store_is_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["reasons"] == []
    assert set(body["stores"]) == STORES
    for key, entry in body["stores"].items():
        head = migrate.head_revision("auth" if key.endswith("auth") else "app")
        assert entry == {"status": "connected", "migration": {"current": head, "head": head}}


async def test_detailed_reports_every_store_in_full(
    client: httpx.AsyncClient, stores: Databases
) -> None:
    response = await client.get("/health/detailed")
    assert response.status_code == 200
    body = response.json()
    assert body["overall_status"] == "healthy"
    assert body["service"] == "marketgraph"
    assert body["version"] == marketgraph.__version__
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert body["kv"] == {"status": "connected", "backend": "memory"}
    assert set(body["stores"]) == STORES
    pool_ids = set()
    for key, entry in body["stores"].items():
        market, role = key.split(".")
        assert entry["status"] == "connected"
        assert "error" not in entry
        assert entry["operation_tests"] == {
            "connection": True,
            "read": True,
            "write": True,
            "transaction": True,
        }
        head = migrate.head_revision("auth" if role == "auth" else "app")
        assert head is not None
        assert entry["migration"] == {"current": head, "head": head}
        info = entry["database_info"]
        assert info["database_name"] == f"{TEST_DB_PREFIX}_{market}_{role}"
        assert info["schema"] == f"{market}_{role}"
        assert info["version"][0].isdigit()
        assert info["active_connections"] >= 1
        pool = entry["pool_status"]
        assert pool["pool_size"] == stores.settings.db_pool_size
        assert pool["shared_by"] == [key]
        assert pool["total"] == pool["checked_in"] + pool["checked_out"]
        assert pool["overflow"] >= 0
        assert entry["latency_ms"] >= 0
        pool_ids.add(pool["id"])
    # Separate databases: four engines, four pools.
    assert len(pool_ids) == 4
    assert "://" not in response.text

    # The write tests used a temporary table in a rolled-back transaction: nothing is left.
    for store in stores.stores:
        async with store.connect() as conn:
            leftovers = await conn.execute(
                text("SELECT count(*) FROM pg_class WHERE relname = 'mg_health_probe'")
            )
            assert leftovers.scalar_one() == 0


async def test_single_database_url_shows_four_stores_sharing_one_pool(
    shared_settings: Settings,
) -> None:
    async with serve(shared_settings) as http:
        assert (await http.get("/health")).json()["status"] == "healthy"
        body = (await http.get("/health/detailed")).json()
    assert body["overall_status"] == "healthy"
    assert set(body["stores"]) == STORES
    pools = [entry["pool_status"] for entry in body["stores"].values()]
    assert all(pool == pools[0] for pool in pools), "one engine: the same pool, the same numbers"
    assert sorted(pools[0]["shared_by"]) == sorted(STORES)
    assert pools[0]["pool_size"] == shared_settings.db_pool_size
    infos = [entry["database_info"] for entry in body["stores"].values()]
    assert {info["database_name"] for info in infos} == {f"{TEST_DB_PREFIX}_shared"}
    assert {info["schema"] for info in infos} == {"kg_auth", "kg_app", "us_auth", "us_app"}
    assert all(all(entry["operation_tests"].values()) for entry in body["stores"].values())


# --- access -----------------------------------------------------------------------------------


async def test_detailed_needs_credentials_in_production_but_health_does_not(
    app_factory: Callable[..., Starlette],
) -> None:
    app = app_factory(
        environment="production",
        jwt_secret=SecretStr("j" * 32),
        login_code_secret=SecretStr("c" * 32),
        sms_backend="webhook",
        sms_webhook_url="http://127.0.0.1:9/sms",
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        anonymous = await http.get("/health/detailed")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "UNAUTHENTICATED"
        # No token can carry the admin role until authentication exists.
        presented = await http.get("/health/detailed", headers={"Authorization": "Bearer x"})
        assert presented.status_code == 403
        assert presented.json()["error"] == "FORBIDDEN"
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/health/ready")).status_code == 200


# --- stores down ------------------------------------------------------------------------------


async def test_no_store_answering_is_unhealthy_and_never_shows_the_url(
    settings: Settings, tmp_path: Path
) -> None:
    url = f"postgresql://marketgraph:s3cret-pw@127.0.0.1:{closed_port()}/mg"
    down = make_settings(tmp_path, {"DATABASE_URL": url}, health_timeout=2.0)
    async with serve(down) as http:
        health = await http.get("/health")
        ready = await http.get("/health/ready")
        detailed = await http.get("/health/detailed")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    for entry in health.json()["databases"].values():
        assert entry == {
            "status": "unreachable",
            "database_name": "mg",
            "error": "ConnectionRefusedError",
        }
    assert ready.status_code == 503
    assert len(ready.json()["reasons"]) == 4
    assert detailed.status_code == 503
    assert detailed.json()["overall_status"] == "unhealthy"
    for response in (health, ready, detailed):
        assert "s3cret-pw" not in response.text
        assert "://" not in response.text
        assert "127.0.0.1" not in response.text


async def test_hung_stores_are_cut_off_at_the_timeout_concurrently(
    settings: Settings, tmp_path: Path
) -> None:
    async with silent_server() as port:
        hung = with_store_at(
            settings,
            tmp_path,
            {
                "US_AUTH_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/a",
                "US_APP_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/b",
            },
            health_timeout=1.0,
        )
        async with serve(hung) as http:
            started = time.monotonic()
            health = await http.get("/health")
            elapsed = time.monotonic() - started
            detailed = (await http.get("/health/detailed")).json()
    # Two hung stores probed one after the other would take two timeouts.
    assert elapsed < 1.8
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded"
    for key in ("us.auth", "us.app"):
        assert body["databases"][key]["status"] == "unreachable"
        assert body["databases"][key]["error"] == "timeout"
        assert detailed["stores"][key]["status"] == "unreachable"
        assert detailed["stores"][key]["operation_tests"]["connection"] is False
    for key in ("kg.auth", "kg.app"):
        assert body["databases"][key]["status"] == "connected"
        assert detailed["stores"][key]["status"] == "connected"
    assert detailed["overall_status"] == "degraded"


async def test_ready_is_503_naming_a_store_behind_head(
    settings: Settings, postgres_url: URL, tmp_path: Path
) -> None:
    name = f"{TEST_DB_PREFIX}_health_behind"
    behind_url = await recreate_database(postgres_url, name)
    try:
        behind = with_store_at(settings, tmp_path, {"US_APP_DATABASE_URL": url_text(behind_url)})
        location = Topology.resolve(behind.markets.codes, behind.database_urls)[
            StoreKey("us", "app")
        ]
        await migrate.upgrade(location)
        await migrate.downgrade(location, "base")
        head = migrate.head_revision("app")
        async with serve(behind) as http:
            ready = await http.get("/health/ready")
            health = await http.get("/health")
            detailed = (await http.get("/health/detailed")).json()
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not_ready"
        assert body["reasons"] == [f"us.app: at migration base, head is {head}"]
        assert body["stores"]["us.app"]["migration"] == {"current": None, "head": head}
        # Being behind is not being down: load balancers keep sending traffic.
        assert health.status_code == 200
        assert health.json()["status"] == "healthy"
        assert detailed["stores"]["us.app"]["migration"] == {"current": None, "head": head}
    finally:
        await drop_databases(postgres_url, [name])


class Cluster:
    """A second PostgreSQL cluster this test stops and restarts on the same data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: EmbeddedPostgres | None = None

    async def start(self) -> URL:
        self._server = EmbeddedPostgres(self.data_dir)
        return await asyncio.to_thread(self._server.start)

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
            self._server = None


@pytest.fixture
def second_cluster() -> Iterator[Cluster]:
    """A cluster of its own in a temporary directory, always stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="mg-outage-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            yield cluster
        finally:
            if cluster._server is not None:
                cluster._server.stop()


@pytest.mark.slow
async def test_store_outage_degrades_health_and_it_recovers_without_restart(
    settings: Settings, second_cluster: Cluster, tmp_path: Path
) -> None:
    server = await second_cluster.start()
    await ensure_databases(server, ["us_app"])
    outage = with_store_at(
        settings,
        tmp_path,
        {"US_APP_DATABASE_URL": url_text(server.set(database="us_app"))},
        health_timeout=2.0,
        db_pool_timeout=2.0,
    )
    location = Topology.resolve(outage.markets.codes, outage.database_urls)[StoreKey("us", "app")]
    await migrate.upgrade(location)

    async with serve(outage) as http:
        before = await http.get("/health")
        assert before.status_code == 200
        assert before.json()["status"] == "healthy"

        await second_cluster.stop()
        started = time.monotonic()
        during = await http.get("/health")
        elapsed = time.monotonic() - started
        assert elapsed < outage.health_timeout + 0.5
        assert during.status_code == 200
        body = during.json()
        assert body["status"] == "degraded"
        assert body["databases"]["us.app"]["status"] == "unreachable"
        assert body["databases"]["us.app"]["error"]
        assert body["databases"]["us.app"]["database_name"] == "us_app"
        for key in STORES - {"us.app"}:
            assert body["databases"][key]["status"] == "connected"
        not_ready = await http.get("/health/ready")
        assert not_ready.status_code == 503
        assert [r.split(":")[0] for r in not_ready.json()["reasons"]] == ["us.app"]
        assert str(second_cluster.data_dir) not in during.text + not_ready.text

        # Back on the same data directory: the same app finds it again, no restart, once
        # the store's breaker has cooled down (it refuses at once for that moment).
        await second_cluster.start()
        deadline = time.monotonic() + DEFAULT_COOLDOWN + 1
        after = await http.get("/health")
        while after.json()["status"] != "healthy" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            after = await http.get("/health")
        assert after.status_code == 200
        assert after.json()["status"] == "healthy"
        assert (await http.get("/health/ready")).status_code == 200
