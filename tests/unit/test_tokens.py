"""Access tokens: claims and header, pinned algorithms, tampering, expiry, keys and rotation."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from marketgraph.auth.tokens import LEEWAY_SECONDS, REQUIRED_CLAIMS, TokenService
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import encode_id
from marketgraph.settings import ConfigError, Settings
from tests.helpers import b64url_encode, jwt_parts, public_pem, write_private_key

SECRET = "0123456789abcdef0123456789abcdef-test"
SUBJECT = encode_id("User", "kg", uuid.UUID(int=7))


def service(tmp_path: Path, **settings: Any) -> TokenService:
    return TokenService.from_settings(Settings(data_dir=tmp_path, **settings))


@pytest.fixture
def hs(tmp_path: Path) -> TokenService:
    return service(tmp_path, jwt_secret=SecretStr(SECRET))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Private key files: two RSA (old and new, for rotation) and one Ed25519."""
    folder = tmp_path_factory.mktemp("keys")
    return {
        "rsa": write_private_key(folder / "rsa.pem", "rsa"),
        "rsa_old": write_private_key(folder / "rsa_old.pem", "rsa"),
        "ed25519": write_private_key(folder / "ed25519.pem", "ed25519"),
    }


def refused(tokens: TokenService, token: str) -> DomainError:
    with pytest.raises(DomainError) as caught:
        tokens.verify(token)
    assert caught.value.code == ErrorCode.UNAUTHENTICATED
    return caught.value


def forge(tokens: TokenService, key: Any, algorithm: str = "HS256", **changes: Any) -> str:
    """A token like one `tokens` issues, with `changes` to its claims (None drops one),
    signed with `key` under `algorithm` and the real kid."""
    header, claims = jwt_parts(tokens.issue(SUBJECT, "kg", ["member"]).token)
    for name, value in changes.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": header["kid"]})


def test_hs256_tokens_carry_the_contract_claims(hs: TokenService) -> None:
    issued = hs.issue(SUBJECT, "kg", ["member", "admin"])
    header, claims = jwt_parts(issued.token)
    assert header["alg"] == "HS256"
    assert header["kid"]
    assert set(REQUIRED_CLAIMS) <= claims.keys()
    assert claims["sub"] == SUBJECT
    assert claims["mkt"] == "kg"
    assert claims["roles"] == ["admin", "member"]
    assert claims["jti"] == issued.jti
    assert claims["iss"] == claims["aud"] == "marketgraph"
    assert claims["exp"] - claims["iat"] == 900
    verified = hs.verify(issued.token)
    assert verified.subject == SUBJECT
    assert verified.market == "kg"
    assert verified.roles == {"member", "admin"}
    assert verified.jti == issued.jti
    assert verified.expires_at == issued.expires_at


def test_the_time_of_issue_is_known_to_the_millisecond(hs: TokenService) -> None:
    """What logout(allSessions) compares: `iat` has whole seconds, the UUIDv7 jti has
    milliseconds; a token with another jti (issued before UUIDv7 ids) falls back to `iat`."""
    before = time.time_ns() // 1_000_000
    verified = hs.verify(hs.issue(SUBJECT, "kg", ["member"]).token)
    after = time.time_ns() // 1_000_000
    assert before <= verified.issued_at_ms <= after
    assert verified.issued_at_ms // 1000 == int(verified.issued_at)
    older = hs.verify(forge(hs, SECRET.encode(), jti=uuid.uuid4().hex))
    assert older.issued_at_ms == int(older.issued_at) * 1000


def test_a_forged_copy_with_the_real_secret_verifies(hs: TokenService) -> None:
    # The control for the tests below: `forge` itself makes acceptable tokens.
    assert hs.verify(forge(hs, SECRET.encode())).market == "kg"


def test_an_edited_claim_without_resigning_is_refused(hs: TokenService) -> None:
    token = hs.issue(SUBJECT, "kg", ["member"]).token
    head, _, signature = token.split(".")
    _, claims = jwt_parts(token)
    for name, value in (("mkt", "us"), ("roles", ["admin", "member"])):
        edited = b64url_encode(json.dumps({**claims, name: value}).encode())
        refused(hs, f"{head}.{edited}.{signature}")


def test_alg_none_is_refused(hs: TokenService) -> None:
    header, claims = jwt_parts(hs.issue(SUBJECT, "kg", ["member"]).token)
    for alg in ("none", "None", "NONE"):
        head = b64url_encode(json.dumps({"alg": alg, "kid": header["kid"]}).encode())
        body = b64url_encode(json.dumps(claims).encode())
        refused(hs, f"{head}.{body}.")
    refused(hs, jwt.encode(claims, "", algorithm="none", headers={"kid": header["kid"]}))


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    rs = service(tmp_path, jwt_private_key_file=keys["rsa"])
    header, claims = jwt_parts(rs.issue(SUBJECT, "kg", ["member"]).token)
    assert header["alg"] == "RS256"
    # PyJWT refuses to HMAC with a PEM key, so sign by hand as an attacker would.
    for secret in (public_pem(keys["rsa"]), public_pem(keys["rsa"]).strip()):
        head = b64url_encode(
            json.dumps({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}).encode()
        )
        body = b64url_encode(json.dumps(claims).encode())
        signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        refused(rs, f"{head}.{body}.{b64url_encode(signature)}")


