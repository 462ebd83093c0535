"""Accounts: phone and email sign-in, tokens, profile and preferences.

Creating a user writes two stores: the user row in `auth`, then the empty cart
and wallet in `app`. The app rows are created idempotently on *every*
sign-in, so a crash between the two writes leaves a user whom the next
sign-in completes — never one who cannot be finished.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from marketgraph.auth import api_keys, passwords, refresh_tokens
from marketgraph.auth.api_keys import CreatedApiKey
from marketgraph.auth.authenticate import revoke_access_token, revoke_user_tokens
from marketgraph.auth.login_codes import Challenge
from marketgraph.auth.principal import ADMIN, MEMBER
from marketgraph.auth.rate_limits import DAY, HOUR, Limit, check, refund, spend
from marketgraph.auth.tokens import AccessToken, TokenService
from marketgraph.db import read_your_writes
from marketgraph.db.databases import Databases, Store
from marketgraph.db.models.app import Cart, Wallet
from marketgraph.db.models.auth import User, UserType
from marketgraph.db.models.base import new_id
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id, encode_id
from marketgraph.markets import Market, detect_market
from marketgraph.resolvers.statements import one_per_key
from marketgraph.settings import Settings
from marketgraph.text import json_depth

if TYPE_CHECKING:
    from marketgraph.context import RequestContext

USER_COLUMNS = tuple(c for c in User.__table__.c if c.name != "password_hash")
PROFILE_LIMITS = {"first_name": 100, "last_name": 100, "timezone": 64, "language": 35}


@dataclass(frozen=True, slots=True)
class SignedIn:
    """What a successful sign-in returns: tokens and the user's row."""

    access: AccessToken
    refresh_token: str
    user: Row[Any]
    market: Market
    expires_in: int


def roles_of(user: Row[Any]) -> list[str]:
    return [ADMIN, MEMBER] if user.user_type == UserType.ADMIN else [MEMBER]


async def ensure_cart_and_wallet(app: Store, user_id: uuid.UUID) -> None:
    """The user's empty cart and wallet, created once whatever the retries."""
    async with app.begin() as session:
        await session.execute(
            insert(Cart).values(id=new_id(), user_id=user_id).on_conflict_do_nothing()
        )
        await session.execute(
            insert(Wallet).values(id=new_id(), user_id=user_id).on_conflict_do_nothing()
        )


async def sign_in_by_phone(databases: Databases, market: Market, phone: str) -> Row[Any]:
    """Find or create the user of `phone` (E.164) in its market; stamp `last_login_at`."""
    auth = databases.store(market.code, "auth")
    async with auth.begin() as session:
        user = (
            await session.execute(
                insert(User)
                .values(
                    id=new_id(), phone=phone, language=market.language, last_login_at=func.now()
                )
                .on_conflict_do_update(
                    index_elements=[User.phone], set_={"last_login_at": func.now()}
                )
                .returning(*USER_COLUMNS)
            )
        ).one()
    await ensure_cart_and_wallet(databases.store(market.code, "app"), user.id)
    return user


