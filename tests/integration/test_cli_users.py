"""`marketgraph users promote`: how a fresh install gets its first admin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from starlette.applications import Starlette

from marketgraph.cli import cli
from marketgraph.db.databases import Databases
from marketgraph.db.models.auth import User, UserType
from tests.helpers import (
    data,
    error_code,
    gql,
    http_client,
    jwt_parts,
    phone_login,
    refresh,
    register,
)

AppFactory = Callable[..., Starlette]
KG = "+996700123456"
KG_2 = "+996555123456"
US = "+12015550123"
CREATE_KEY = 'mutation { createApiKey(name: "ops", market: "kg") { key } }'


async def promote(stores: Databases, tmp_path: Path, *args: str) -> Result:
    """Run the command as an operator would, against the test databases.

    The command runs its own event loop (asyncio.run), so it runs in a thread.
    """
    env = {**stores.settings.database_urls, "DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, ["users", "promote", *args], env=env, catch_exceptions=False
    )


async def user_types(stores: Databases, market: str) -> dict[str | None, UserType]:
    async with stores.store(market, "auth").connect() as conn:
        rows = (await conn.execute(select(User.phone, User.email, User.user_type))).all()
    return {row.phone or row.email: row.user_type for row in rows}


async def test_promote_by_phone_makes_an_admin(
    app_factory: AppFactory, stores: Databases, tmp_path: Path
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        session = await phone_login(client, app, KG)
        await phone_login(client, app, KG_2)
        assert error_code(await gql(client, CREATE_KEY, token=session["accessToken"])) == (
            "FORBIDDEN"
        )

        result = await promote(stores, tmp_path, "+996 700 123 456", "--market", "kg")
        assert result.exit_code == 0, result.output
        assert f"{KG} is now an admin of market kg" in result.output
        assert await user_types(stores, "kg") == {KG: UserType.ADMIN, KG_2: UserType.MEMBER}

        # The next token carries the role, and admin-only mutations open up.
        renewed = data(await refresh(client, session["refreshToken"]))["refreshToken"]
        assert renewed["user"]["userType"] == "ADMIN"
        assert "admin" in jwt_parts(renewed["accessToken"])[1]["roles"]
        data(await gql(client, CREATE_KEY, token=renewed["accessToken"]))


async def test_promote_by_email_in_any_case(
    app_factory: AppFactory, stores: Databases, tmp_path: Path
) -> None:
    async with http_client(app_factory()) as client:
        data(await register(client, "Aida@Example.com", "correct horse battery"))
    result = await promote(stores, tmp_path, "AIDA@example.COM", "--market", "kg")
    assert result.exit_code == 0, result.output
    assert await user_types(stores, "kg") == {"aida@example.com": UserType.ADMIN}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((KG_2, "--market", "kg"), "NOT_FOUND"),
        ((US, "--market", "kg"), "NOT_FOUND"),  # a US user is not in the KG store
        ((KG, "--market", "us"), "NOT_FOUND"),  # nor a KG user in the US store
        (("nobody@example.com", "--market", "kg"), "NOT_FOUND"),
        (("+996 312 123 456 999", "--market", "kg"), "INVALID_PHONE"),
        ((KG, "--market", "zz"), "UNSUPPORTED_MARKET"),
    ],
)
async def test_promote_refuses_what_it_cannot_find(
    app_factory: AppFactory,
    stores: Databases,
    tmp_path: Path,
    args: tuple[str, ...],
    message: str,
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        await phone_login(client, app, KG)
        await phone_login(client, app, US)
    result = await promote(stores, tmp_path, *args)
    assert result.exit_code == 1
    assert message in result.output
    assert await user_types(stores, "kg") == {KG: UserType.MEMBER}
    assert await user_types(stores, "us") == {US: UserType.MEMBER}
