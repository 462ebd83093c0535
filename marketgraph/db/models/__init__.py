"""Models of both roles; `metadata_for(role)` gives the tables a store of that role holds."""

from __future__ import annotations

from sqlalchemy import MetaData

from marketgraph.db.models import app, auth
from marketgraph.db.models.base import AppBase, AuthBase
from marketgraph.settings import Role


def metadata_for(role: Role) -> MetaData:
    return AuthBase.metadata if role == "auth" else AppBase.metadata


__all__ = ["app", "auth", "metadata_for"]
