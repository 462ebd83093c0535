"""The viewer's profile and preferences over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.auth import User
from tests.factories import create_customer, token_for
from tests.helpers import VIEWER, data, error, error_code, gql, http_client, phone_login, viewer

AppFactory = Callable[..., Starlette]
KG = "+996700123456"

UPDATE_PROFILE = """
mutation ($input: ProfileInput!) {
  updateProfile(input: $input) { id firstName lastName timezone language }
}
"""
UPDATE_PREFERENCES = "mutation ($p: JSON!) { updatePreferences(patch: $p) { id preferences } }"


async def signed_in(app: Starlette, client: httpx.AsyncClient) -> str:
    token: str = (await phone_login(client, app, KG))["accessToken"]
    return token


async def stored_user(stores: Databases) -> Any:
    async with stores.store("kg", "auth").connect() as conn:
        return (await conn.execute(select(User).where(User.phone == KG))).one()


async def profile(
    client: httpx.AsyncClient, token: str, headers: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    return await gql(client, UPDATE_PROFILE, {"input": fields}, token=token, headers=headers)


async def test_update_profile_sets_clears_and_keeps_fields(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        token = await signed_in(app, client)
        updated = data(
            await profile(
                client,
                token,
                firstName="Айгуль",
                lastName="Токтогулова",
                timezone="Asia/Bishkek",
                language="ky",
            )
        )["updateProfile"]
        assert updated["firstName"] == "Айгуль"
        assert updated["timezone"] == "Asia/Bishkek"
        # Omitted fields stay; null clears.
        again = data(await profile(client, token, lastName=None, language="ru"))["updateProfile"]
        assert again == {**updated, "lastName": None, "language": "ru"}
        me = data(await viewer(client, token))["viewer"]
        assert me["timezone"] == "Asia/Bishkek"
    row = await stored_user(stores)
    assert (row.first_name, row.last_name, row.timezone, row.language) == (
        "Айгуль",
        None,
        "Asia/Bishkek",
        "ru",
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"firstName": "x" * 101}, "first_name"),
        ({"language": "x" * 36}, "language"),
    ],
)
async def test_bad_profile_values_change_nothing(
    app_factory: AppFactory, stores: Databases, fields: dict[str, Any], field: str
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        token = await signed_in(app, client)
        data(await profile(client, token, firstName="Bakyt", timezone="Asia/Bishkek"))
        body = await profile(client, token, **{"lastName": "Changed", **fields})
        assert error_code(body) == "BAD_USER_INPUT"
        assert error(body)["extensions"]["field"] == field
    row = await stored_user(stores)
    assert (row.first_name, row.last_name, row.timezone) == ("Bakyt", None, "Asia/Bishkek")


async def test_profile_and_preferences_need_a_signed_in_user(
    app_factory: AppFactory, stores: Databases
) -> None:
    async with http_client(app_factory()) as client:
        assert error_code(await gql(client, UPDATE_PROFILE, {"input": {}})) == "UNAUTHENTICATED"
        body = await gql(client, UPDATE_PREFERENCES, {"p": {"a": 1}})
        assert error_code(body) == "UNAUTHENTICATED"


async def test_a_conflicting_x_market_changes_nothing(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        token = await signed_in(app, client)
        body = await profile(client, token, headers={"X-Market": "us"}, firstName="Other")
        assert error_code(body) == "MARKET_MISMATCH"
        assert error_code(await viewer(client, token, headers={"X-Market": "us"})) == (
            "MARKET_MISMATCH"
        )
    assert (await stored_user(stores)).first_name is None


async def preferences(client: httpx.AsyncClient, token: str, patch: Any) -> dict[str, Any]:
    return await gql(client, UPDATE_PREFERENCES, {"p": patch}, token=token)


async def test_preferences_merge_and_null_removes(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        token = await signed_in(app, client)
        assert data(await viewer(client, token))["viewer"]["preferences"] == {}
        data(await preferences(client, token, {"notifications": {"sms": True, "email": True}}))
        data(await preferences(client, token, {"notifications": {"push": True}, "theme": "dark"}))
        merged = data(await preferences(client, token, {"notifications": {"email": None}}))
        assert merged["updatePreferences"]["preferences"] == {
            "notifications": {"sms": True, "push": True},
            "theme": "dark",
        }
        cleared = data(await preferences(client, token, {"theme": None, "notifications": None}))
        assert cleared["updatePreferences"]["preferences"] == {}
        assert data(await gql(client, VIEWER, token=token))["viewer"]["preferences"] == {}
    assert (await stored_user(stores)).preferences == {}


@pytest.mark.parametrize("patch", [[1, 2], "dark", 3, True])
async def test_a_preferences_patch_must_be_an_object(
    app_factory: AppFactory, stores: Databases, patch: Any
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        token = await signed_in(app, client)
        data(await preferences(client, token, {"theme": "dark"}))
        assert error_code(await preferences(client, token, patch)) == "BAD_USER_INPUT"
    assert (await stored_user(stores)).preferences == {"theme": "dark"}


def nested(depth: int) -> Any:
    """A JSON object nesting `depth` objects, itself included."""
    value: Any = "deep"
    for _ in range(depth):
        value = {"k": value}
    return value


async def test_preferences_past_the_caps_are_refused_and_nothing_changes(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory(preferences_max_bytes=1024, preferences_max_depth=4)
    async with http_client(app) as client:
        token = await signed_in(app, client)
        data(await preferences(client, token, {"theme": "dark", "a": nested(3)}))
        deep = await preferences(client, token, {"b": nested(4)})  # 5 levels with the patch
        big = await preferences(client, token, {"note": "x" * 1100})
        # Each patch alone fits; together they would not.
        data(await preferences(client, token, {"n1": "x" * 500}))
        grown = await preferences(client, token, {"n2": "x" * 500})
    for body, says in ((deep, "5 levels deep; at most 4"), (big, "at most 1024")):
        assert error_code(body) == "BAD_USER_INPUT"
        assert says in error(body)["message"]
    assert error_code(grown) == "BAD_USER_INPUT"
    assert "The preferences take" in error(grown)["message"]
    assert (await stored_user(stores)).preferences == {
        "theme": "dark",
        "a": nested(3),
        "n1": "x" * 500,
    }


async def test_stored_preferences_too_deep_to_answer_still_read_on_both_paths(
    app_factory: AppFactory, stores: Databases
) -> None:
    """Preferences stored before the caps (300 levels): every read answers, the part past
    PREFERENCES_READ_DEPTH as null, and the admin's user list too."""
    app = app_factory()
    async with http_client(app) as client:
        token = await signed_in(app, client)
        async with stores.store("kg", "auth").begin() as session:
            await session.execute(
                User.__table__.update().where(User.phone == KG).values(preferences=nested(300))
            )
        read = data(await viewer(client, token))["viewer"]["preferences"]
        admin = await create_customer(stores, "kg", user_type="ADMIN")
        listed = data(
            await gql(
                client,
                '{ users(market: "kg") { edges { node { phone preferences } } } }',
                token=token_for(app, "kg", admin, admin=True),
            )
        )["users"]["edges"]
    expected: Any = None
    for _ in range(32):
        expected = {"k": expected}
    assert read == expected
    assert [n["node"]["preferences"] for n in listed if n["node"]["phone"] == KG] == [expected]
