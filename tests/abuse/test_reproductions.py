"""The abuse issue's reproductions against a real server (`marketgraph serve`): every one is
answered promptly with JSON and the right refusal, never a 5xx, an INTERNAL_SERVER_ERROR or a
dropped connection, and oversized bodies do not grow the server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from marketgraph.webhooks import sign
from tests.abuse.conftest import RealServer, assert_sound
from tests.factories import WEBHOOK_SECRET

pytestmark = pytest.mark.slow

MIB = 1024 * 1024

HOSTILE_DOCUMENTS = {
    "14 KB of repeated operations": " ".join(
        "{ products(first:1){edges{node{name}}} }" for _ in range(300)
    ),
    "46 KB of repeated operations": " ".join(
        "{ products(first:1){edges{node{name}}} }" for _ in range(1000)
    ),
    "2,000 distinct fragments": "{ products(first:1){edges{node{"
    + " ".join(f"...F{i}" for i in range(2000))
    + "}}}}"
    + " ".join(f"fragment F{i} on Product {{ name }}" for i in range(2000)),
    "50,000 duplicated fields": "{ products(first:1){edges{node{" + " name" * 50_000 + "}}}}",
    "100,000 aliases": "{ " + " ".join(f"a{i}: markets {{ code }}" for i in range(100_000)) + "}",
    "1 MB of comments": "#" + "x" * (MIB - 100) + "\n{ markets { code } }",
    "fragment bomb": "{ ...F0 } "
    + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(40))
    + " fragment F40 on Query { markets { code } }",
    "nested 5,000 deep": "{" + "viewer { cart { " * 1250 + "}" * 2500 + "}",
}


@pytest.mark.parametrize("name", list(HOSTILE_DOCUMENTS))
async def test_a_hostile_document_is_refused_at_once(real_server: RealServer, name: str) -> None:
    document = HOSTILE_DOCUMENTS[name]
    async with httpx.AsyncClient(base_url=real_server.base_url, timeout=10) as http:
        started = time.monotonic()
        response = await http.post("/graphql", json={"query": document})
        took = time.monotonic() - started
        again = await http.post("/graphql", json={"query": document})
    for answer in (response, again):
        body = assert_sound(answer, 200, 413)
        if answer.status_code == 200:
            assert "data" not in body  # a request error: nothing executed
            assert body["errors"][0]["extensions"]["code"] in (
                "QUERY_TOO_COMPLEX",
                "BAD_USER_INPUT",
            )
    assert took < 1.0, took


async def test_a_trivial_query_is_not_held_while_hostile_documents_arrive(
    real_server: RealServer,
) -> None:
    """The issue's 5 s delay of a trivial query behind three costly documents, gone."""
    async with httpx.AsyncClient(base_url=real_server.base_url, timeout=10) as http:

        async def flood() -> None:
            for name, document in HOSTILE_DOCUMENTS.items():
                assert_sound(await http.post("/graphql", json={"query": f"{document} # {name}"}))

        attackers = [asyncio.create_task(flood()) for _ in range(3)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        probe = await http.post("/graphql", json={"query": "{ markets { code } }"})
        took = time.monotonic() - started
        await asyncio.gather(*attackers)
    assert assert_sound(probe, 200)["data"]["markets"]
    assert took < 1.0, took  # idle, a few milliseconds; the issue measured 5 s


async def _chunks(total: int, size: int = MIB) -> AsyncIterator[bytes]:
    """`total` bytes of body, streamed: never held whole by the client either."""
    piece = b" " * size
    for start in range(0, total, size):
        yield piece[: total - start]


async def test_oversized_bodies_are_413_without_growing_the_server(
    real_server: RealServer,
) -> None:
    before = real_server.rss_mib()
    json_type = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=real_server.base_url, timeout=30) as http:
        declared = await http.post(
            "/graphql",
            content=_chunks(300 * MIB),
            headers={**json_type, "content-length": str(300 * MIB)},
        )
        chunked = await http.post("/graphql", content=_chunks(300 * MIB), headers=json_type)
        comments = [
            await http.post(
                "/graphql",
                content=orjson.dumps({"query": "#" + "x" * size + "\n{ markets { code } }"}),
                headers=json_type,
            )
            for size in (2 * MIB, 10 * MIB, 50 * MIB)
        ]
        webhook = await http.post("/webhooks/payments", content=b"{}" + b" " * (100 * 1024))
        after_all = await http.post("/graphql", json={"query": "{ markets { code } }"})
    for response in (declared, chunked, *comments, webhook):
        assert_sound(response, 413)
    assert assert_sound(after_all, 200)["data"]
    grown = real_server.rss_mib() - before
    assert grown < 64, f"the server grew by {grown:.0f} MiB"


