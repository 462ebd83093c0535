"""Principal: who is calling, in which market, with which roles."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

ADMIN = "admin"
MEMBER = "member"
API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in user (from an access token) or a server (from an API key)."""

    market: str
    roles: frozenset[str]
    user_id: uuid.UUID | None = None  # None for API keys
    token_id: str | None = None  # the access token's jti, for logout
    token_expires_at: dt.datetime | None = None
    api_key_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def reaches_every_market(self) -> bool:
        """Admin users read any market's data; an API key, admin or not, stays in its own."""
        return self.is_admin and self.api_key_id is None
