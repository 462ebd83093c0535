"""The auth store: users, refresh tokens, API keys."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    Enum,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from marketgraph.db.models.base import AuthBase, created_at, updated_at, uuid_pk


class UserType(enum.StrEnum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"
    GUEST = "GUEST"
    INDIVIDUAL = "INDIVIDUAL"


class User(AuthBase):
    __tablename__ = "users"
    __table_args__ = (
        # Emails are unique whatever their case; lookups use lower(email) too.
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
        # jsonb_path_ops serves `preferences @> :filter` (containment) and is smaller.
        Index(
            "ix_users_preferences",
            "preferences",
            postgresql_using="gin",
            postgresql_ops={"preferences": "jsonb_path_ops"},
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    phone: Mapped[str | None] = mapped_column(String(16), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str | None] = mapped_column(Text)
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(35))
    user_type: Mapped[UserType] = mapped_column(
        Enum(UserType, name="user_type", native_enum=False, create_constraint=True, length=16),
        default=UserType.MEMBER,
        server_default=UserType.MEMBER.value,
    )
    preferences: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    is_active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    last_login_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class RefreshToken(AuthBase):
    """A refresh token, stored as a hash; rotation chains tokens of one login into a family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    expires_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = created_at()
    used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    replaced_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("refresh_tokens.id", ondelete="SET NULL"), index=True
    )


class ApiKey(AuthBase):
    """A server-to-server key of this store's market: shown once, kept as a hash."""

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("prefix"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    roles: Mapped[list[str]] = mapped_column(
        ARRAY(String(32)), default=list, server_default=text("'{}'::varchar[]")
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[dt.datetime] = created_at()
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
