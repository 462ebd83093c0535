"""Accounts in GraphQL: User, sign-in payloads and inputs, and their mutations."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from marketgraph import markets
from marketgraph.context import Info
from marketgraph.db.models.auth import User as UserRow
from marketgraph.ids import encode_id
from marketgraph.reads import derive
from marketgraph.reads.derive import FromRow
from marketgraph.reads.spec import Column, Converted, IdOf, MarketOf, TypeReads
from marketgraph.resolvers import accounts, erasure
from marketgraph.schema.cart import USER_CART, Cart
from marketgraph.schema.common import Node
from marketgraph.schema.markets import Market
from marketgraph.schema.orders import USER_ORDERS, OrderConnection
from marketgraph.schema.wallet import (
    USER_TRANSACTIONS,
    USER_WALLET,
    Wallet,
    WalletTransactionConnection,
)

USER_READS = TypeReads(
    "User",
    UserRow.__table__,  # type: ignore[arg-type]
    "auth",
    {
        "id": IdOf("User"),
        "market": MarketOf(),
        "phone": Column("phone"),
        "email": Column("email"),
        "firstName": Column("first_name"),
        "lastName": Column("last_name"),
        "timezone": Column("timezone"),
        "language": Column("language"),
        "userType": Column("user_type"),
        "preferences": Converted("preferences", accounts.readable_preferences),
        "isActive": Column("is_active"),
        "createdAt": Column("created_at"),
        "lastLoginAt": Column("last_login_at"),
        "cart": USER_CART,
        "wallet": USER_WALLET,
        "orders": USER_ORDERS,
        "transactions": USER_TRANSACTIONS,
    },
)


@strawberry.enum(description="What kind of account a user has; ADMIN may use admin fields.")
class UserType(enum.Enum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"
    GUEST = "GUEST"
    INDIVIDUAL = "INDIVIDUAL"


@strawberry.type(description="A customer or staff account; lives in exactly one market.")
class User(Node, FromRow):
    READS = USER_READS
    market: Market
    phone: str | None = strawberry.field(description="E.164, e.g. +996700123456.")
    email: str | None
    first_name: str | None
    last_name: str | None
    timezone: str | None
    language: str | None
    user_type: UserType
    preferences: JSON
    is_active: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    row: strawberry.Private[Any]
    market_data: strawberry.Private[markets.Market]
    cart: Cart = derive.field(USER_READS, "cart")
    wallet: Wallet = derive.field(USER_READS, "wallet")
    orders: OrderConnection = derive.field(USER_READS, "orders", "Newest first.")
    transactions: WalletTransactionConnection = derive.field(
        USER_READS, "transactions", "Newest first."
    )


@strawberry.type(description="A login code was sent; ask for another no sooner than resendAfter.")
class LoginCodeChallenge:
    market: Market
    expires_at: dt.datetime
    resend_after: dt.datetime


@strawberry.type(description="A signed-in session: a short-lived access token and a refresh token.")
class AuthPayload:
    access_token: str
    refresh_token: str = strawberry.field(
        description="Single-use: each refresh returns a new one; "
        "reusing an old one ends the session."
    )
    token_type: str = strawberry.field(description='Always "Bearer".')
    expires_in: int = strawberry.field(description="Seconds until the access token expires.")
    user: User
    market: Market

    @classmethod
    def from_signed_in(cls, signed: accounts.SignedIn) -> AuthPayload:
        return cls(
            access_token=signed.access.token,
            refresh_token=signed.refresh_token,
            token_type="Bearer",  # noqa: S106 - the scheme's name, not a secret
            expires_in=signed.expires_in,
            user=User.from_row(signed.user, signed.market),
            market=Market.from_market(signed.market),
        )


@strawberry.type(description="A new API key. The key is shown only this once.")
class ApiKeyCreated:
    id: strawberry.ID
    name: str
    key: str
    market: Market


@strawberry.input(description="Email sign-up, in the request's market.")
class RegisterInput:
    email: str
    password: str = strawberry.field(description="8 to 128 characters.")
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@strawberry.input(description="Profile fields to change; omitted fields stay, null clears.")
class ProfileInput:
    first_name: str | None = strawberry.UNSET
    last_name: str | None = strawberry.UNSET
    timezone: str | None = strawberry.UNSET
    language: str | None = strawberry.UNSET


async def viewer(info: Info) -> User | None:
    ctx = info.context
    if ctx.principal is None or ctx.principal.user_id is None:
        return None
    row = await ctx.loaders.users_by_id.load(ctx.require_user())
    return User.from_row(row, ctx.market) if row is not None else None


@strawberry.type
class AccountMutations:
    @strawberry.mutation(
        description="Start phone login: detects the market from the number "
        "and sends a one-time code."
    )
    async def request_login_code(self, info: Info, phone: str) -> LoginCodeChallenge:
        challenge = await accounts.request_login_code(info.context, phone)
        return LoginCodeChallenge(
            market=Market.from_market(challenge.market),
            expires_at=challenge.expires_at,
            resend_after=challenge.resend_after,
        )

    @strawberry.mutation(
        description="Finish phone login: creates the user in its market on first login."
    )
    async def verify_login_code(self, info: Info, phone: str, code: str) -> AuthPayload:
        return AuthPayload.from_signed_in(
            await accounts.verify_login_code(info.context, phone, code)
        )

    @strawberry.mutation(description="Email login, in the request's market.")
    async def register(self, info: Info, input: RegisterInput) -> AuthPayload:
        signed = await accounts.register_by_email(
            info.context,
            email=input.email,
            password=input.password,
            phone=input.phone,
            first_name=input.first_name,
            last_name=input.last_name,
        )
        return AuthPayload.from_signed_in(signed)

    @strawberry.mutation
    async def login(self, info: Info, email: str, password: str) -> AuthPayload:
        return AuthPayload.from_signed_in(await accounts.login(info.context, email, password))

    @strawberry.mutation(description="Trade a refresh token for a new session (rotation).")
    async def refresh_token(self, info: Info, refresh_token: str) -> AuthPayload:
        return AuthPayload.from_signed_in(
            await accounts.refresh_session(info.context, refresh_token)
        )

    @strawberry.mutation(
        description="End this session (or every session of the user with allSessions)."
    )
    async def logout(
        self, info: Info, refresh_token: str, all_sessions: bool | None = False
    ) -> bool:
        await accounts.logout(info.context, refresh_token, all_sessions=bool(all_sessions))
        return True

    @strawberry.mutation
    async def update_profile(self, info: Info, input: ProfileInput) -> User:
        values = {
            name: getattr(input, name)
            for name in ("first_name", "last_name", "timezone", "language")
            if getattr(input, name) is not strawberry.UNSET
        }
        row = await accounts.update_my_profile(info.context, values)
        return User.from_row(row, info.context.market)

    @strawberry.mutation(
        description="Apply `patch` to the viewer's preferences as an RFC 7386 JSON Merge Patch "
        "(nested objects merge, null deletes a key)."
    )
    async def update_preferences(self, info: Info, patch: JSON) -> User:
        row = await accounts.update_my_preferences(info.context, patch)
        return User.from_row(row, info.context.market)

    @strawberry.mutation(
        description="Erase the signed-in user's account: their profile, preferences, "
        "credentials, sessions, cart, wallet and the API keys they created are deleted; "
        "orders and wallet transactions stay for accounting under an anonymous id. Confirm "
        "with `password` (email accounts) or a fresh `code` from requestLoginCode for the "
        "account's phone; a wrong one erases nothing (UNAUTHENTICATED or INVALID_CODE, as "
        "sign-in answers). Every token of the user is refused afterwards."
    )
    async def delete_account(
        self, info: Info, password: str | None = None, code: str | None = None
    ) -> bool:
        await erasure.delete_my_account(info.context, password=password, code=code)
        return True

    @strawberry.mutation(
        description="Admin: an API key for server-to-server calls, scoped to one market."
    )
    async def create_api_key(self, info: Info, name: str, market: strawberry.ID) -> ApiKeyCreated:
        created = await accounts.create_api_key(info.context, name, str(market))
        found = info.context.markets.require(created.market)
        return ApiKeyCreated(
            id=strawberry.ID(encode_id("ApiKey", created.market, created.id)),
            name=created.name,
            key=created.key,
            market=Market.from_market(found),
        )

    @strawberry.mutation(description="Admin: revoke an API key; false when it was not live.")
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> bool:
        return await accounts.revoke_api_key(info.context, str(id))
