"""Erasure: deleting a user's personal data from every store, and auditing what names them.

What erasure does, table by table (`TABLE_POLICY` says the same to the audit):

auth store
- `users`: the row is deleted (phone, email, password hash, names, timezone, language,
  preferences, login times). Nothing references it once the rows below are gone, so no
  tombstone is kept.
- `refresh_tokens`: deleted (every family), after being revoked at the start.
- `api_keys`: the keys the user created are deleted, which also ends their use (the
  foreign key would only null `created_by` and leave the keys live and unexplained).

app store
- `carts`, `cart_items`: deleted.
- `wallets`: deleted. Nothing is lost for accounting: every balance change has its
  transaction, so the kept transactions sum to the balance the wallet held, and
  `Erasure.wallet_balance_minor` reports it for settling.
- `orders` (and their `order_items`): kept for accounting — number, status, payment
  method, total, dates and the products with their quantities and prices stay, so the
  market's figures do not move. `idempotency_key` is free text the client chose: it is
  replaced by one derived from the order's id.
- `wallet_transactions`: kept for accounting — kind, amount, date, order and the payment
  provider's `external_id` (what reconciliation with the provider needs) stay; `reason`
  (free text an admin wrote, which may name the person) is removed and `wallet_id` is
  detached from the deleted wallet.

The `user_id` of kept orders and transactions is replaced by a fresh random UUID, one
per erasure, stored nowhere else. Keeping the old id would only pseudonymise: it is still
in issued access tokens, database backups and the payment provider's records (its top-up
events name the user), each of which could tie the kept rows back to the person. The
fresh id keeps a former customer's orders and transactions together (refunds,
chargebacks) while naming nobody, so an audit by the old id finds no row at all. Nulling
the column would lose that grouping and weaken the `NOT NULL` and uniqueness rules every
other order obeys.

Order of the writes (a crash anywhere leaves something a retry finishes):
1. refuse the user's sessions: the access-token cutoff in the key-value store, refresh
   tokens revoked — so new requests as the user are refused while the rest runs;
2. the app store, in one transaction;
3. the auth store, in one transaction: the users row goes last;
4. the cutoff again, for any access token issued while the steps ran.
Until step 3 the user still exists, so after a crash they (or an operator, by phone, email
or id) can run erasure again; a sign-in in between only recreates an empty cart and wallet,
which the retry deletes. After step 3 the operator's `users erase USER_ID` finishes step 4.
Every step is idempotent: erasing an erased user changes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Enum,
    String,
    Table,
    Text,
    Uuid,
    cast,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from marketgraph.auth import passwords, refresh_tokens
from marketgraph.auth.authenticate import revoke_user_tokens
from marketgraph.auth.rate_limits import Limit, check, spend
from marketgraph.db.databases import Databases, Store
from marketgraph.db.models import metadata_for
from marketgraph.db.models.app import Cart, CartItem, Order, Wallet, WalletTransaction
from marketgraph.db.models.auth import ApiKey, RefreshToken, User
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id
from marketgraph.kv import KeyValueStore
from marketgraph.markets import Market, MarketRegistry, detect_market
from marketgraph.resolvers.accounts import (
    EMAIL_FAILURE_LIMIT,
    EMAIL_FAILURE_WINDOW,
    TOO_MANY_SIGN_INS,
)
from marketgraph.settings import ROLES

if TYPE_CHECKING:
    from marketgraph.context import RequestContext

DELETED = "deleted by erasure"
KEPT = "kept for accounting"

# What erasure does with each table's rows that name the user; every table has an entry
# (a test holds this against the models, so a new table needs a decision).
TABLE_POLICY: dict[str, str] = {
    "auth.users": DELETED,
    "auth.refresh_tokens": DELETED,
    "auth.api_keys": f"{DELETED} (the keys the user created)",
    "app.carts": DELETED,
    "app.cart_items": f"{DELETED} (with the cart)",
    "app.wallets": f"{DELETED} (its transactions are kept)",
    "app.orders": f"{KEPT}, under an anonymous user id",
    "app.order_items": f"{KEPT}, with their order",
    "app.wallet_transactions": f"{KEPT}, under an anonymous user id, reason removed",
    "app.products": "not user data: edit by hand",
}


# --- erasure ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppErasure:
    """What erasure did in the app store."""

    carts_deleted: int = 0
    cart_items_deleted: int = 0
    wallets_deleted: int = 0
    wallet_balance_minor: int = 0  # what the deleted wallet held; the kept ledger sums to it
    orders_anonymised: int = 0
    transactions_anonymised: int = 0


@dataclass(frozen=True, slots=True)
class AuthErasure:
    """What erasure did in the auth store."""

    user_deleted: bool = False
    refresh_tokens_deleted: int = 0
    api_keys_deleted: int = 0


@dataclass(frozen=True, slots=True)
class Erasure:
    """The outcome of erasing one user; all zero when there was nothing left to erase."""

    market: Market
    user_id: uuid.UUID
    app: AppErasure
    auth: AuthErasure

    @property
    def changed_anything(self) -> bool:
        return self.app != AppErasure() or self.auth != AuthErasure()


async def erase_user(
    databases: Databases, kv: KeyValueStore, market: Market, user_id: uuid.UUID, access_ttl: int
) -> Erasure:
    """Erase `user_id` of `market` (the module's policy and order); idempotent, so running it
    again finishes an interrupted erasure and repeats a finished one harmlessly."""
    auth = databases.store(market.code, "auth")
    await revoke_user_tokens(kv, market.code, user_id, access_ttl)
    await refresh_tokens.revoke_all_for_user(auth, user_id)
    app_done = await erase_app_rows(databases.store(market.code, "app"), user_id)
    auth_done = await erase_auth_rows(auth, user_id)
    await revoke_user_tokens(kv, market.code, user_id, access_ttl)
    return Erasure(market, user_id, app_done, auth_done)


async def erase_app_rows(app: Store, user_id: uuid.UUID) -> AppErasure:
    """Delete the user's cart and wallet and anonymise their orders and wallet transactions,
    in one transaction.

    Locks in the order checkout and cancellation use, so none can deadlock with it: the cart
    row, then orders in primary-key order, then the wallet. A checkout that waited on the
    cart finds it empty and rolls back. A write already past its checks when erasure began
    (a credit recreating the wallet, say) can still land after it: the audit shows such a
    row and erasing again removes it.
    """
    pseudonym = uuid.uuid4()  # random, so it says nothing (not even the erasure's time)
    async with app.begin() as session:
        cart_id = (
            await session.execute(select(Cart.id).where(Cart.user_id == user_id).with_for_update())
        ).scalar_one_or_none()
        await session.execute(
            select(Order.id).where(Order.user_id == user_id).order_by(Order.id).with_for_update()
        )
        wallet = (
            await session.execute(
                select(Wallet.id, Wallet.balance_minor)
                .where(Wallet.user_id == user_id)
                .with_for_update()
            )
        ).one_or_none()
        items = 0
        if cart_id is not None:
            items = await _rows_changed(
                session, delete(CartItem).where(CartItem.cart_id == cart_id)
            )
            await session.execute(delete(Cart).where(Cart.id == cart_id))
        orders = await _rows_changed(
            session,
            update(Order)
            .where(Order.user_id == user_id)
            .values(
                user_id=pseudonym,
                idempotency_key=literal("erased:") + cast(Order.id, Text),
                updated_at=func.now(),
            ),
        )
        of_user = WalletTransaction.user_id == user_id
        if wallet is not None:
            of_user = or_(of_user, WalletTransaction.wallet_id == wallet.id)
        transactions = await _rows_changed(
            session,
            update(WalletTransaction)
            .where(of_user)
            .values(user_id=pseudonym, wallet_id=None, reason=None),
        )
        if wallet is not None:
            await session.execute(delete(Wallet).where(Wallet.id == wallet.id))
    return AppErasure(
        carts_deleted=int(cart_id is not None),
        cart_items_deleted=items,
        wallets_deleted=int(wallet is not None),
        wallet_balance_minor=wallet.balance_minor if wallet is not None else 0,
        orders_anonymised=orders,
        transactions_anonymised=transactions,
    )


async def erase_auth_rows(auth: Store, user_id: uuid.UUID) -> AuthErasure:
    """Delete the API keys the user created, their refresh tokens and their users row, in one
    transaction (the user row locked first, as profile writes lock it)."""
    async with auth.begin() as session:
        found = (
            await session.execute(select(User.id).where(User.id == user_id).with_for_update())
        ).scalar_one_or_none()
        keys = await _rows_changed(session, delete(ApiKey).where(ApiKey.created_by == user_id))
        tokens = await _rows_changed(
            session, delete(RefreshToken).where(RefreshToken.user_id == user_id)
        )
        if found is not None:
            await session.execute(delete(User).where(User.id == user_id))
    return AuthErasure(
        user_deleted=found is not None, refresh_tokens_deleted=tokens, api_keys_deleted=keys
    )


async def _rows_changed(session: AsyncSession, statement: Executable) -> int:
    """How many rows a DELETE or UPDATE (without RETURNING) changed."""
    result = await session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


# --- the deleteAccount mutation ---------------------------------------------------------------


async def delete_my_account(
    ctx: RequestContext, *, password: str | None, code: str | None
) -> Erasure:
    """Erase the signed-in user after they prove it is them again: their password, or a fresh
    login code sent to their phone. Wrong proof erases nothing and answers as sign-in does
    (`UNAUTHENTICATED` for a password, `INVALID_CODE` for a code)."""
    user_id = ctx.require_user()
    await reauthenticate(ctx, user_id, password=password, code=code)
    erased = await erase_user(
        ctx.databases, ctx.kv, ctx.market, user_id, ctx.settings.access_token_ttl
    )
    ctx.forget_reads()
    return erased


async def reauthenticate(
    ctx: RequestContext, user_id: uuid.UUID, *, password: str | None, code: str | None
) -> None:
    """Raise unless `password` is the user's, or `code` the live login code of their phone.

    Password tries count against the user (as sign-ins count against an account), before the
    slow check, so a stolen access token cannot be used to guess the password at length; a
    code's tries are counted by the login codes themselves and the right one is burnt.
    """
    if (password is None) == (code is None):
        raise DomainError(
            ErrorCode.BAD_USER_INPUT,
            "Confirm with your password or with a login code sent to your phone",
            field="password" if password is None else "code",
        )
    async with ctx.auth.connect() as conn:
        user = (
            await conn.execute(
                select(User.phone, User.password_hash, User.is_active).where(User.id == user_id)
            )
        ).one_or_none()
    if user is None:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "Sign in first")
    if not user.is_active:
        raise DomainError(ErrorCode.FORBIDDEN, "This account is disabled")
    if password is not None:
        tries = Limit(
            f"reauth:{ctx.market.code}:{user_id}",
            EMAIL_FAILURE_LIMIT,
            EMAIL_FAILURE_WINDOW,
            TOO_MANY_SIGN_INS,
        )
        await check(ctx.kv, (tries,))
        await spend(ctx.kv, (tries,))
        if not await passwords.verify_password(user.password_hash, password):
            raise DomainError(ErrorCode.UNAUTHENTICATED, "Wrong password")
        return
    assert code is not None
    if user.phone is None:
        raise DomainError(ErrorCode.INVALID_CODE, "The code is wrong or has expired")
    await ctx.services.login_codes.verify(user.phone, code, ctx.markets)


# --- finding a user for the operator's commands -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom an operator named: the market, the user id if known, and the phone and email to
    look for (from the users row while it exists, or as given)."""

    market: Market
    user_id: uuid.UUID | None
    phone: str | None = None
    email: str | None = None


async def find_subject(
    databases: Databases, markets: MarketRegistry, who: str, market_code: str | None
) -> Subject:
    """`who` is a user's global id (its market is inside), an E.164 phone (its market is the
    number's) or an email (needs `market_code`); `market_code`, when given, must agree."""
    given = markets.require(market_code.strip().lower()) if market_code else None
    if "@" in who:
        if given is None:
            raise DomainError(ErrorCode.BAD_USER_INPUT, "Name the market of an email with --market")
        condition: ColumnElement[bool] = func.lower(User.email) == who.strip().lower()
        subject = Subject(given, None, email=who.strip().lower())
    else:
        try:
            parsed = decode_id(who.strip(), field="USER")
        except DomainError:
            market, e164 = detect_market(who, markets)
            condition = User.phone == e164
            subject = Subject(market, None, phone=e164)
        else:
            if parsed.type_name != "User":
                raise DomainError(ErrorCode.BAD_USER_INPUT, f"{who} is a {parsed.type_name} id")
            market = markets.require(parsed.market)
            condition = User.id == parsed.key
            subject = Subject(market, parsed.key)
        if given is not None and given.code != subject.market.code:
            raise DomainError(
                ErrorCode.NOT_FOUND, f"{who} is a user of market {subject.market.code}"
            )
    async with databases.store(subject.market.code, "auth").connect() as conn:
        row = (
            await conn.execute(select(User.id, User.phone, User.email).where(condition))
        ).one_or_none()
    if row is None:
        return subject
    return Subject(subject.market, row.id, row.phone, row.email)


# --- the audit ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FoundRow:
    """A row that names the user: by one of its columns, or by referencing a row that does
    (then it is personal unless its table is kept for accounting)."""

    store: str  # "kg.app"
    table: str
    key: str  # the row's primary key
    matched: tuple[str, ...]  # "user_id", "email in reason", "cart_id -> carts"
    personal: bool
    policy: str  # what erasure does with this table's rows

    @property
    def verdict(self) -> str:
        return "personal" if self.personal else f"{KEPT}, not personal"


@dataclass(frozen=True, slots=True)
class Audit:
    """Every row of every store that names the user; `unreadable` lists stores that could not
    be scanned (then the audit proves nothing)."""

    subject: Subject
    stores: tuple[str, ...]
    rows: tuple[FoundRow, ...]
    unreadable: tuple[str, ...] = ()

    @property
    def personal(self) -> list[FoundRow]:
        return [row for row in self.rows if row.personal]

    @property
    def is_clean(self) -> bool:
        """Every store was read and none holds a personal row of the user."""
        return not self.personal and not self.unreadable


@dataclass(slots=True)
class _Needles:
    user_id: uuid.UUID | None
    # Lower-cased substrings that name the user in text: the email, and the phone's digits
    # (so "+996700123456" and "996700123456" both match).
    texts: dict[str, str] = field(default_factory=dict)


async def audit_user(databases: Databases, subject: Subject) -> Audit:
    """Scan every table of every store of every market for rows naming the user: any UUID
    column equal to their id, any text, JSON or array column containing their email or
    phone, and the rows that reference such rows (a cart's items, an order's lines).

    Each table costs one statement (a sequential scan where no index serves it), so the
    audit is an operator's tool, not a request path. The user's market comes first; the
    other markets are scanned the same way, to show nothing leaked there.
    """
    needles = _Needles(subject.user_id)
    if subject.email:
        needles.texts["email"] = subject.email.lower()
    if subject.phone:
        needles.texts["phone"] = subject.phone.lstrip("+")
    order = {subject.market.code: 0}
    stores = sorted(
        databases.stores,
        key=lambda s: (order.get(s.key.market, 1), s.key.market, ROLES.index(s.key.role)),
    )
    results = await asyncio.gather(
        *(_scan_store(store, needles) for store in stores), return_exceptions=True
    )
    rows: list[FoundRow] = []
    unreadable: list[str] = []
    for store, result in zip(stores, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            unreadable.append(f"{_name(store)}: {type(result).__name__}: {result}")
        else:
            rows.extend(result)
    return Audit(subject, tuple(_name(s) for s in stores), tuple(rows), tuple(unreadable))


def _name(store: Store) -> str:
    return f"{store.key.market}.{store.key.role}"


@dataclass(slots=True)
class _Hit:
    table: Table
    key: str
    matched: list[str]  # the columns naming the user, then the references followed
    direct: bool  # a column of the row itself names the user
    parents: set[tuple[str, str]] = field(default_factory=set)


async def _scan_store(store: Store, needles: _Needles) -> list[FoundRow]:
    """The store's rows naming the user, then (to a fixed point) the rows referencing them.

    A row is personal when it names the user itself, or references a personal row and is
    not kept for accounting (a cart's items are, an order's lines are not).
    """
    tables = metadata_for(store.key.role).sorted_tables
    hits: dict[tuple[str, str], _Hit] = {}
    async with store.connect() as conn:
        for table in tables:
            condition = _names_user(table, needles)
            if condition is None:
                continue
            for row in (await conn.execute(select(table).where(condition))).mappings():
                key = _key(table, row)
                hits[(table.name, key)] = _Hit(
                    table, key, list(_matches(table, row, needles)), direct=True
                )
        frontier = set(hits)
        while frontier:
            found: set[tuple[str, str]] = set()
            for table in tables:
                for fk in table.foreign_keys:
                    # Every reference here is to a one-column UUID primary key, which is
                    # what found rows are keyed by.
                    parent = fk.column.table
                    keys = [k for name, k in frontier if name == parent.name]
                    if not keys or not fk.column.primary_key:
                        continue
                    statement = select(table).where(fk.parent.in_([uuid.UUID(k) for k in keys]))
                    for row in (await conn.execute(statement)).mappings():
                        key = _key(table, row)
                        hit = hits.get((table.name, key))
                        if hit is None:
                            hit = hits[(table.name, key)] = _Hit(table, key, [], direct=False)
                            found.add((table.name, key))
                        elif hit.direct:
                            continue  # personal already, and named by its own columns
                        link = f"{fk.parent.name} -> {parent.name}"
                        if link not in hit.matched:
                            hit.matched.append(link)
                        hit.parents.add((parent.name, str(row[fk.parent.name])))
            frontier = found

    def is_personal(at: tuple[str, str], seen: frozenset[tuple[str, str]]) -> bool:
        hit = hits[at]
        if hit.direct:
            return True
        if _policy(store, hit.table).startswith(KEPT):
            return False
        return any(is_personal(p, seen | {at}) for p in hit.parents if p not in seen)

    position = {table.name: n for n, table in enumerate(tables)}
    return [
        FoundRow(
            store=_name(store),
            table=hit.table.name,
            key=hit.key,
            matched=tuple(hit.matched),
            personal=is_personal(at, frozenset()),
            policy=_policy(store, hit.table),
        )
        for at, hit in sorted(hits.items(), key=lambda item: (position[item[0][0]], item[0][1]))
    ]


def _policy(store: Store, table: Table) -> str:
    return TABLE_POLICY.get(f"{store.key.role}.{table.name}", "no policy: decide one")


def _key(table: Table, row: Any) -> str:
    return ",".join(str(row[c.name]) for c in table.primary_key.columns)


def _uuid_columns(table: Table) -> list[Any]:
    return [c for c in table.columns if isinstance(c.type, Uuid)]


def _text_columns(table: Table) -> list[tuple[Any, ColumnElement[str]]]:
    """(column, its lower-cased text) for every column that can hold free text."""
    out: list[tuple[Any, ColumnElement[str]]] = []
    for column in table.columns:
        if isinstance(column.type, String) and not isinstance(column.type, Enum):
            out.append((column, func.lower(column)))
        elif isinstance(column.type, JSONB | ARRAY):
            out.append((column, func.lower(cast(column, Text))))
    return out


def _names_user(table: Table, needles: _Needles) -> ColumnElement[bool] | None:
    conditions: list[ColumnElement[bool]] = []
    if needles.user_id is not None:
        conditions += [column == needles.user_id for column in _uuid_columns(table)]
    for _, text in _text_columns(table):
        conditions += [func.strpos(text, needle) > 0 for needle in needles.texts.values()]
    return or_(false(), *conditions) if conditions else None


def _matches(table: Table, row: Any, needles: _Needles) -> tuple[str, ...]:
    """Which columns of `row` name the user, for the report."""
    out = [
        c.name
        for c in _uuid_columns(table)
        if needles.user_id is not None and row[c.name] == needles.user_id
    ]
    for column, _ in _text_columns(table):
        value = row[column.name]
        if value is None:
            continue
        text = (str(value) if not isinstance(value, str) else value).lower()
        out += [f"{what} in {column.name}" for what, n in needles.texts.items() if n in text]
    # PostgreSQL's text of a JSON or array value may differ from Python's (escapes).
    return tuple(out) or ("a text column",)
