"""Phone login over HTTP: the market from the number, where the user lands, and every refusal."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from starlette.applications import Starlette

from marketgraph.auth import login_codes
from marketgraph.db.databases import Databases
from marketgraph.db.models.app import Cart, Wallet
from marketgraph.db.models.auth import User
from marketgraph.db.models.base import new_id
from marketgraph.ids import decode_id
from marketgraph.kv import KeyValueStore
from marketgraph.sms import MemorySms
from tests.helpers import (
    REQUEST_CODE,
    allow_resend,
    data,
    error,
    error_code,
    http_client,
    jwt_parts,
    phone_login,
    placement,
    request_code,
    sms_code,
    verify_code,
    viewer,
)

KG_MOBILE = "+996700123456"
KG_MOBILE_2 = "+996555123456"
US_MOBILE = "+12015550123"  # phonenumbers: valid, US, FIXED_LINE_OR_MOBILE
US_MOBILE_2 = "+14155550199"
KG_FIXED_LINE = "+996312123456"  # Bishkek landline: valid, but cannot receive SMS
CA_MOBILE = "+16045550123"  # Vancouver: +1 like the US, but region CA

AppFactory = Callable[..., Starlette]


def sent(app: Starlette) -> list[tuple[str, str]]:
    sms = app.state.services.sms
    assert isinstance(sms, MemorySms)
    return sms.sent


async def users_everywhere(stores: Databases, phone: str) -> dict[str, int]:
    return await placement(stores, "auth", User.phone, phone)


@pytest.mark.parametrize(
    ("phone", "market", "other"), [(KG_MOBILE, "kg", "us"), (US_MOBILE, "us", "kg")]
)
async def test_phone_login_places_the_user_in_its_market_only(
    app_factory: AppFactory,
    stores: Databases,
    kv: KeyValueStore,
    phone: str,
    market: str,
    other: str,
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        challenge = data(await request_code(client, phone))["requestLoginCode"]
        assert challenge["market"]["code"] == market
        payload = data(await verify_code(client, phone, sms_code(app, phone)))["verifyLoginCode"]

        assert payload["market"]["code"] == market
        assert payload["tokenType"] == "Bearer"
        assert payload["user"]["phone"] == phone
        assert payload["user"]["market"]["code"] == market
        assert payload["refreshToken"].startswith(f"{market}.")
        header, claims = jwt_parts(payload["accessToken"])
        assert claims["mkt"] == market
        assert claims["sub"] == payload["user"]["id"]
        assert header["kid"]

        # The user row lives in its market's auth store and in no other.
        assert await users_everywhere(stores, phone) == {market: 1, other: 0}
        async with stores.store(market, "auth").connect() as conn:
            user_id = (await conn.execute(User.__table__.select().where(User.phone == phone))).one()
        assert user_id.last_login_at is not None
        # The app stores hold no users at all (not even a users table).
        for code in (market, other):
            app_store = stores.store(code, "app")
            async with app_store.connect() as conn:
                users_table = func.to_regclass(f"{app_store.schema}.users")
                assert (await conn.execute(select(users_table))).scalar() is None
        # Its cart and wallet live in its market's app store only.
        assert await placement(stores, "app", Cart.user_id, user_id.id) == {market: 1, other: 0}
        assert await placement(stores, "app", Wallet.user_id, user_id.id) == {
            market: 1,
            other: 0,
        }

        me = data(await viewer(client, payload["accessToken"]))["viewer"]
        assert me["id"] == payload["user"]["id"]
        assert me["phone"] == phone
        assert me["market"]["code"] == market
        assert me["userType"] == "MEMBER"


async def test_kg_and_us_users_side_by_side(app_factory: AppFactory, stores: Databases) -> None:
    app = app_factory()
    async with http_client(app) as client:
        kg = await phone_login(client, app, KG_MOBILE)
        us = await phone_login(client, app, US_MOBILE)
        # Each token reads its own market's store: swapped stores would find nobody.
        kg_me = data(await viewer(client, kg["accessToken"]))["viewer"]
        us_me = data(await viewer(client, us["accessToken"]))["viewer"]
    assert (kg_me["phone"], kg_me["market"]["code"]) == (KG_MOBILE, "kg")
    assert (us_me["phone"], us_me["market"]["code"]) == (US_MOBILE, "us")
    assert await users_everywhere(stores, KG_MOBILE) == {"kg": 1, "us": 0}
    assert await users_everywhere(stores, US_MOBILE) == {"kg": 0, "us": 1}


async def test_the_same_phone_twice_is_the_same_user(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        first = await phone_login(client, app, KG_MOBILE)
        await allow_resend(kv, KG_MOBILE)
        second = await phone_login(client, app, KG_MOBILE)
    assert second["user"]["id"] == first["user"]["id"]
    assert await users_everywhere(stores, KG_MOBILE) == {"kg": 1, "us": 0}
    async with stores.store("kg", "app").connect() as conn:
        carts = (await conn.execute(Cart.__table__.select())).all()
        wallets = (await conn.execute(Wallet.__table__.select())).all()
    assert len(carts) == len(wallets) == 1


async def test_a_sign_in_finishes_a_user_whose_app_rows_are_missing(
    app_factory: AppFactory, stores: Databases
) -> None:
    # A crash between the two stores' writes leaves the user row without cart and wallet.
    async with stores.store("kg", "auth").begin() as session:
        await session.execute(insert(User).values(id=new_id(), phone=KG_MOBILE))
    app = app_factory()
    async with http_client(app) as client:
        payload = await phone_login(client, app, KG_MOBILE)
    user_id = decode_id(payload["user"]["id"], "User").key
    assert await placement(stores, "app", Cart.user_id, user_id) == {"kg": 1, "us": 0}
    assert await placement(stores, "app", Wallet.user_id, user_id) == {"kg": 1, "us": 0}
    assert await users_everywhere(stores, KG_MOBILE) == {"kg": 1, "us": 0}


async def test_phone_in_national_notation_is_the_same_number(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        data(await request_code(client, "+996 (700) 123-456"))
        payload = data(await verify_code(client, "996700123456", sms_code(app, KG_MOBILE)))
    assert payload["verifyLoginCode"]["user"]["phone"] == KG_MOBILE


@pytest.mark.parametrize(
    ("phone", "code"),
    [
        ("hello", "INVALID_PHONE"),
        ("+99670012", "INVALID_PHONE"),  # too short for KG
        ("", "INVALID_PHONE"),
        (KG_FIXED_LINE, "INVALID_PHONE"),
        ("+996700123456 ext. 12", "INVALID_PHONE"),
        (CA_MOBILE, "UNSUPPORTED_MARKET"),
    ],
)
async def test_unusable_numbers_are_refused_and_consume_nothing(
    app_factory: AppFactory, stores: Databases, phone: str, code: str
) -> None:
    # One code per IP per hour: a refused request must not spend it.
    app = app_factory(login_code_ip_hourly=1)
    ip = {"X-Forwarded-For": "198.51.100.4"}
    async with http_client(app) as client:
        assert error_code(await request_code(client, phone, headers=ip)) == code
        assert error_code(await verify_code(client, phone, "123456")) == code
        assert sent(app) == []
        assert await users_everywhere(stores, CA_MOBILE) == {"kg": 0, "us": 0}
        # The IP's single hourly code is still there.
        data(await request_code(client, KG_MOBILE, headers=ip))
    async with stores.store("kg", "auth").connect() as conn:
        assert (await conn.execute(User.__table__.select())).all() == []


async def test_wrong_codes_are_refused_and_create_nobody(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        data(await request_code(client, KG_MOBILE))
        right = sms_code(app, KG_MOBILE)
        wrong = f"{(int(right) + 1) % 10**6:06d}"
        for _ in range(4):
            body = await verify_code(client, KG_MOBILE, wrong)
            assert error_code(body) == "INVALID_CODE"
        assert await users_everywhere(stores, KG_MOBILE) == {"kg": 0, "us": 0}
        # Four wrong tries leave the code alive.
        data(await verify_code(client, KG_MOBILE, right))
        # A code works once.
        assert error_code(await verify_code(client, KG_MOBILE, right)) == "INVALID_CODE"


async def test_the_fifth_wrong_try_burns_the_code(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        data(await request_code(client, KG_MOBILE))
        right = sms_code(app, KG_MOBILE)
        wrong = f"{(int(right) + 1) % 10**6:06d}"
        for _ in range(5):
            assert error_code(await verify_code(client, KG_MOBILE, wrong)) == "INVALID_CODE"
        assert error_code(await verify_code(client, KG_MOBILE, right)) == "INVALID_CODE"
    assert await users_everywhere(stores, KG_MOBILE) == {"kg": 0, "us": 0}


async def test_an_expired_code_is_refused(
    app_factory: AppFactory,
    stores: Databases,
    kv: KeyValueStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(login_codes, "CODE_TTL", 0.3)
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        data(await request_code(client, KG_MOBILE))
        code = sms_code(app, KG_MOBILE)
        started = time.monotonic()
        # The store's own expiry ends the code: wait for it, no longer.
        while await kv.get(f"lc:code:{KG_MOBILE}") is not None:
            assert time.monotonic() - started < 1.5, "the code did not expire"
            await asyncio.sleep(0.02)
        assert error_code(await verify_code(client, KG_MOBILE, code)) == "INVALID_CODE"
    assert await users_everywhere(stores, KG_MOBILE) == {"kg": 0, "us": 0}


def retry_after(body: dict[str, Any]) -> int:
    assert error_code(body) == "RATE_LIMITED"
    value = error(body)["extensions"]["retryAfter"]
    assert isinstance(value, int)
    return value


async def test_a_resend_within_a_minute_is_rate_limited(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        data(await request_code(client, KG_MOBILE))
        first = sms_code(app, KG_MOBILE)
        wait = retry_after(await request_code(client, KG_MOBILE))
        assert 55 <= wait <= 60
        assert len(sent(app)) == 1
        # The refused resend did not replace the code that was sent.
        data(await verify_code(client, KG_MOBILE, first))


async def test_per_phone_hourly_limit(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv, login_code_phone_hourly=2)
    async with http_client(app) as client:
        for _ in range(2):
            data(await request_code(client, KG_MOBILE))
            await allow_resend(kv, KG_MOBILE)
        wait = retry_after(await request_code(client, KG_MOBILE))
        assert 60 < wait <= 3600
        assert len(sent(app)) == 2
        # The refusal started no resend wait: asking again still names the hourly wait.
        assert retry_after(await request_code(client, KG_MOBILE)) > 60
        # Other phones, from the same client, are not affected.
        data(await request_code(client, KG_MOBILE_2))


async def test_per_ip_hourly_limit(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv, login_code_ip_hourly=2)
    # The proxy (the test client's 127.0.0.1) appends the address it saw to what the client
    # sent: the client is 203.0.113.7, whatever it claims before that.
    one = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    async with http_client(app) as client:
        data(await request_code(client, KG_MOBILE, headers=one))
        data(await request_code(client, US_MOBILE, headers=one))
        wait = retry_after(await request_code(client, KG_MOBILE_2, headers=one))
        assert 60 < wait <= 3600
        assert [phone for phone, _ in sent(app)] == [KG_MOBILE, US_MOBILE]
        # Another client has its own count.
        data(await request_code(client, KG_MOBILE_2, headers={"X-Forwarded-For": "203.0.113.8"}))


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    app_factory: AppFactory, stores: Databases
) -> None:
    # The test client's peer is 127.0.0.1; trust another proxy, so X-Forwarded-For is ignored.
    app = app_factory(login_code_ip_hourly=2, forwarded_allow_ips=["10.9.9.9"])
    async with http_client(app) as client:
        for n, phone in enumerate((KG_MOBILE, US_MOBILE, KG_MOBILE_2)):
            body = await request_code(client, phone, headers={"X-Forwarded-For": f"203.0.113.{n}"})
            if n < 2:
                data(body)
            else:
                assert retry_after(body) > 60


async def test_registered_and_unknown_phones_get_the_same_answer(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        await phone_login(client, app, KG_MOBILE)
        await allow_resend(kv, KG_MOBILE)
        known = await client.post(
            "/graphql",
            json={"query": REQUEST_CODE, "variables": {"phone": KG_MOBILE}},
        )
        unknown = await client.post(
            "/graphql",
            json={"query": REQUEST_CODE, "variables": {"phone": KG_MOBILE_2}},
        )
    assert known.status_code == unknown.status_code == 200
    a, b = known.json(), unknown.json()
    assert a.keys() == b.keys() == {"data"}
    one, two = a["data"]["requestLoginCode"], b["data"]["requestLoginCode"]
    assert one.keys() == two.keys()
    assert one["market"] == two["market"] == {"code": "kg", "currency": "KGS"}
    for answer in (one, two):
        expires = dt.datetime.fromisoformat(answer["expiresAt"])
        resend = dt.datetime.fromisoformat(answer["resendAfter"])
        assert expires - resend == dt.timedelta(seconds=240)
    assert set(known.headers.keys()) == set(unknown.headers.keys())
    assert await users_everywhere(stores, KG_MOBILE_2) == {"kg": 0, "us": 0}