def normalise_email(email: str) -> str:
    """Trimmed and lower-cased: one spelling per address, whatever the client typed."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain or len(email) > 320 or " " in email:
        raise DomainError(ErrorCode.BAD_USER_INPUT, "Enter a valid email address", field="email")
    return email.lower()


async def register(
    databases: Databases,
    market: Market,
    *,
    email: str,
    password: str,
    phone: str | None,
    first_name: str | None,
    last_name: str | None,
) -> Row[Any]:
    """A new email user in `market`; `CONFLICT` when the email (any case) or phone is taken."""
    email = normalise_email(email)
    passwords.check_password_rules(password)
    _check_profile({"first_name": first_name, "last_name": last_name})
    password_hash = await passwords.hash_password(password)
    auth = databases.store(market.code, "auth")
    async with auth.begin() as session:
        user = (
            await session.execute(
                insert(User)
                .values(
                    id=new_id(),
                    email=email,
                    password_hash=password_hash,
                    phone=phone,
                    first_name=first_name,
                    last_name=last_name,
                    language=market.language,
                    last_login_at=func.now(),
                )
                .on_conflict_do_nothing()
                .returning(*USER_COLUMNS)
            )
        ).one_or_none()
    if user is None:
        raise DomainError(ErrorCode.CONFLICT, "An account with this email or phone exists")
    await ensure_cart_and_wallet(databases.store(market.code, "app"), user.id)
    return user


async def authenticate_email(
    databases: Databases, market: Market, email: str, password: str
) -> Row[Any]:
    """The user whose email and password match, or one `UNAUTHENTICATED` for every failure."""
    auth = databases.store(market.code, "auth")
    async with auth.connect() as conn:
        row = (
            await conn.execute(
                select(*USER_COLUMNS, User.password_hash).where(
                    func.lower(User.email) == email.strip().lower()
                )
            )
        ).one_or_none()
    ok = await passwords.verify_password(row.password_hash if row else None, password)
    if row is None or not ok or not row.is_active:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "Wrong email or password")
    async with auth.begin() as session:
        user = (
            await session.execute(
                update(User)
                .where(User.id == row.id)
                .values(last_login_at=func.now())
                .returning(*USER_COLUMNS)
            )
        ).one()
    await ensure_cart_and_wallet(databases.store(market.code, "app"), user.id)
    return user


async def issue_tokens(
    databases: Databases,
    tokens: TokenService,
    settings: Settings,
    market: Market,
    user: Row[Any],
) -> SignedIn:
    """An access token and a refresh token (new family) for a user who just signed in."""
    if not user.is_active:
        raise DomainError(ErrorCode.FORBIDDEN, "This account is disabled")
    # Their first reads (a new account's `me`) must see what signing in wrote.
    await read_your_writes.acting_for(read_your_writes.user_subject(user.id))
    async with databases.store(market.code, "auth").begin() as session:
        refresh = await refresh_tokens.issue(
            session, market.code, user.id, settings.refresh_token_ttl
        )
    return _signed_in(tokens, market, user, refresh.token)


async def refresh(
    databases: Databases, tokens: TokenService, settings: Settings, market: Market, token: str
) -> SignedIn:
    """Rotate a refresh token and issue a fresh access token."""
    auth = databases.store(market.code, "auth")
    successor = await refresh_tokens.rotate(auth, token, settings.refresh_token_ttl)
    user = await get_user(auth, successor.user_id)
    if user is None or not user.is_active:
        await refresh_tokens.revoke_all_for_user(auth, successor.user_id)
        raise DomainError(ErrorCode.UNAUTHENTICATED, "The refresh token is not valid")
    return _signed_in(tokens, market, user, successor.token)


def _signed_in(tokens: TokenService, market: Market, user: Row[Any], refresh: str) -> SignedIn:
    access = tokens.issue(encode_id("User", market.code, user.id), market.code, roles_of(user))
    return SignedIn(access, refresh, user, market, tokens.ttl)


async def get_user(auth: Store, user_id: uuid.UUID) -> Row[Any] | None:
    async with auth.connect() as conn:
        return (await conn.execute(select(*USER_COLUMNS).where(User.id == user_id))).one_or_none()


async def load_users_by_id(conn: AsyncConnection, keys: list[uuid.UUID]) -> list[Row[Any] | None]:
    """Batch function of the users loader: one select for every key of a tick, in key order."""
    return await one_per_key(conn, USER_COLUMNS, User.id, keys)


def _check_profile(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is not None and len(value) > PROFILE_LIMITS[name]:
            raise DomainError(
                ErrorCode.BAD_USER_INPUT,
                f"{name} has at most {PROFILE_LIMITS[name]} characters",
                field=name,
            )


async def update_profile(
    auth: Store, user_id: uuid.UUID, values: dict[str, str | None]
) -> Row[Any]:
    """Set the given profile fields (None clears one); unknown timezones are refused."""
    _check_profile(values)
    timezone = values.get("timezone")
    if timezone is not None:
        _check_timezone(timezone)
    async with auth.begin() as session:
        user = (
            await session.execute(
                update(User)
                .where(User.id == user_id)
                .values(**values, updated_at=func.now())
                .returning(*USER_COLUMNS)
            )
        ).one_or_none()
    if user is None:
        raise DomainError(ErrorCode.NOT_FOUND, "No such user")
    return user


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, f"Unknown timezone {name!r}", field="timezone"
        ) from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Answers nest preferences a few levels deep (data, users, edges, node): past this depth a
# stored value could not be encoded (orjson stops at 255). Only values stored before the
# write caps (PREFERENCES_MAX_DEPTH) can be that deep.
PREFERENCES_READ_DEPTH = 32


def readable_preferences(value: Any) -> Any:
    """Stored preferences as both read paths answer them: what nests past
    PREFERENCES_READ_DEPTH reads as null, so reading a user can never fail on them."""
    if json_depth(value) <= PREFERENCES_READ_DEPTH:
        return value
    return _pruned(value, PREFERENCES_READ_DEPTH)


def _pruned(value: Any, depth: int) -> Any:
    if isinstance(value, dict):
        return {k: _pruned(v, depth - 1) for k, v in value.items()} if depth else None
    if isinstance(value, list):
        return [_pruned(v, depth - 1) for v in value] if depth else None
    return value


def check_preferences(value: Any, max_bytes: int, max_depth: int, what: str) -> None:
    """`BAD_USER_INPUT` when `value` (a patch, or the preferences it makes) passes the caps
    (PREFERENCES_MAX_BYTES of JSON, PREFERENCES_MAX_DEPTH levels)."""
    depth = json_depth(value)
    if depth > max_depth:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT,
            f"{what} nest {depth} levels deep; at most {max_depth}",
            field="patch",
        )
    size = len(orjson.dumps(value))
    if size > max_bytes:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT,
            f"{what} take {size} bytes; at most {max_bytes}",
            field="patch",
        )


async def update_preferences(
    auth: Store, user_id: uuid.UUID, patch: Any, *, max_bytes: int, max_depth: int
) -> Row[Any]:
    """Apply a merge patch under the row's lock, so concurrent patches all survive; the
    result stays within the caps."""
    if not isinstance(patch, dict):
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, "A preferences patch is a JSON object", field="patch"
        )
    check_preferences(patch, max_bytes, max_depth, "The patch's values")
    async with auth.begin() as session:
        current = (
            await session.execute(
                select(User.preferences).where(User.id == user_id).with_for_update()
            )
        ).scalar_one_or_none()
        if current is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No such user")
        merged = merge_patch(current, patch)
        check_preferences(merged, max_bytes, max_depth, "The preferences")
        user = (
            await session.execute(
                update(User)
                .where(User.id == user_id)
                .values(preferences=merged, updated_at=func.now())
                .returning(*USER_COLUMNS)
            )
        ).one()
    return user


async def promote(databases: Databases, market: Market, who: str) -> Row[Any]:
    """Make the user with this phone or email an admin (the CLI's bootstrap path)."""
    auth = databases.store(market.code, "auth")
    condition = func.lower(User.email) == who.strip().lower() if "@" in who else User.phone == who
    async with auth.begin() as session:
        user = (
            await session.execute(
                update(User)
                .where(condition)
                .values(user_type=UserType.ADMIN, updated_at=func.now())
                .returning(*USER_COLUMNS)
            )
        ).one_or_none()
    if user is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"No user {who} in market {market.code}")
    return user


