"""Email sign-up and sign-in over HTTP: argon2id, normalised emails, one answer for every
failure, and the per email+IP limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import Cart, Wallet
from marketgraph.db.models.auth import User
from tests.helpers import (
    data,
    error,
    error_code,
    http_client,
    jwt_parts,
    login,
    placement,
    register,
    viewer,
)

AppFactory = Callable[..., Starlette]
PASSWORD = "correct horse battery"


async def all_users(stores: Databases, market: str = "kg") -> list[Any]:
    async with stores.store(market, "auth").connect() as conn:
        return list((await conn.execute(select(User))).all())


async def test_register_stores_a_normalised_email_and_an_argon2id_hash(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        body = await register(client, "  Aida.Sydykova@Example.COM ", PASSWORD, firstName="Aida")
        payload = data(body)["register"]
        me = data(await viewer(client, payload["accessToken"]))["viewer"]
    assert payload["user"]["email"] == "aida.sydykova@example.com"
    assert payload["market"]["code"] == "kg"
    assert payload["refreshToken"].startswith("kg.")
    assert jwt_parts(payload["accessToken"])[1]["mkt"] == "kg"
    assert me["email"] == "aida.sydykova@example.com"
    (user,) = await all_users(stores)
    assert user.email == "aida.sydykova@example.com"
    assert user.first_name == "Aida"
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert await placement(stores, "auth", User.email, user.email) == {"kg": 1, "us": 0}
    assert await placement(stores, "app", Cart.user_id, user.id) == {"kg": 1, "us": 0}
    assert await placement(stores, "app", Wallet.user_id, user.id) == {"kg": 1, "us": 0}


async def test_register_uses_the_requests_market(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        payload = data(await register(client, "sam@example.com", PASSWORD, market="us"))
    assert payload["register"]["market"]["code"] == "us"
    assert await placement(stores, "auth", User.email, "sam@example.com") == {"kg": 0, "us": 1}


@pytest.mark.parametrize("second", ["aida@example.com", "AIDA@EXAMPLE.COM", " Aida@Example.com "])
async def test_a_duplicate_email_in_any_case_is_a_conflict(
    app_factory: AppFactory, stores: Databases, second: str
) -> None:
    async with http_client(app_factory()) as client:
        data(await register(client, "Aida@example.com", PASSWORD))
        assert error_code(await register(client, second, "another password")) == "CONFLICT"
    assert len(await all_users(stores)) == 1


@pytest.mark.parametrize(
    ("password", "accepted"),
    [("x" * 7, False), ("x" * 8, True), ("x" * 128, True), ("x" * 129, False), ("", False)],
)
async def test_passwords_have_8_to_128_characters(
    app_factory: AppFactory, stores: Databases, password: str, accepted: bool
) -> None:
    async with http_client(app_factory()) as client:
        body = await register(client, "len@example.com", password)
    if accepted:
        data(body)
        assert len(await all_users(stores)) == 1
    else:
        assert error_code(body) == "BAD_USER_INPUT"
        assert error(body)["extensions"]["field"] == "password"
        assert await all_users(stores) == []


@pytest.mark.parametrize("email", ["", "no-at-sign", "@example.com", "a@b", "a b@example.com"])
async def test_malformed_emails_are_bad_input(
    app_factory: AppFactory, stores: Databases, email: str
) -> None:
    async with http_client(app_factory()) as client:
        assert error_code(await register(client, email, PASSWORD)) == "BAD_USER_INPUT"
    assert await all_users(stores) == []


async def test_register_with_a_phone_of_the_market(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        body = await register(client, "p@example.com", PASSWORD, phone="+996 700 123 456")
        assert data(body)["register"]["user"]["phone"] == "+996700123456"
        again = await register(client, "q@example.com", PASSWORD, phone="+996700123456")
        assert error_code(again) == "CONFLICT"
        us_phone = await register(client, "r@example.com", PASSWORD, phone="+12015550123")
        assert error_code(us_phone) == "MARKET_MISMATCH"
    assert len(await all_users(stores)) == 1


async def test_login_with_any_case_finds_the_user(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        registered = data(await register(client, "aida@example.com", PASSWORD))["register"]
        signed = data(await login(client, " AIDA@example.COM", PASSWORD))["login"]
        assert signed["user"]["id"] == registered["user"]["id"]
        assert signed["refreshToken"] != registered["refreshToken"]
        assert data(await viewer(client, signed["accessToken"]))["viewer"]["email"] == (
            "aida@example.com"
        )
        # Only in the market it lives in.
        elsewhere = await login(client, "aida@example.com", PASSWORD, market="us")
        assert error_code(elsewhere) == "UNAUTHENTICATED"


async def test_unknown_email_and_wrong_password_answer_alike(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        data(await register(client, "aida@example.com", PASSWORD))
        wrong_password = error(await login(client, "aida@example.com", "wrong password"))
        unknown_email = error(await login(client, "nobody@example.com", PASSWORD))
    for answer in (wrong_password, unknown_email):
        answer["extensions"].pop("requestId")
    assert wrong_password == unknown_email
    assert wrong_password["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_phone_only_users_cannot_sign_in_by_email(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        data(await register(client, "aida@example.com", PASSWORD))
        async with stores.store("kg", "auth").begin() as session:
            await session.execute(update(User).values(password_hash=None))
        assert error_code(await login(client, "aida@example.com", PASSWORD)) == "UNAUTHENTICATED"
        assert error_code(await login(client, "aida@example.com", "")) == "UNAUTHENTICATED"


async def wrong_tries(client: Any, email: str, n: int, ip: str) -> list[str]:
    """`n` wrong-password sign-ins at once: their error codes."""
    bodies = await asyncio.gather(
        *(login(client, email, "wrong password", ip=ip) for _ in range(n))
    )
    return [error_code(body) for body in bodies]


async def test_ten_failures_per_email_and_ip_are_rate_limited(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        data(await register(client, "aida@example.com", PASSWORD))
        data(await register(client, "bek@example.com", PASSWORD))
        assert (
            await wrong_tries(client, "aida@example.com", 5, "203.0.113.1")
            == ["UNAUTHENTICATED"] * 5
        )
        # The same address in another case is the same email.
        assert (
            await wrong_tries(client, "AIDA@Example.com", 5, "203.0.113.1")
            == ["UNAUTHENTICATED"] * 5
        )
        # The eleventh try is refused before the password is looked at, even the right one.
        limited = await login(client, "aida@example.com", PASSWORD, ip="203.0.113.1")
        assert error_code(limited) == "RATE_LIMITED"
        retry_after = error(limited)["extensions"]["retryAfter"]
        assert isinstance(retry_after, int)
        assert 0 < retry_after <= 15 * 60
        # Another client, or another email from this client, is not limited.
        data(await login(client, "aida@example.com", PASSWORD, ip="203.0.113.2"))
        data(await login(client, "bek@example.com", PASSWORD, ip="203.0.113.1"))


async def test_parallel_tries_cannot_pass_the_limit(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        data(await register(client, "aida@example.com", PASSWORD))
        codes = await wrong_tries(client, "aida@example.com", 14, "203.0.113.1")
    assert sorted(codes) == ["RATE_LIMITED"] * 4 + ["UNAUTHENTICATED"] * 10


async def test_a_success_clears_the_failures(app_factory: AppFactory, stores: Databases) -> None:
    async with http_client(app_factory()) as client:
        data(await register(client, "aida@example.com", PASSWORD))
        for _ in range(2):
            assert set(await wrong_tries(client, "aida@example.com", 9, "203.0.113.1")) == {
                "UNAUTHENTICATED"
            }
            data(await login(client, "aida@example.com", PASSWORD, ip="203.0.113.1"))
