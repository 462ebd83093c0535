"""Keyset pagination: cursors, the `first` cap, and per-parent pages in one statement."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from marketgraph.errors import DomainError, ErrorCode
from marketgraph.resolvers.statements import Column, pages_by_owner

MAX_FIRST = 100


@dataclass(frozen=True, slots=True)
class PageKey:
    """One parent's page request: whose rows, how many, after which cursor."""

    owner: uuid.UUID
    first: int
    after: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[Row[Any]]
    has_next: bool


def check_first(first: int | None) -> int:
    """`first` within 0..100, else `BAD_USER_INPUT` naming the argument."""
    if first is None:
        return 20
    if not 0 <= first <= MAX_FIRST:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, f"first must be between 0 and {MAX_FIRST}", field="first"
        )
    return first


def encode_cursor(key: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(key.bytes).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None) -> uuid.UUID | None:
    """The row key inside `after`, or `BAD_USER_INPUT`."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, "after is not a valid cursor", field="after"
        ) from None


def page_of(rows: Sequence[Row[Any]], first: int) -> Page:
    """Rows fetched with LIMIT first + 1: the extra row only says there is a next page."""
    return Page(rows[:first], len(rows) > first)


async def load_pages(
    conn: AsyncConnection,
    keys: list[PageKey],
    columns: Sequence[Any],
    owner: Column,
    key: Column,
) -> list[Page]:
    """Each key's page, newest first, in ONE statement (see `statements.pages_by_owner`)."""
    params = {
        "owners": [pk.owner for pk in keys],
        "afters": [pk.after for pk in keys],
        "limits": [pk.first + 1 for pk in keys],
    }
    rows_by_key: list[list[Row[Any]]] = [[] for _ in keys]
    for row in (await conn.execute(pages_by_owner(columns, owner, key), params)).all():
        rows_by_key[row.page_index - 1].append(row)
    return [page_of(rows, pk.first) for rows, pk in zip(rows_by_key, keys, strict=True)]
