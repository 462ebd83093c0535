"""Global ids: opaque, URL-safe strings encoding (type, market, key)."""

from __future__ import annotations

import base64
import binascii
import functools
import uuid
from dataclasses import dataclass

from marketgraph.errors import DomainError, ErrorCode


@dataclass(frozen=True, slots=True)
class GlobalId:
    type_name: str
    market: str
    key: uuid.UUID

    def __str__(self) -> str:
        return encode_id(self.type_name, self.market, self.key)


def encode_id(type_name: str, market: str, key: uuid.UUID) -> str:
    """`User:kg:<uuid>` as unpadded URL-safe base64: no database key is visible as such."""
    raw = binascii.b2a_base64(_prefix(type_name, market) + key.bytes, newline=False)
    return raw.translate(_URL_SAFE).rstrip(b"=").decode("ascii")


# base64.urlsafe_b64encode's own translation, without its two Python calls (ids of a page
# of 50 rows are made 50 times a request).
_URL_SAFE = bytes.maketrans(b"+/", b"-_")


@functools.lru_cache(maxsize=256)
def _prefix(type_name: str, market: str) -> bytes:
    return f"{type_name}:{market}:".encode()


def decode_id(value: str, expected_type: str | None = None, *, field: str = "id") -> GlobalId:
    """The parts of a global id; `BAD_USER_INPUT` naming `field` when it is not one of ours
    (or not of `expected_type`)."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        head, key = raw[:-16], raw[-16:]
        type_name, market, rest = head.decode("ascii").split(":")
        if rest or len(key) != 16 or not type_name or not market:
            raise ValueError(value)
        parsed = GlobalId(type_name, market, uuid.UUID(bytes=key))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, f"{field} is not a valid id", field=field
        ) from None
    if expected_type is not None and parsed.type_name != expected_type:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, f"{field} is not a {expected_type} id", field=field
        )
    return parsed
