"""Concurrent preference patches to one user: every patch survives (no lost updates)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import select
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.auth import User
from tests.helpers import data, gql, http_client, phone_login, viewer

KG = "+996700123456"
PATCH = "mutation ($p: JSON!) { updatePreferences(patch: $p) { preferences } }"
N = 20


async def test_twenty_concurrent_nested_patches_all_survive(
    app_factory: Callable[..., Starlette], stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        token = (await phone_login(client, app, KG))["accessToken"]
        data(
            await gql(
                client,
                PATCH,
                {"p": {"notifications": {"keep": "me"}, "theme": "dark"}},
                token=token,
            )
        )

        bodies = await asyncio.gather(
            *(
                gql(client, PATCH, {"p": {"notifications": {f"k{i}": True}}}, token=token)
                for i in range(N)
            )
        )
        for body in bodies:
            data(body)

        expected = {"keep": "me", **{f"k{i}": True for i in range(N)}}
        me = data(await viewer(client, token))["viewer"]
        assert me["preferences"] == {"notifications": expected, "theme": "dark"}

        # Null removes half of them, again all at once.
        bodies = await asyncio.gather(
            *(
                gql(client, PATCH, {"p": {"notifications": {f"k{i}": None}}}, token=token)
                for i in range(0, N, 2)
            )
        )
        for body in bodies:
            data(body)

    async with stores.store("kg", "auth").connect() as conn:
        stored = (await conn.execute(select(User.preferences).where(User.phone == KG))).scalar()
    assert stored == {
        "notifications": {"keep": "me", **{f"k{i}": True for i in range(1, N, 2)}},
        "theme": "dark",
    }