# --- GraphQL-facing operations: rules on top of the store functions above -------------------

EMAIL_FAILURE_LIMIT = 10
EMAIL_FAILURE_WINDOW = 15 * 60
TOO_MANY_SIGN_INS = "Too many failed sign-ins; try again later"


async def request_login_code(ctx: RequestContext, phone: str) -> Challenge:
    """Send a code; the answer is the same for registered and unknown phones."""
    challenge = await ctx.services.login_codes.issue(phone, ctx.markets, ctx.client_ip)
    await ctx.services.sms.send_login_code(
        challenge.phone, challenge.code, challenge.market.language
    )
    return challenge


async def verify_login_code(ctx: RequestContext, phone: str, code: str) -> SignedIn:
    market, e164 = await ctx.services.login_codes.verify(phone, code, ctx.markets)
    user = await sign_in_by_phone(ctx.databases, market, e164)
    return await issue_tokens(ctx.databases, ctx.services.tokens, ctx.settings, market, user)


async def register_by_email(
    ctx: RequestContext,
    *,
    email: str,
    password: str,
    phone: str | None,
    first_name: str | None,
    last_name: str | None,
) -> SignedIn:
    """Sign up in the request's market; a phone must belong to that market. Sign-ups are
    limited per client IP (mass registration) and per email (`CONFLICT` tells whether an
    email has an account, so it must not answer quickly for many)."""
    e164 = None
    if phone is not None:
        phone_market, e164 = detect_market(phone, ctx.markets)
        if phone_market.code != ctx.market.code:
            raise DomainError(
                ErrorCode.MARKET_MISMATCH,
                f"This phone belongs to market {phone_market.code}, not {ctx.market.code}",
                field="phone",
            )
    # Bad input creates and reveals nothing, so it is refused before anything is counted.
    email = normalise_email(email)
    passwords.check_password_rules(password)
    limits = _register_limits(ctx, email)
    await check(ctx.kv, limits)
    await spend(ctx.kv, limits)
    user = await register(
        ctx.databases,
        ctx.market,
        email=email,
        password=password,
        phone=e164,
        first_name=first_name,
        last_name=last_name,
    )
    return await issue_tokens(ctx.databases, ctx.services.tokens, ctx.settings, ctx.market, user)


def _register_limits(ctx: RequestContext, email: str) -> tuple[Limit, Limit]:
    settings = ctx.settings
    return (
        Limit(
            f"register:ip:{ctx.client_ip}",
            settings.register_ip_hourly,
            HOUR,
            "Too many sign-ups from this address; try again later",
        ),
        Limit(
            f"register:email:{ctx.market.code}:{email}",
            settings.register_email_hourly,
            HOUR,
            "Too many sign-ups with this email; try again later",
        ),
    )


