"""Erasure: `deleteAccount` and `marketgraph users erase`/`audit`. A user with a cart, a wallet,
orders placed through checkout and API keys they created is erased; then the audit finds no
personal row in any store, their tokens are refused, and the market's books are unchanged."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, update
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models import metadata_for
from marketgraph.db.models.app import Order, OrderItem, WalletTransaction
from marketgraph.db.models.auth import User, UserType
from marketgraph.erasure_command import audit as audit_command
from marketgraph.erasure_command import erase as erase_command
from marketgraph.ids import encode_id
from marketgraph.kv import KeyValueStore, RedisStore
from marketgraph.resolvers import erasure
from marketgraph.resolvers.erasure import TABLE_POLICY, Audit, Subject
from marketgraph.settings import ROLES
from marketgraph.webhooks import sign
from tests.factories import WEBHOOK_SECRET, create_customer, create_order, create_product, gid
from tests.helpers import (
    DEFAULT_PASSWORD,
    allow_resend,
    data,
    error_code,
    gql,
    http_client,
    login,
    phone_login,
    refresh,
    register,
    request_code,
    sms_code,
    verify_code,
    viewer,
)

AppFactory = Callable[..., Starlette]
KG_ADMIN = "+996700123456"
KG_PHONE = "+996555123456"
US_PHONE = "+12015550123"
EMAIL = "aida@example.com"

DELETE = """
mutation ($password: String, $code: String) { deleteAccount(password: $password, code: $code) }
"""
ADD = "mutation ($p: ID!, $q: Int) { addToCart(productId: $p, quantity: $q) { itemCount } }"
CHECKOUT = """
mutation ($key: String!, $method: PaymentMethod) {
  checkout(idempotencyKey: $key, paymentMethod: $method) { id status total { amountMinor } }
}
"""
CANCEL = "mutation ($id: ID!) { cancelOrder(id: $id) { status } }"
GRANT = """
mutation ($user: ID!, $amount: Int!, $reason: String!) {
  grantCredit(userId: $user, amountMinor: $amount, reason: $reason) { id }
}
"""
CREATE_KEY = 'mutation { createApiKey(name: "shop sync", market: "kg") { key } }'
PROFILE = """
mutation { updateProfile(input: {firstName: "Aida", lastName: "Bekova", timezone: "Asia/Bishkek"}) {
  id } }
"""
PREFERENCES = "mutation ($p: JSON!) { updatePreferences(patch: $p) { id } }"
STATS = """
{ marketStats {
  market { code } users orders revenue { amountMinor } walletBalances { amountMinor } } }
"""
VIEWER_WALLET = "{ viewer { wallet { balance { amountMinor } } } }"


# --- reading the books straight from the stores ------------------------------------------------


async def books(stores: Databases, market: str) -> dict[str, Any]:
    """The market's accounting figures: orders (count, totals, lines) and the wallet ledger."""
    async with stores.store(market, "app").connect() as conn:
        orders = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(Order.total_minor), 0),
                    func.array_agg(Order.number),
                ).select_from(Order)
            )
        ).one()
        lines = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(OrderItem.quantity * OrderItem.unit_price_minor), 0),
                ).select_from(OrderItem)
            )
        ).one()
        ledger = (
            await conn.execute(
                select(
                    func.count(), func.coalesce(func.sum(WalletTransaction.amount_minor), 0)
                ).select_from(WalletTransaction)
            )
        ).one()
    return {
        "orders": orders[0],
        "order_totals": orders[1],
        "numbers": sorted(orders[2] or []),
        "lines": tuple(lines),
        "ledger": tuple(ledger),
    }


async def kept_rows(stores: Databases, market: str, numbers: list[str]) -> tuple[Any, Any]:
    """The orders with these numbers, and the wallet transactions of their users."""
    async with stores.store(market, "app").connect() as conn:
        orders = (
            await conn.execute(select(Order).where(Order.number.in_(numbers)).order_by(Order.id))
        ).all()
        users = {o.user_id for o in orders}
        transactions = (
            await conn.execute(
                select(WalletTransaction)
                .where(WalletTransaction.user_id.in_(users))
                .order_by(WalletTransaction.id)
            )
        ).all()
    return orders, transactions