async def test_a_refused_document_sent_again_and_again_does_not_grow_the_server(
    real_server: RealServer,
) -> None:
    """Refusals are cached: each repeat must cost nothing, memory included (a cached error
    re-raised used to keep every request's frames, and its 250 KB document, alive)."""
    document = {"query": HOSTILE_DOCUMENTS["50,000 duplicated fields"]}
    async with httpx.AsyncClient(base_url=real_server.base_url, timeout=10) as http:
        assert_sound(await http.post("/graphql", json=document), 200)
        before = real_server.rss_mib()
        for _ in range(400):
            assert_sound(await http.post("/graphql", json=document), 200)
    grown = real_server.rss_mib() - before
    assert grown < 32, f"400 repeats grew the server by {grown:.0f} MiB"


async def test_oversized_headers_are_431(real_server: RealServer) -> None:
    async with httpx.AsyncClient(base_url=real_server.base_url, timeout=10) as http:
        for size in (20_000, 1_000_000):
            response = await http.post(
                "/graphql", json={"query": "{ markets { code } }"}, headers={"X-Big": "x" * size}
            )
            assert_sound(response, 431)
        assert assert_sound(await http.get("/health"), 200)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"null", 400),
        (b"[]", 400),
        (
            b'{"query": "{ markets { code } }", "variables": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}",
            400,
        ),
        (b'{"query": "query A { markets { code } } query B { markets { name } }"}', 200),
        (b'{"query": "{ products(search: \\"\\u0000\\") { edges { cursor } } }"}', 200),
        (
            b'{"query": "query ($s: String) { products(search: $s) { edges { cursor } } }",'
            b' "variables": {"s": "\\ud800"}}',
            400,
        ),
    ],
    ids=["null", "list", "variables-100000-deep", "two-operations", "nul-literal", "surrogate"],
)
async def test_bad_requests_are_json_refusals(
    real_server: RealServer, body: bytes, status: int
) -> None:
    async with httpx.AsyncClient(base_url=real_server.base_url, timeout=10) as http:
        response = await http.post(
            "/graphql", content=body, headers={"content-type": "application/json"}
        )
    answer = assert_sound(response, status)
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def _event(user_gid: str, **changes: Any) -> bytes:
    event: dict[str, Any] = {
        "id": "cs_abuse",
        "type": "checkout.session.completed",
        "data": {"user_id": user_gid, "amount_minor": 100, "currency": "KGS"},
    }
    event.update(changes)
    return orjson.dumps(event)


async def test_the_webhook_answers_out_of_range_and_bad_strings_with_422(
    real_server: RealServer,
) -> None:
    gid = real_server.member_gid
    events = [
        _event(gid, data={"user_id": gid, "amount_minor": 2**63 - 1, "currency": "KGS"}),
        _event(gid, data={"user_id": gid, "amount_minor": 2**64 - 1, "currency": "KGS"}),
        _event(gid, id="cs_\x00"),
        _event(gid, data={"user_id": "\x00", "amount_minor": 1, "currency": "KGS"}),
        b'{"id": "cs_1", "type": "checkout.session.completed", "data": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
    ]
    async with httpx.AsyncClient(base_url=real_server.base_url, timeout=10) as http:
        for raw in events:
            signature = sign(WEBHOOK_SECRET.encode(), int(time.time()), raw)
            response = await http.post(
                "/webhooks/payments",
                content=raw,
                headers={"X-Signature": signature, "content-type": "application/json"},
            )
            assert response.status_code == 422, response.text
            assert response.headers["content-type"] == "application/json"