async def login(ctx: RequestContext, email: str, password: str) -> SignedIn:
    """Email sign-in with failures counted per email and client IP, per client IP across
    emails (password spraying) and per account across IPs (distributed guessing).

    Each try is counted (atomically) before the password is checked: counting only after a
    failure would let parallel tries all pass the check while the slow hash runs, however
    many there are. A success then clears the email+IP count, as a sign-in from that client
    ends its failures, and gives back its own count to the other two: clearing those would
    hand a sprayer who owns one account, or a guesser spread over many addresses, a fresh
    budget at each successful sign-in, while counting successes would lock out an address
    shared by many honest users (an office, a carrier's NAT).
    """
    per_client, per_ip, per_account = limits = _login_limits(ctx, email.strip().lower())
    await check(ctx.kv, limits)
    await spend(ctx.kv, limits)
    user = await authenticate_email(ctx.databases, ctx.market, email, password)
    await ctx.kv.delete(per_client.key)
    await refund(ctx.kv, per_ip)
    await refund(ctx.kv, per_account)
    return await issue_tokens(ctx.databases, ctx.services.tokens, ctx.settings, ctx.market, user)


def _login_limits(ctx: RequestContext, email: str) -> tuple[Limit, Limit, Limit]:
    market, ip, settings = ctx.market.code, ctx.client_ip, ctx.settings
    return (
        Limit(
            f"login:fail:{market}:{email}:{ip}",
            EMAIL_FAILURE_LIMIT,
            EMAIL_FAILURE_WINDOW,
            TOO_MANY_SIGN_INS,
        ),
        Limit(
            f"login:ip:{ip}",
            settings.email_login_ip_hourly,
            HOUR,
            TOO_MANY_SIGN_INS,
            refunds_key=f"login:ip-ok:{ip}",
        ),
        # Keyed by the email whether or not it has an account: the limit reveals nothing.
        Limit(
            f"login:account:{market}:{email}",
            settings.email_login_account_daily,
            DAY,
            TOO_MANY_SIGN_INS,
            refunds_key=f"login:account-ok:{market}:{email}",
        ),
    )


async def refresh_session(ctx: RequestContext, token: str) -> SignedIn:
    """Rotate a refresh token; its market prefix picks the store."""
    market = ctx.markets.get(refresh_tokens.market_of(token))
    if market is None:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "The refresh token is not valid")
    return await refresh(ctx.databases, ctx.services.tokens, ctx.settings, market, token)


async def logout(ctx: RequestContext, token: str, *, all_sessions: bool) -> None:
    """Revoke the refresh token's family and the presented access token; with `all_sessions`
    every family of the user and every access token issued before this second.

    Holding a refresh token is the authority to end its session (as in RFC 7009).
    """
    market = ctx.markets.get(refresh_tokens.market_of(token))
    if market is not None:
        owner = await refresh_tokens.revoke(
            ctx.databases.store(market.code, "auth"), token, all_sessions=all_sessions
        )
        if owner is not None and all_sessions:
            await revoke_user_tokens(ctx.kv, market.code, owner, ctx.settings.access_token_ttl)
    principal = ctx.principal
    if principal is not None and principal.token_id and principal.token_expires_at:
        await revoke_access_token(ctx.kv, principal.token_id, principal.token_expires_at)


async def update_my_profile(ctx: RequestContext, values: dict[str, str | None]) -> Row[Any]:
    user = await update_profile(ctx.auth, ctx.require_user(), values)
    ctx.forget_reads()
    return user


async def update_my_preferences(ctx: RequestContext, patch: Any) -> Row[Any]:
    user = await update_preferences(
        ctx.auth,
        ctx.require_user(),
        patch,
        max_bytes=ctx.settings.preferences_max_bytes,
        max_depth=ctx.settings.preferences_max_depth,
    )
    ctx.forget_reads()
    return user


async def create_api_key(ctx: RequestContext, name: str, market_code: str) -> CreatedApiKey:
    principal = ctx.require_admin()
    market = ctx.markets.get(market_code)
    if market is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"No market {market_code!r}", field="market")
    # `created_by` references users of the key's own auth store: an admin of another
    # market is not a row there.
    created_by = principal.user_id if principal.market == market.code else None
    return await api_keys.create(ctx.store_for(market.code, "auth"), name, created_by=created_by)


async def revoke_api_key(ctx: RequestContext, key_gid: str) -> bool:
    ctx.require_admin()
    parsed = decode_id(key_gid, "ApiKey")
    if ctx.reachable_market(parsed.market) is None:
        return False
    return await api_keys.revoke(ctx.databases.store(parsed.market, "auth"), parsed.key)