def test_a_token_signed_with_another_secret_is_refused(hs: TokenService) -> None:
    refused(hs, forge(hs, b"another secret of at least 32 bytes!!"))


def test_expired_tokens_are_refused_after_the_leeway(hs: TokenService) -> None:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    within = forge(hs, SECRET.encode(), exp=now - LEEWAY_SECONDS + 3, iat=now - 900)
    assert hs.verify(within).market == "kg"
    error = refused(hs, forge(hs, SECRET.encode(), exp=now - LEEWAY_SECONDS - 5, iat=now - 900))
    assert "expired" in error.message


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "someone-else"},
        {"aud": "another-service"},
        {"aud": ["another-service"]},
        {"iat": int(dt.datetime.now(dt.UTC).timestamp()) + 3600},
        {"roles": "admin"},
        *({name: None} for name in REQUIRED_CLAIMS),
    ],
)
def test_wrong_or_missing_claims_are_refused(hs: TokenService, changes: dict[str, Any]) -> None:
    refused(hs, forge(hs, SECRET.encode(), **changes))


def test_unknown_or_missing_kid_is_refused(hs: TokenService) -> None:
    _, claims = jwt_parts(hs.issue(SUBJECT, "kg", ["member"]).token)
    refused(hs, jwt.encode(claims, SECRET.encode(), algorithm="HS256", headers={"kid": "other"}))
    refused(hs, jwt.encode(claims, SECRET.encode(), algorithm="HS256"))
    refused(hs, "not.a.token")
    refused(hs, "")


@pytest.mark.parametrize(
    ("kind", "alg", "kty"), [("rsa", "RS256", "RSA"), ("ed25519", "EdDSA", "OKP")]
)
def test_asymmetric_tokens_verify_and_publish_their_key(
    tmp_path: Path, keys: dict[str, Path], kind: str, alg: str, kty: str
) -> None:
    tokens = service(tmp_path, jwt_private_key_file=keys[kind])
    issued = tokens.issue(SUBJECT, "kg", ["member"])
    header, _ = jwt_parts(issued.token)
    assert header["alg"] == alg
    assert tokens.verify(issued.token).subject == SUBJECT
    (jwk,) = tokens.jwks()["keys"]
    assert jwk["kid"] == header["kid"]
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == (kty, alg, "sig")
    assert "d" not in jwk  # public parts only
    # Another service checks the token with nothing but the published key.
    public = jwt.PyJWK(jwk)
    claims = jwt.decode(issued.token, public, algorithms=[alg], audience="marketgraph")
    assert claims["mkt"] == "kg"


def test_a_rotated_public_key_still_verifies_old_tokens(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    old = service(tmp_path, jwt_private_key_file=keys["rsa_old"])
    old_token = old.issue(SUBJECT, "kg", ["member"]).token
    old_kid = jwt_parts(old_token)[0]["kid"]

    alone = service(tmp_path, jwt_private_key_file=keys["rsa"])
    refused(alone, old_token)

    previous = tmp_path / "previous.pem"
    previous.write_bytes(public_pem(keys["rsa_old"]) + public_pem(keys["ed25519"]))
    rotated = service(tmp_path, jwt_private_key_file=keys["rsa"], jwt_public_key_file=previous)
    assert rotated.verify(old_token).subject == SUBJECT
    new_token = rotated.issue(SUBJECT, "kg", ["member"]).token
    new_kid = jwt_parts(new_token)[0]["kid"]
    assert new_kid != old_kid
    assert rotated.verify(new_token).subject == SUBJECT
    published = {k["kid"]: k["alg"] for k in rotated.jwks()["keys"]}
    assert published[old_kid] == "RS256"
    assert published[new_kid] == "RS256"
    assert sorted(published.values()) == ["EdDSA", "RS256", "RS256"]


def test_hs256_publishes_no_keys(hs: TokenService) -> None:
    assert hs.jwks() == {"keys": []}


def test_development_keeps_one_generated_secret(tmp_path: Path) -> None:
    first = service(tmp_path)
    second = service(tmp_path)
    assert second.verify(first.issue(SUBJECT, "kg", ["member"]).token).market == "kg"
    secret_file = tmp_path / "secrets" / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert len(secret_file.read_bytes()) >= 32
    refused(service(tmp_path / "elsewhere"), first.issue(SUBJECT, "kg", ["member"]).token)


def test_production_needs_a_real_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        service(tmp_path, environment="production")
    with pytest.raises(ConfigError, match="32 bytes"):
        service(tmp_path, environment="production", jwt_secret=SecretStr("short"))
    strong = service(tmp_path, environment="production", jwt_secret=SecretStr(SECRET))
    assert strong.algorithm == "HS256"
    assert not (tmp_path / "secrets").exists()