async def stats(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    body = data(await gql(client, STATS, token=token))
    return {s["market"]["code"]: s for s in body["marketStats"]}


async def audit_of(stores: Databases, market: str, user_id: uuid.UUID, **values: str) -> Audit:
    subject = Subject(stores.settings.markets.require(market), user_id, **values)
    return await erasure.audit_user(stores, subject)


def found(report: Audit) -> set[tuple[str, str, str]]:
    """(store, table, verdict) of every row the audit found."""
    return {(row.store, row.table, row.verdict) for row in report.rows}


async def make_admin(client: httpx.AsyncClient, stores: Databases, session: dict[str, Any]) -> str:
    """Make the session's user an ADMIN in the database; a refresh picks the role up."""
    async with stores.store("kg", "auth").begin() as db:
        await db.execute(
            update(User)
            .where(User.phone == session["user"]["phone"])
            .values(user_type=UserType.ADMIN)
        )
    token: str = data(await refresh(client, session["refreshToken"]))["refreshToken"]["accessToken"]
    return token


async def deliver_top_up(client: httpx.AsyncClient, user_gid: str, amount: int, event: str) -> None:
    raw = orjson.dumps(
        {
            "id": event,
            "type": "checkout.session.completed",
            "data": {"user_id": user_gid, "amount_minor": amount, "currency": "KGS"},
        }
    )
    response = await client.post(
        "/webhooks/payments",
        content=raw,
        headers={
            "X-Signature": sign(WEBHOOK_SECRET.encode(), int(time.time()), raw),
            "Content-Type": "application/json",
        },
    )
    assert response.json() == {"status": "processed"}


# --- the scene: a customer with everything, an operator, and bystanders -----------------------


@dataclass
class Scene:
    app: Starlette
    client: httpx.AsyncClient
    stores: Databases
    ops: str  # an admin's access token (another user)
    user_id: uuid.UUID
    user_gid: str
    access: str  # the customer's newest access token
    old_access: str  # one issued earlier (at sign-up)
    refresh: str
    api_keys: list[str]
    balance: int
    bystander: uuid.UUID


async def shop(app: Starlette, client: httpx.AsyncClient, stores: Databases) -> Scene:
    """A KG customer, signed up by email with a phone, who has: a profile and preferences
    naming them, two API keys they created (they were an admin), a wallet with a grant
    (whose reason names them), a top-up and a refund, three orders placed by checkout (one
    paid from the wallet, one cash on delivery, one cancelled) and items left in the cart.
    Beside them: an operator, a KG bystander with an order, and a US user with an order."""
    await allow_resend(app.state.services.kv, KG_ADMIN)
    ops = await make_admin(client, stores, await phone_login(client, app, KG_ADMIN))
    signed = data(await register(client, EMAIL, phone=KG_PHONE, firstName="Aida"))["register"]
    user_gid = signed["user"]["id"]
    async with stores.store("kg", "auth").connect() as conn:
        user_id = (await conn.execute(select(User.id).where(User.email == EMAIL))).scalar_one()
    token = signed["accessToken"]
    data(await gql(client, PROFILE, token=token))
    data(await gql(client, PREFERENCES, {"p": {"newsletter": {"to": EMAIL}}}, token=token))

    # As an admin they created two API keys.
    admin = await make_admin(client, stores, signed)
    keys = [data(await gql(client, CREATE_KEY, token=admin))["createApiKey"]["key"] for _ in "ab"]
    async with stores.store("kg", "auth").begin() as db:
        await db.execute(update(User).where(User.id == user_id).values(user_type=UserType.MEMBER))
    session = data(await login(client, EMAIL, DEFAULT_PASSWORD))["login"]
    access, refresh_token = session["accessToken"], session["refreshToken"]

    app_store = stores.store("kg", "app")
    tea = await create_product(app_store, name="Чай", price_minor=12_500, stock=50)
    cup = await create_product(app_store, name="Чашка", price_minor=3_000, stock=50)
    tea_gid, cup_gid = gid("Product", "kg", tea.id), gid("Product", "kg", cup.id)
    reason = f"Welcome bonus for {EMAIL}"
    data(
        await gql(client, GRANT, {"user": user_gid, "amount": 50_000, "reason": reason}, token=ops)
    )
    await deliver_top_up(client, user_gid, 20_000, "cs_erasure_1")

    data(await gql(client, ADD, {"p": tea_gid, "q": 2}, token=access))
    paid = data(await gql(client, CHECKOUT, {"key": f"{EMAIL}-1"}, token=access))["checkout"]
    assert paid["status"] == "PAID"
    data(await gql(client, ADD, {"p": cup_gid, "q": 3}, token=access))
    cod = {"key": "cod-1", "method": "CASH_ON_DELIVERY"}
    assert data(await gql(client, CHECKOUT, cod, token=access))["checkout"]["status"] == "PLACED"
    data(await gql(client, ADD, {"p": cup_gid, "q": 1}, token=access))
    cancelled = data(await gql(client, CHECKOUT, {"key": "paid-2"}, token=access))["checkout"]
    data(await gql(client, CANCEL, {"id": cancelled["id"]}, token=access))
    data(await gql(client, ADD, {"p": tea_gid, "q": 1}, token=access))
    data(await gql(client, ADD, {"p": cup_gid, "q": 2}, token=access))
    wallet = data(await gql(client, VIEWER_WALLET, token=access))["viewer"]["wallet"]

    bystander = await create_customer(stores, "kg", balance_minor=700)
    await create_order(app_store, "kg", bystander.id, [(tea.id, 1, 12_500)])
    us_user = await create_customer(stores, "us", phone=US_PHONE, balance_minor=300)
    us_product = await create_product(stores.store("us", "app"), price_minor=999)
    await create_order(stores.store("us", "app"), "us", us_user.id, [(us_product.id, 2, 999)])
    return Scene(
        app=app,
        client=client,
        stores=stores,
        ops=ops,
        user_id=user_id,
        user_gid=user_gid,
        access=access,
        old_access=token,
        refresh=refresh_token,
        api_keys=keys,
        balance=wallet["balance"]["amountMinor"],
        bystander=bystander.id,
    )


async def assert_erased(scene: Scene, before: dict[str, Any], stats_before: dict[str, Any]) -> None:
    """No personal row anywhere, every credential refused, the books as they were."""
    client, stores = scene.client, scene.stores
    report = await audit_of(stores, "kg", scene.user_id, phone=KG_PHONE, email=EMAIL)
    assert report.rows == ()
    assert report.is_clean
    assert report.stores == ("kg.auth", "kg.app", "us.auth", "us.app")

    for token in (scene.access, scene.old_access):
        assert error_code(await viewer(client, token)) == "UNAUTHENTICATED"
        assert error_code(await gql(client, VIEWER_WALLET, token=token)) == "UNAUTHENTICATED"
    assert error_code(await refresh(client, scene.refresh)) == "UNAUTHENTICATED"
    assert error_code(await login(client, EMAIL, DEFAULT_PASSWORD)) == "UNAUTHENTICATED"
    for key in scene.api_keys:
        assert error_code(await gql(client, "{ markets { code } }", api_key=key)) == (
            "UNAUTHENTICATED"
        )

    for market in ("kg", "us"):
        assert await books(stores, market) == before[market]
    after = await stats(client, scene.ops)
    assert after["us"] == stats_before["us"]
    kg, was = after["kg"], stats_before["kg"]
    assert (kg["orders"], kg["revenue"]) == (was["orders"], was["revenue"])
    assert kg["users"] == was["users"] - 1
    assert kg["walletBalances"]["amountMinor"] == (
        was["walletBalances"]["amountMinor"] - scene.balance
    )


async def assert_kept_anonymously(scene: Scene, numbers: list[str]) -> None:
    """The erased user's orders and transactions are there, under one id that names nobody,
    with the client's and the admin's free text gone."""
    orders, transactions = await kept_rows(scene.stores, "kg", numbers)
    assert len(orders) == 3 and len(transactions) == 5  # grant, top-up, 2 payments, refund
    [pseudonym] = {o.user_id for o in orders} | {t.user_id for t in transactions}
    assert pseudonym != scene.user_id
    async with scene.stores.store("kg", "auth").connect() as conn:
        assert await conn.scalar(select(func.count()).where(User.id == pseudonym)) == 0
    assert all(o.idempotency_key == f"erased:{o.id}" for o in orders)
    assert all(t.wallet_id is None and t.reason is None for t in transactions)
    assert sorted(t.kind for t in transactions) == [
        "GRANT",
        "PAYMENT",
        "PAYMENT",
        "REFUND",
        "TOP_UP",
    ]
    assert [t.external_id for t in transactions if t.kind == "TOP_UP"] == ["cs_erasure_1"]
    # Nothing was lost by deleting the wallet: the ledger sums to what it held.
    assert sum(t.amount_minor for t in transactions) == scene.balance


# --- deleteAccount -----------------------------------------------------------------------------


async def test_delete_account_erases_the_person_and_keeps_the_books(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv, payment_webhook_secret=WEBHOOK_SECRET)
    async with http_client(app) as client:
        scene = await shop(app, client, stores)
        before = {m: await books(stores, m) for m in ("kg", "us")}
        stats_before = await stats(client, scene.ops)
        async with stores.store("kg", "app").connect() as conn:
            numbers = list(
                (await conn.execute(select(Order.number).where(Order.user_id == scene.user_id)))
                .scalars()
                .all()
            )

        report = await audit_of(stores, "kg", scene.user_id)
        assert found(report) == {
            ("kg.auth", "users", "personal"),
            ("kg.auth", "refresh_tokens", "personal"),
            ("kg.auth", "api_keys", "personal"),
            ("kg.app", "carts", "personal"),
            ("kg.app", "cart_items", "personal"),
            ("kg.app", "wallets", "personal"),
            ("kg.app", "orders", "personal"),
            ("kg.app", "order_items", "kept for accounting, not personal"),
            ("kg.app", "wallet_transactions", "personal"),
        }
        assert not report.is_clean

        body = await gql(client, DELETE, {"password": DEFAULT_PASSWORD}, token=scene.access)
        assert data(body) == {"deleteAccount": True}

        await assert_erased(scene, before, stats_before)
        await assert_kept_anonymously(scene, numbers)
        # The bystander keeps everything.
        other = await audit_of(stores, "kg", scene.bystander)
        assert {row.table for row in other.personal} == {"users", "carts", "wallets", "orders"}

        # Erasing again changes nothing.
        services = app.state.services
        again = await erasure.erase_user(
            stores,
            services.kv,
            stores.settings.markets.require("kg"),
            scene.user_id,
            services.settings.access_token_ttl,
        )
        assert not again.changed_anything
        await assert_erased(scene, before, stats_before)


async def test_wrong_confirmation_erases_nothing(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        email_user = data(await register(client, EMAIL, phone=KG_PHONE))["register"]
        token = email_user["accessToken"]
        phone_only = await phone_login(client, app, KG_ADMIN)
        rows = found(await audit_of(stores, "kg", uuid.UUID(int=0), email=EMAIL))

        async def erase(variables: dict[str, str], token: str | None) -> str:
            return error_code(await gql(client, DELETE, variables, token=token))

        assert await erase({"password": "not my password"}, token) == "UNAUTHENTICATED"
        assert await erase({"code": "000000"}, token) == "INVALID_CODE"  # no code was sent
        data(await request_code(client, KG_PHONE))
        real = sms_code(app, KG_PHONE)
        wrong = f"{(int(real) + 1) % 10**6:06d}"
        assert await erase({"code": wrong}, token) == "INVALID_CODE"
        assert await erase({}, token) == "BAD_USER_INPUT"
        assert await erase({"password": DEFAULT_PASSWORD, "code": real}, token) == (
            "BAD_USER_INPUT"
        )
        assert await erase({"password": DEFAULT_PASSWORD}, None) == "UNAUTHENTICATED"
        # A phone-only account has no password to confirm with.
        assert await erase({"password": DEFAULT_PASSWORD}, phone_only["accessToken"]) == (
            "UNAUTHENTICATED"
        )

        # Nothing was erased or revoked.
        assert found(await audit_of(stores, "kg", uuid.UUID(int=0), email=EMAIL)) == rows
        assert data(await viewer(client, token))["viewer"]["email"] == EMAIL
        data(await refresh(client, email_user["refreshToken"]))
        assert data(await viewer(client, phone_only["accessToken"]))["viewer"]["phone"] == KG_ADMIN
        # The code was not spent by the wrong tries: it still confirms.
        assert data(await gql(client, DELETE, {"code": real}, token=token)) == {
            "deleteAccount": True
        }


async def test_password_guesses_are_limited(app_factory: AppFactory, stores: Databases) -> None:
    app = app_factory()
    async with http_client(app) as client:
        token = data(await register(client, EMAIL))["register"]["accessToken"]
        for _ in range(10):
            body = await gql(client, DELETE, {"password": "guess-guess"}, token=token)
            assert error_code(body) == "UNAUTHENTICATED"
        body = await gql(client, DELETE, {"password": DEFAULT_PASSWORD}, token=token)
        assert error_code(body) == "RATE_LIMITED"
        assert data(await viewer(client, token))["viewer"]["email"] == EMAIL


async def test_delete_account_with_a_login_code(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        session = await phone_login(client, app, KG_PHONE)
        token = session["accessToken"]
        tea = await create_product(stores.store("kg", "app"), price_minor=100)
        data(await gql(client, ADD, {"p": gid("Product", "kg", tea.id), "q": 2}, token=token))
        async with stores.store("kg", "auth").connect() as conn:
            user_id = (
                await conn.execute(select(User.id).where(User.phone == KG_PHONE))
            ).scalar_one()

        await allow_resend(kv, KG_PHONE)
        data(await request_code(client, KG_PHONE))
        code = sms_code(app, KG_PHONE)
        assert data(await gql(client, DELETE, {"code": code}, token=token)) == {
            "deleteAccount": True
        }

        assert (await audit_of(stores, "kg", user_id, phone=KG_PHONE)).rows == ()
        assert error_code(await viewer(client, token)) == "UNAUTHENTICATED"
        assert error_code(await refresh(client, session["refreshToken"])) == "UNAUTHENTICATED"
        # The code was burnt by the erasure.
        assert error_code(await verify_code(client, KG_PHONE, code)) == "INVALID_CODE"
        # The number may sign up again: as a new user, with nothing of the old one.
        await allow_resend(kv, KG_PHONE)
        fresh = await phone_login(client, app, KG_PHONE)
        assert fresh["user"]["id"] != encode_id("User", "kg", user_id)
        cart = "{ viewer { cart { itemCount } orders { edges { node { id } } } } }"
        assert data(await gql(client, cart, token=fresh["accessToken"]))["viewer"] == {
            "cart": {"itemCount": 0},
            "orders": {"edges": []},
        }


async def test_an_interrupted_erasure_is_finished_by_the_next(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    """A crash after the app store's step leaves the user signed-in-able: they (or an
    operator) erase again, and the second run finishes."""
    app = app_factory(kv=kv, payment_webhook_secret=WEBHOOK_SECRET)
    async with http_client(app) as client:
        scene = await shop(app, client, stores)
        before = {m: await books(stores, m) for m in ("kg", "us")}
        stats_before = await stats(client, scene.ops)

        # The first run stops after the app store.
        first = await erasure.erase_app_rows(stores.store("kg", "app"), scene.user_id)
        assert (first.carts_deleted, first.wallets_deleted, first.orders_anonymised) == (1, 1, 3)
        assert first.wallet_balance_minor == scene.balance
        assert {row.table for row in (await audit_of(stores, "kg", scene.user_id)).rows} == {
            "users",
            "refresh_tokens",
            "api_keys",
        }
        # The user signs in again (which gives them an empty cart and wallet) and retries.
        session = data(await login(client, EMAIL, DEFAULT_PASSWORD))["login"]
        body = await gql(
            client, DELETE, {"password": DEFAULT_PASSWORD}, token=session["accessToken"]
        )
        assert data(body) == {"deleteAccount": True}
        scene.balance = 0  # the second run deleted an empty wallet
        stats_before["kg"]["walletBalances"]["amountMinor"] -= first.wallet_balance_minor
        await assert_erased(scene, before, stats_before)
        assert error_code(await viewer(client, session["accessToken"])) == "UNAUTHENTICATED"


def test_every_table_has_an_erasure_policy() -> None:
    tables = {f"{role}.{name}" for role in ROLES for name in metadata_for(role).tables}
    assert set(TABLE_POLICY) == tables


async def test_the_audit_finds_the_user_named_in_free_text_in_any_market(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        await phone_login(client, app, KG_PHONE)
    # A product somewhere else mentions the number (without its plus).
    await create_product(stores.store("us", "app"), description="Call 996555123456 to order")
    report = await audit_of(stores, "kg", uuid.UUID(int=0), phone=KG_PHONE)
    assert {(r.store, r.table, r.matched) for r in report.personal} == {
        ("kg.auth", "users", ("phone in phone",)),
        ("kg.auth", "refresh_tokens", ("user_id -> users",)),  # found through the user
        ("us.app", "products", ("phone in description",)),
    }
    assert [r.policy for r in report.rows if r.table == "products"] == [
        "not user data: edit by hand"
    ]


# --- the operator's commands -------------------------------------------------------------------


async def invoke(
    stores: Databases,
    tmp_path: Path,
    command: Any,
    *args: str,
    redis: bool,
    input: str | None = None,
) -> Result:
    """Run a command as an operator would, against the test databases (in a thread: it runs
    its own event loop)."""
    env = {**stores.settings.database_urls, "DATA_DIR": str(tmp_path)}
    if redis:
        env["REDIS_URL"] = os.environ["TEST_REDIS_URL"]
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, command, list(args), env=env, input=input, catch_exceptions=False
    )


# The shared Redis outlives the test: limits no rerun within their windows can reach.
ROOMY_LIMITS = {
    "register_ip_hourly": 100_000,
    "register_email_hourly": 100_000,
    "login_code_phone_hourly": 100_000,
    "login_code_ip_hourly": 100_000,
    "email_login_ip_hourly": 100_000,
    "email_login_account_daily": 100_000,
    "login_code_daily_guesses": 100_000,
}


@pytest.fixture
def shared_redis() -> KeyValueStore:
    """The Redis a server and the CLI share (the CLI's default key prefix)."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: the CLI cannot reach the server's revocations")
    return RedisStore(url)


async def test_the_erase_and_audit_commands(
    app_factory: AppFactory, stores: Databases, shared_redis: KeyValueStore, tmp_path: Path
) -> None:
    app = app_factory(kv=shared_redis, payment_webhook_secret=WEBHOOK_SECRET, **ROOMY_LIMITS)
    try:
        async with http_client(app) as client:
            scene = await shop(app, client, stores)
            before = {m: await books(stores, m) for m in ("kg", "us")}
            stats_before = await stats(client, scene.ops)

            audited = await invoke(stores, tmp_path, audit_command, scene.user_gid, redis=True)
            assert audited.exit_code == 1, audited.output
            lines = audited.output.splitlines()
            assert lines[0] == (
                f"audit of user {scene.user_gid} (phone {KG_PHONE}, email {EMAIL}) of market kg"
            )
            assert "kg.auth: 6 rows, 6 personal" in lines  # user, 3 refresh tokens, 2 keys
            assert "us.auth: no rows" in lines and "us.app: no rows" in lines
            assert any(
                line.startswith("  order_items ")
                and "by order_id -> orders; kept for accounting, not personal" in line
                for line in lines
            )
            assert lines[-1].endswith("personal rows name this user")

            # Asked, and not confirmed: nothing happens.
            refused = await invoke(
                stores, tmp_path, erase_command, KG_PHONE, "--market", "kg", redis=True, input="n\n"
            )
            assert refused.exit_code == 1 and "Aborted" in refused.output
            assert data(await viewer(client, scene.access))["viewer"]["email"] == EMAIL

            erased = await invoke(
                stores, tmp_path, erase_command, "+996 555 123 456", "--yes", redis=True
            )
            assert erased.exit_code == 0, erased.output
            assert erased.output.splitlines() == [
                f"erased user {scene.user_gid} of market kg",
                "  kg.auth: deleted users 1, refresh tokens 3, API keys 2",
                "  kg.app: deleted carts 1 (2 items), wallets 1 (balance 450,00\u00a0сом, "
                "the sum of the kept transactions)",
                "  kg.app: kept for accounting under an anonymous id: orders 3, "
                "wallet transactions 5",
                "  sessions: every access token issued until now is refused",
            ]
            assert scene.balance == 45_000
            await assert_erased(scene, before, stats_before)

            clean = await invoke(
                stores,
                tmp_path,
                audit_command,
                scene.user_gid,
                "--phone",
                KG_PHONE,
                "--email",
                EMAIL,
                redis=True,
            )
            assert clean.exit_code == 0, clean.output
            assert clean.output.splitlines() == [
                f"audit of user {scene.user_gid} (phone {KG_PHONE}, email {EMAIL}) of market kg",
                f"looking for: id {scene.user_id}, phone {KG_PHONE}, email {EMAIL}",
                "kg.auth: no rows",
                "kg.app: no rows",
                "us.auth: no rows",
                "us.app: no rows",
                "no personal row names this user",
            ]
            by_phone = await invoke(stores, tmp_path, audit_command, KG_PHONE, redis=True)
            assert by_phone.exit_code == 0, by_phone.output
            assert by_phone.output.splitlines()[:2] == [
                f"audit of phone {KG_PHONE} in market kg (no such user now)",
                f"looking for: phone {KG_PHONE}",
            ]
            bad = await invoke(stores, tmp_path, audit_command, "not-an-id", redis=True)
            assert bad.exit_code == 2 and "INVALID_PHONE" in bad.output

            again = await invoke(stores, tmp_path, erase_command, scene.user_gid, "-y", redis=True)
            assert again.exit_code == 0, again.output
            assert again.output == f"nothing left to erase of user {scene.user_gid} in market kg\n"
            gone = await invoke(
                stores, tmp_path, erase_command, KG_PHONE, "--market", "kg", "-y", redis=True
            )
            assert gone.exit_code == 1
            assert "NOT_FOUND" in gone.output and "name the user by id" in gone.output
            assert await books(stores, "kg") == before["kg"]
    finally:
        await shared_redis.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((EMAIL,), "BAD_USER_INPUT: Name the market of an email with --market"),
        ((EMAIL, "--market", "us"), "NOT_FOUND: No user aida@example.com in market us"),
        ((KG_PHONE, "--market", "us"), f"NOT_FOUND: {KG_PHONE} is a user of market kg"),
        (("not-an-id",), "INVALID_PHONE"),
        ((EMAIL, "--market", "zz"), "UNSUPPORTED_MARKET"),
    ],
)
async def test_erase_refuses_what_it_cannot_find(
    app_factory: AppFactory, stores: Databases, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    async with http_client(app_factory()) as client:
        data(await register(client, EMAIL, phone=KG_PHONE))
    result = await invoke(stores, tmp_path, erase_command, *args, "--yes", redis=False)
    assert result.exit_code == 1
    assert message in result.output
    report = await audit_of(stores, "kg", uuid.UUID(int=0), email=EMAIL)
    assert {row.table for row in report.personal} == {"users", "refresh_tokens"}


async def test_erase_by_email_without_redis_warns_about_access_tokens(
    app_factory: AppFactory, stores: Databases, tmp_path: Path
) -> None:
    async with http_client(app_factory()) as client:
        session = data(await register(client, "Aida@Example.com"))["register"]
    result = await invoke(
        stores, tmp_path, erase_command, "AIDA@example.com", "--market", "kg", "-y", redis=False
    )
    assert result.exit_code == 0, result.output
    assert "warning: REDIS_URL is not set" in result.output
    assert f"erased user {session['user']['id']} of market kg" in result.output
    async with http_client(app_factory()) as client:
        assert error_code(await refresh(client, session["refreshToken"])) == "UNAUTHENTICATED"
