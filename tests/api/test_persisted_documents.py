"""Persisted documents: Apollo's automatic persisted queries (miss, register, hit, a GET a
CDN may cache, a wrong hash) on both paths, shared by workers through Redis; and trusted
documents loaded by `marketgraph documents add`, the only documents a trusted server runs,
planned like any other read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from marketgraph.cli import cli
from marketgraph.db.databases import Databases
from marketgraph.kv import RedisStore
from tests.factories import create_product
from tests.helpers import http_client, run_command

GRJ = "application/graphql-response+json"
PRODUCTS = "query Products { products(first: 5) { edges { node { name } } } }"
HASH = hashlib.sha256(PRODUCTS.encode()).hexdigest()
KG = {"X-Market": "kg"}


def apq(digest: str = HASH) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


def planned(app: Starlette) -> float:
    """How many requests the planner answered so far."""
    value = app.state.metrics.registry.get_sample_value(
        "marketgraph_planner_requests_total", {"outcome": "planned"}
    )
    return value or 0.0


@pytest.fixture
async def tea(stores: Databases) -> None:
    await create_product(stores.store("kg", "app"), name="Чай")


@pytest.fixture(params=["on", "off"], ids=["planner", "strawberry"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def http(
    app_factory: Callable[..., Starlette], mode: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(query_planner=mode, persisted_documents_manifest=tmp_path / "none.json")
    async with http_client(app) as client:
        yield client


def names(body: dict[str, Any]) -> list[str]:
    assert "errors" not in body, body
    return [edge["node"]["name"] for edge in body["data"]["products"]["edges"]]


async def test_a_hash_alone_is_unknown_until_the_document_is_sent_with_it(
    http: httpx.AsyncClient, tea: None
) -> None:
    miss = await http.post("/graphql", json={"extensions": apq()}, headers=KG)
    assert miss.status_code == 200
    body = miss.json()
    assert "data" not in body
    [error] = body["errors"]
    # Apollo's client looks for this message (older versions) or this code.
    assert error["message"] == "PersistedQueryNotFound"
    assert error["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    spec = await http.post("/graphql", json={"extensions": apq()}, headers={**KG, "Accept": GRJ})
    assert spec.status_code == 400
    register = await http.post(
        "/graphql", json={"query": PRODUCTS, "extensions": apq()}, headers=KG
    )
    assert names(register.json()) == ["Чай"]
    hit = await http.post("/graphql", json={"extensions": apq()}, headers=KG)
    assert names(hit.json()) == ["Чай"]


async def test_a_read_by_hash_over_get_may_be_cached_when_anonymous(
    http: httpx.AsyncClient, tea: None
) -> None:
    await http.post("/graphql", json={"query": PRODUCTS, "extensions": apq()}, headers=KG)
    params = {"extensions": json.dumps(apq())}
    hit = await http.get("/graphql", params=params, headers=KG)
    assert hit.status_code == 200
    assert names(hit.json()) == ["Чай"]
    assert hit.headers["cache-control"] == "public, max-age=60"
    assert "X-Market" in hit.headers["vary"]
    # A caller's own answer is never stored by a shared cache.
    signed = await http.get(
        "/graphql", params=params, headers={**KG, "Authorization": "Bearer not-a-token"}
    )
    assert signed.headers["cache-control"] == "private, no-store"
    # Neither is one with errors, nor a miss.
    unknown = await http.get("/graphql", params={"extensions": json.dumps(apq("0" * 64))})
    assert unknown.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert unknown.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize(
    ("extensions", "code"),
    [
        (apq("0" * 64), "BAD_USER_INPUT"),  # not this document's hash
        (apq("xyz"), "BAD_USER_INPUT"),
        ({"persistedQuery": {"version": 2, "sha256Hash": HASH}}, "PERSISTED_QUERY_NOT_SUPPORTED"),
        ({"persistedQuery": "yes"}, "PERSISTED_QUERY_NOT_SUPPORTED"),
    ],
    ids=["mismatch", "not-hex", "version", "shape"],
)
async def test_a_wrong_hash_is_refused_and_nothing_is_registered(
    http: httpx.AsyncClient, extensions: dict[str, Any], code: str
) -> None:
    response = await http.post(
        "/graphql", json={"query": PRODUCTS, "extensions": extensions}, headers=KG
    )
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == code
    after = await http.post("/graphql", json={"extensions": apq()}, headers=KG)
    assert after.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


async def test_an_invalid_document_is_not_registered(http: httpx.AsyncClient) -> None:
    junk = "{ nosuchfield }"
    digest = hashlib.sha256(junk.encode()).hexdigest()
    sent = await http.post("/graphql", json={"query": junk, "extensions": apq(digest)})
    assert "nosuchfield" in sent.json()["errors"][0]["message"]
    again = await http.post("/graphql", json={"extensions": apq(digest)})
    assert again.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


async def test_off_refuses_persisted_queries_so_clients_send_documents(
    app_factory: Callable[..., Starlette], tea: None
) -> None:
    async with http_client(app_factory(persisted_documents="off")) as http:
        refused = await http.post("/graphql", json={"extensions": apq()}, headers=KG)
        assert refused.json()["errors"][0]["message"] == "PersistedQueryNotSupported"
        plain = await http.post("/graphql", json={"query": PRODUCTS}, headers=KG)
        assert names(plain.json()) == ["Чай"]


async def test_workers_share_registrations_through_redis(
    app_factory: Callable[..., Starlette], tmp_path: Path, tea: None
) -> None:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set")
    kv = RedisStore(url, prefix=f"mgtest:apq:{os.getpid()}:")
    manifest = tmp_path / "none.json"
    try:
        first, second = (app_factory(kv=kv, persisted_documents_manifest=manifest) for _ in "ab")
        async with http_client(first) as one, http_client(second) as other:
            await one.post("/graphql", json={"query": PRODUCTS, "extensions": apq()}, headers=KG)
            hit = await other.post("/graphql", json={"extensions": apq()}, headers=KG)
        assert names(hit.json()) == ["Чай"]
    finally:
        await kv.delete_prefix("")
        await kv.close()


# --- trusted documents -----------------------------------------------------------------------


async def add(manifest: Path, target: Path, content: Any) -> tuple[int, str]:
    """`marketgraph documents add MANIFEST` (holding `content`) with
    PERSISTED_DOCUMENTS_MANIFEST=target: its exit code and output."""
    await asyncio.to_thread(manifest.write_text, json.dumps(content))
    result = await run_command(
        cli, "documents", "add", str(manifest), env={"PERSISTED_DOCUMENTS_MANIFEST": str(target)}
    )
    return result.exit_code, result.output


async def test_a_trusted_server_runs_only_its_manifest(
    app_factory: Callable[..., Starlette], tmp_path: Path, mode: str, tea: None
) -> None:
    target = tmp_path / "trusted.json"
    # graphql-codegen's client preset writes {sha256: document}; Relay {id: document}.
    code, output = await add(tmp_path / "client.json", target, {HASH: PRODUCTS})
    assert code == 0, output
    assert "1 added" in output
    app = app_factory(
        query_planner=mode, persisted_documents="trusted", persisted_documents_manifest=target
    )
    async with http_client(app) as http:
        by_id = await http.post("/graphql", json={"documentId": HASH}, headers=KG)
        assert names(by_id.json()) == ["Чай"]
        by_apq = await http.post("/graphql", json={"extensions": apq()}, headers=KG)
        assert names(by_apq.json()) == ["Чай"]
        as_text = await http.post("/graphql", json={"query": PRODUCTS}, headers=KG)
        assert names(as_text.json()) == ["Чай"]
        other = await http.post(
            "/graphql", json={"query": "{ markets { code } }"}, headers={"Accept": GRJ}
        )
        assert other.status_code == 403
        body = other.json()
        assert "data" not in body
        assert body["errors"][0]["extensions"]["code"] == "PERSISTED_DOCUMENT_REQUIRED"
        # APQ registration is no way in.
        markets = "{ markets { code } }"
        digest = hashlib.sha256(markets.encode()).hexdigest()
        sneak = await http.post("/graphql", json={"query": markets, "extensions": apq(digest)})
        assert sneak.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        unknown = await http.post("/graphql", json={"documentId": "nope"})
        assert unknown.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    if mode == "on":
        assert planned(app) == 3  # each trusted read was planned, not left to Strawberry


async def test_documents_added_later_run_without_a_restart(
    app_factory: Callable[..., Starlette], tmp_path: Path, tea: None
) -> None:
    target = tmp_path / "trusted.json"
    app = app_factory(persisted_documents="trusted", persisted_documents_manifest=target)
    async with http_client(app) as http:
        before = await http.post("/graphql", json={"documentId": "products-v1"}, headers=KG)
        assert before.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        # Apollo's manifest shape, as its generate-persisted-query-manifest writes it.
        apollo = {
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [
                {"id": "products-v1", "name": "Products", "type": "query", "body": PRODUCTS}
            ],
        }
        code, output = await add(tmp_path / "apollo.json", target, apollo)
        assert code == 0, output
        os.utime(target, (0, 0))  # a new stamp even within the file system's time grain
        after = await http.post("/graphql", json={"documentId": "products-v1"}, headers=KG)
        assert names(after.json()) == ["Чай"]


async def test_a_manifest_with_an_invalid_document_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "trusted.json"
    code, output = await add(
        tmp_path / "bad.json", target, {"good": PRODUCTS, "stale": "{ products { sku2 } }"}
    )
    assert code == 1
    assert "stale: " in output and "sku2" in output
    assert not target.exists()
