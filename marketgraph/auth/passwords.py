"""Password hashing (argon2id), run off the event loop because it is slow on purpose."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from marketgraph.errors import DomainError, ErrorCode

MIN_LENGTH = 8
MAX_LENGTH = 128

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("marketgraph-dummy-password")


def check_password_rules(password: str) -> None:
    """`BAD_USER_INPUT` unless the password has 8–128 characters."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT,
            f"Passwords have {MIN_LENGTH} to {MAX_LENGTH} characters",
            field="password",
        )


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a missing hash still costs one verification."""

    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)
