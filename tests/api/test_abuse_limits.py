"""Abuse limits over HTTP: spoofed client addresses, SMS pumping, code guessing, mass
registration, password spraying and distributed guessing — each answered `RATE_LIMITED`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.auth import User
from marketgraph.kv import KeyValueStore
from marketgraph.sms import MemorySms
from tests.helpers import (
    DEFAULT_PASSWORD,
    REGISTER,
    allow_resend,
    data,
    error,
    error_code,
    gql,
    http_client,
    login,
    request_code,
    sms_code,
    verify_code,
)

AppFactory = Callable[..., Starlette]
HOUR = 3600
DAY = 24 * HOUR
KG_O = ("+996700123456", "+996700000001", "+996700000002")  # one operator's range
KG_MEGACOM = "+996555123456"
KG_BEELINE = "+996770123456"
US_MOBILE = "+12015550123"


def retry_after(body: dict[str, Any]) -> int:
    """The `retryAfter` of a `RATE_LIMITED` answer: whole seconds, at least one."""
    assert error_code(body) == "RATE_LIMITED", body
    value = error(body)["extensions"]["retryAfter"]
    assert isinstance(value, int)
    assert value > 0
    return value


def from_ip(ip: str) -> dict[str, str]:
    """Headers of a request that the proxy at 127.0.0.1 (the test client) forwards from `ip`."""
    return {"X-Forwarded-For": ip}


def sent_to(app: Starlette) -> list[str]:
    sms = app.state.services.sms
    assert isinstance(sms, MemorySms)
    return [phone for phone, _ in sms.sent]


async def register(
    client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD, *, ip: str
) -> dict[str, Any]:
    """The body of `register` in market kg, sent from `ip`."""
    variables = {"input": {"email": email, "password": password}}
    return await gql(client, REGISTER, variables, headers={"X-Market": "kg", **from_ip(ip)})


async def count_users(stores: Databases, market: str = "kg") -> int:
    async with stores.store(market, "auth").connect() as conn:
        return (await conn.execute(select(func.count()).select_from(User))).scalar_one()


# --- client identity ---------------------------------------------------------------------


async def test_a_prepended_forwarded_address_does_not_reset_the_per_ip_code_limit(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv, login_code_ip_hourly=2)
    async with http_client(app) as client:
        for n, phone in enumerate((KG_O[0], US_MOBILE, KG_MEGACOM)):
            # The client makes up a new first address each time; the proxy appends its own.
            spoofed = from_ip(f"198.51.100.{n}, 203.0.113.7")
            body = await request_code(client, phone, headers=spoofed)
            if n < 2:
                data(body)
            else:
                assert HOUR - 60 < retry_after(body) <= HOUR
        assert sent_to(app) == [KG_O[0], US_MOBILE]


# --- SMS pumping -------------------------------------------------------------------------


async def test_an_operator_prefix_has_a_daily_sms_budget(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv, sms_daily_prefix_limit=2)
    async with http_client(app) as client:
        # Each number from its own address: only the range they share is counted together.
        for n, phone in enumerate(KG_O):
            body = await request_code(client, phone, headers=from_ip(f"203.0.113.{n}"))
            if n < 2:
                data(body)
            else:
                assert HOUR < retry_after(body) <= DAY
        # Another operator's numbers of the same market are not affected.
        data(await request_code(client, KG_MEGACOM, headers=from_ip("203.0.113.9")))
    assert sent_to(app) == [KG_O[0], KG_O[1], KG_MEGACOM]


async def test_a_market_has_a_daily_sms_budget(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv, sms_daily_market_limit=2)
    async with http_client(app) as client:
        for n, phone in enumerate((KG_O[0], KG_MEGACOM, KG_BEELINE)):
            body = await request_code(client, phone, headers=from_ip(f"203.0.113.{n}"))
            if n < 2:
                data(body)
            else:
                assert HOUR < retry_after(body) <= DAY
        # Another market has its own budget.
        data(await request_code(client, US_MOBILE, headers=from_ip("203.0.113.9")))
    assert sent_to(app) == [KG_O[0], KG_MEGACOM, US_MOBILE]


# --- code guessing -----------------------------------------------------------------------


async def test_guesses_per_number_are_capped_per_day_across_codes(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    phone = KG_O[0]
    app = app_factory(kv=kv, login_code_daily_guesses=6)
    async with http_client(app) as client:
        data(await request_code(client, phone))
        wrong = f"{(int(sms_code(app, phone)) + 1) % 10**6:06d}"
        for _ in range(4):  # the code survives four wrong tries
            assert error_code(await verify_code(client, phone, wrong)) == "INVALID_CODE"
        await allow_resend(kv, phone)
        data(await request_code(client, phone))
        right = sms_code(app, phone)
        wrong = f"{(int(right) + 1) % 10**6:06d}"
        for _ in range(2):
            assert error_code(await verify_code(client, phone, wrong)) == "INVALID_CODE"
        # Six tries today: a seventh is refused, right or wrong, in the same words.
        refused_wrong = error(await verify_code(client, phone, wrong))
        refused_right = await verify_code(client, phone, right)
        assert HOUR < retry_after(refused_right) <= DAY
        assert refused_wrong["message"] == error(refused_right)["message"]
        assert refused_wrong["extensions"]["code"] == "RATE_LIMITED"
    assert await count_users(stores) == 0


# --- registration ------------------------------------------------------------------------


async def test_registrations_per_client_ip_are_limited(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory(register_ip_hourly=2)) as client:
        for n in range(2):
            data(await register(client, f"u{n}@example.com", ip="203.0.113.1"))
        body = await register(client, "u2@example.com", ip="203.0.113.1")
        assert HOUR - 60 < retry_after(body) <= HOUR
        # Input that is refused anyway is not counted, and other clients are not limited.
        data(await register(client, "u2@example.com", ip="203.0.113.2"))
        short = await register(client, "u3@example.com", "short", ip="203.0.113.2")
        assert error_code(short) == "BAD_USER_INPUT"
        data(await register(client, "u3@example.com", ip="203.0.113.2"))
    assert await count_users(stores) == 4


async def test_registrations_per_email_are_limited_so_conflicts_cannot_enumerate(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory(register_email_hourly=3)) as client:
        data(await register(client, "aida@example.com", ip="203.0.113.1"))
        for n in (2, 3):
            body = await register(client, "Aida@Example.com", ip=f"203.0.113.{n}")
            assert error_code(body) == "CONFLICT"
        # From any address, the email answers no more this hour: taken or not stays unsaid.
        body = await register(client, "AIDA@example.com", ip="203.0.113.4")
        assert HOUR - 60 < retry_after(body) <= HOUR
        data(await register(client, "bek@example.com", ip="203.0.113.4"))
    assert await count_users(stores) == 2


# --- email sign-in -----------------------------------------------------------------------


async def registered(client: httpx.AsyncClient, *emails: str) -> None:
    """Register `emails`, each from its own address (no registration limit applies)."""
    for n, email in enumerate(emails):
        data(await register(client, email, ip=f"192.0.2.{n}"))


async def test_failures_per_ip_across_emails_are_limited(
    app_factory: AppFactory, stores: Databases
) -> None:
    emails = [f"user{n}@example.com" for n in range(4)]
    async with http_client(app_factory(email_login_ip_hourly=3)) as client:
        await registered(client, *emails)
        # One wrong password per account, the shape of password spraying.
        for email in emails[:3]:
            assert error_code(await login(client, email, "Winter2025!", ip="203.0.113.1")) == (
                "UNAUTHENTICATED"
            )
        body = await login(client, emails[3], DEFAULT_PASSWORD, ip="203.0.113.1")
        assert HOUR - 60 < retry_after(body) <= HOUR
        assert error_code(await login(client, "nobody@example.com", "x", ip="203.0.113.1")) == (
            "RATE_LIMITED"
        )
        data(await login(client, emails[3], DEFAULT_PASSWORD, ip="203.0.113.2"))


async def test_successes_do_not_count_towards_the_per_ip_limit(
    app_factory: AppFactory, stores: Databases
) -> None:
    emails = [f"user{n}@example.com" for n in range(3)]
    async with http_client(app_factory(email_login_ip_hourly=2)) as client:
        await registered(client, *emails)
        # Many people behind one address (an office, a carrier's NAT) all sign in.
        for _ in range(2):
            for email in emails:
                data(await login(client, email, DEFAULT_PASSWORD, ip="203.0.113.1"))
        for email in emails[:2]:
            assert error_code(await login(client, email, "wrong pw", ip="203.0.113.1")) == (
                "UNAUTHENTICATED"
            )
        # Nor does a success give failures back.
        body = await login(client, emails[2], DEFAULT_PASSWORD, ip="203.0.113.1")
        assert error_code(body) == "RATE_LIMITED"


async def test_parallel_tries_across_emails_cannot_pass_the_per_ip_limit(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory(email_login_ip_hourly=5)) as client:
        bodies = await asyncio.gather(
            *(login(client, f"n{n}@example.com", "guess", ip="203.0.113.1") for n in range(12))
        )
    assert sorted(error_code(b) for b in bodies) == ["RATE_LIMITED"] * 7 + ["UNAUTHENTICATED"] * 5


async def test_failures_per_account_across_ips_are_limited(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory(email_login_account_daily=3)) as client:
        await registered(client, "aida@example.com", "bek@example.com")
        for n in range(3):
            body = await login(client, "aida@example.com", "wrong pw", ip=f"203.0.113.{n}")
            assert error_code(body) == "UNAUTHENTICATED"
        # A fourth address, even with the right password, is refused for the rest of the day.
        body = await login(client, "AIDA@example.com", DEFAULT_PASSWORD, ip="198.51.100.1")
        assert HOUR < retry_after(body) <= DAY
        data(await login(client, "bek@example.com", DEFAULT_PASSWORD, ip="198.51.100.1"))
        # An email without an account is limited alike: the limit tells nobody which exist.
        for n in range(3):
            body = await login(client, "nobody@example.com", "wrong pw", ip=f"203.0.113.{n}")
            assert error_code(body) == "UNAUTHENTICATED"
        body = await login(client, "nobody@example.com", "wrong pw", ip="198.51.100.1")
        assert HOUR < retry_after(body) <= DAY
