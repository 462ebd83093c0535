"""The payment webhook as http.md describes it: signature, freshness, body checks, exactly-once
credit, and the answers for everything else."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import WalletTransaction
from marketgraph.ids import decode_id
from marketgraph.webhooks import sign
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    WEBHOOK_SECRET,
    app_fixture,
    balance_of,
    count_rows,
    create_customer,
    gid,
    http_fixture,
    transactions_of,
)
from tests.helpers import http_client

PATH = "/webhooks/payments"


def event(user_gid: str, amount: int = 5000, currency: str = "KGS", **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("id", "cs_1"),
        "type": extra.pop("type", "checkout.session.completed"),
        "data": {"user_id": user_gid, "amount_minor": amount, "currency": currency},
        **extra,
    }


async def deliver(
    http: httpx.AsyncClient,
    body: bytes | dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    header = signature or sign(secret.encode(), timestamp or int(time.time()), raw)
    return await http.post(
        PATH, content=raw, headers={"X-Signature": header, "Content-Type": "application/json"}
    )


async def test_a_top_up_credits_once_and_replays_are_already_processed(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    user = await create_customer(stores, "kg", balance_minor=100)
    payload = event(gid("User", "kg", user.id), 5000, id="cs_once")

    first = await deliver(http, payload)
    assert (first.status_code, first.json()) == (200, {"status": "processed"})
    replay = await deliver(http, payload)
    assert (replay.status_code, replay.json()) == (200, {"status": "already_processed"})

    app_store = stores.store("kg", "app")
    assert await balance_of(app_store, user.id) == 5100
    [row] = await transactions_of(app_store, user.id)
    assert (row.kind, row.amount_minor, row.external_id) == ("TOP_UP", 5000, "cs_once")


async def test_a_us_top_up_lands_in_the_us_store(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    user = await create_customer(stores, "us")
    response = await deliver(http, event(gid("User", "us", user.id), 1999, "USD"))
    assert response.json() == {"status": "processed"}
    assert await balance_of(stores.store("us", "app"), user.id) == 1999
    assert await count_rows(stores.store("kg", "app"), WalletTransaction) == 0


async def test_a_bad_signature_is_400_and_credits_nothing(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    user = await create_customer(stores, "kg")
    payload = event(gid("User", "kg", user.id))
    raw = orjson.dumps(payload)
    now = int(time.time())
    forged = [
        sign(b"another secret", now, raw),
        sign(WEBHOOK_SECRET.encode(), now, raw + b" "),  # signed a different body
        f"t={now}",
        f"t={now},v1=",
        "v1=" + sign(WEBHOOK_SECRET.encode(), now, raw).split("v1=")[1],  # no timestamp
        "",
        "garbage",
    ]
    for header in forged:
        response = await deliver(http, raw, signature=header or "x")
        assert response.status_code == 400, header
    assert await balance_of(stores.store("kg", "app"), user.id) == 0


async def test_no_signature_header_is_400(http: httpx.AsyncClient, stores: Databases) -> None:
    response = await http.post(PATH, content=b"{}")
    assert response.status_code == 400


@pytest.mark.parametrize("age", [301, 3600, -3600])
async def test_a_stale_or_future_timestamp_is_400(
    http: httpx.AsyncClient, stores: Databases, age: int
) -> None:
    user = await create_customer(stores, "kg")
    response = await deliver(
        http, event(gid("User", "kg", user.id)), timestamp=int(time.time()) - age
    )
    assert response.status_code == 400
    assert await balance_of(stores.store("kg", "app"), user.id) == 0


async def test_a_timestamp_within_five_minutes_is_accepted(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    user = await create_customer(stores, "kg")
    response = await deliver(
        http, event(gid("User", "kg", user.id)), timestamp=int(time.time()) - 240
    )
    assert response.json() == {"status": "processed"}


def _malformed(user_gid: str) -> list[bytes]:
    good = event(user_gid)
    return [
        b"not json",
        b"[]",
        orjson.dumps({"type": good["type"], "data": good["data"]}),  # no id
        orjson.dumps({**good, "id": ""}),
        orjson.dumps({**good, "id": 42}),
        orjson.dumps({"id": "cs_x", "type": good["type"]}),  # no data
        orjson.dumps(event(user_gid, amount=0)),
        orjson.dumps(event(user_gid, amount=-5)),
        orjson.dumps({**good, "data": {**good["data"], "amount_minor": "5000"}}),
        orjson.dumps({**good, "data": {**good["data"], "amount_minor": 50.5}}),
        orjson.dumps({**good, "data": {**good["data"], "amount_minor": True}}),
        orjson.dumps(event("not-an-id")),
        orjson.dumps(event(gid("Order", "kg", decode_id(user_gid).key))),  # not a User id
    ]


async def test_a_malformed_body_is_422(http: httpx.AsyncClient, stores: Databases) -> None:
    user = await create_customer(stores, "kg")
    for raw in _malformed(gid("User", "kg", user.id)):
        response = await deliver(http, raw)
        assert response.status_code == 422, raw
    assert await balance_of(stores.store("kg", "app"), user.id) == 0


async def test_another_markets_currency_is_422(http: httpx.AsyncClient, stores: Databases) -> None:
    user = await create_customer(stores, "kg")
    for currency in ("USD", "kgs", "EUR"):
        response = await deliver(http, event(gid("User", "kg", user.id), currency=currency))
        assert response.status_code == 422, currency
    assert await balance_of(stores.store("kg", "app"), user.id) == 0


async def test_an_unknown_user_is_404(http: httpx.AsyncClient, stores: Databases) -> None:
    user = await create_customer(stores, "kg")
    # A KG user's key sent as a US user: no such user there.
    response = await deliver(http, event(gid("User", "us", user.id), currency="USD"))
    assert response.status_code == 404
    # A market nobody serves.
    response = await deliver(http, event(gid("User", "zz", user.id)))
    assert response.status_code == 404
    assert await count_rows(stores.store("us", "app"), WalletTransaction) == 0


async def test_other_event_types_are_ignored(http: httpx.AsyncClient, stores: Databases) -> None:
    user = await create_customer(stores, "kg")
    payload = event(gid("User", "kg", user.id), type="checkout.session.expired")
    response = await deliver(http, payload)
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    assert await balance_of(stores.store("kg", "app"), user.id) == 0


async def test_without_a_configured_secret_nothing_is_credited(
    app_factory: Any, stores: Databases
) -> None:
    app: Starlette = app_factory()
    user = await create_customer(stores, "kg")
    async with http_client(app) as client:
        response = await deliver(client, event(gid("User", "kg", user.id)))
    assert response.status_code >= 400
    assert await balance_of(stores.store("kg", "app"), user.id) == 0


@pytest.mark.parametrize(
    "amount",
    [2**63 - 1, 2**64 - 1, 10**12 + 1],
    ids=["int64-max", "uint64-max", "over-the-credit-cap"],
)
async def test_an_amount_out_of_range_is_422_and_credits_nothing(
    http: httpx.AsyncClient, stores: Databases, amount: int
) -> None:
    user = await create_customer(stores, "kg")
    response = await deliver(http, event(gid("User", "kg", user.id), amount=amount))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert await count_rows(stores.store("kg", "app"), WalletTransaction) == 0


async def test_a_string_with_a_nul_is_422_and_credits_nothing(
    http: httpx.AsyncClient, stores: Databases
) -> None:
    user = await create_customer(stores, "kg")
    for bad in (event(gid("User", "kg", user.id), id="cs_\x00"), event("x", note="\x00")):
        response = await deliver(http, bad)
        assert response.status_code == 422, response.text
        assert "NUL" in response.json()["error"]
    assert await count_rows(stores.store("kg", "app"), WalletTransaction) == 0
