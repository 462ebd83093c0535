"""The User type and its enum."""

from __future__ import annotations

import datetime as dt
import enum

import strawberry
from strawberry.scalars import JSON

from marketgraph.schema.markets import Market


@strawberry.enum(description="What kind of account a user has; ADMIN may use admin fields.")
class UserType(enum.Enum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"
    GUEST = "GUEST"
    INDIVIDUAL = "INDIVIDUAL"


@strawberry.interface(description="An object with a global id that `node(id:)` can fetch.")
class Node:
    id: strawberry.ID


@strawberry.type(description="A customer or staff account; lives in exactly one market.")
class User(Node):
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
