"""Sessions over HTTP: refresh rotation and reuse, logout, tampered tokens, keys and JWKS,
and the market a token pins."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from starlette.applications import Starlette

from marketgraph.auth.tokens import LEEWAY_SECONDS
from marketgraph.db.databases import Databases
from marketgraph.db.models.auth import RefreshToken
from marketgraph.kv import KeyValueStore
from tests.helpers import (
    LOGOUT,
    VIEWER,
    allow_resend,
    b64url_encode,
    data,
    error,
    error_code,
    gql,
    http_client,
    jwt_parts,
    phone_login,
    public_pem,
    refresh,
    viewer,
    write_private_key,
)

KG = "+996700123456"
KG_2 = "+996555123456"
US = "+12015550123"
SECRET = "a-test-jwt-secret-of-more-than-32-bytes"

AppFactory = Callable[..., Starlette]


def unauthenticated(body: dict[str, Any]) -> str:
    assert error_code(body) == "UNAUTHENTICATED"
    assert body.get("data") is None
    message: str = error(body)["message"]
    return message


async def logout(
    client: Any, refresh_token: str, *, token: str | None = None, all_sessions: bool = False
) -> dict[str, Any]:
    return await gql(client, LOGOUT, {"token": refresh_token, "all": all_sessions}, token=token)


# --- refresh tokens ------------------------------------------------------------------------


async def test_refresh_rotates_and_the_old_token_dies(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        first = await phone_login(client, app, KG)
        assert first["refreshToken"].startswith("kg.")
        second = data(await refresh(client, first["refreshToken"]))["refreshToken"]
        assert second["refreshToken"].startswith("kg.")
        assert second["refreshToken"] != first["refreshToken"]
        assert second["user"]["id"] == first["user"]["id"]
        assert second["accessToken"] != first["accessToken"]
        assert data(await viewer(client, second["accessToken"]))["viewer"]["phone"] == KG
        # The new one keeps working, once.
        third = data(await refresh(client, second["refreshToken"]))["refreshToken"]
        assert third["refreshToken"] not in (first["refreshToken"], second["refreshToken"])

    # Stored hashed, one family for the whole chain.
    async with stores.store("kg", "auth").connect() as conn:
        rows = (await conn.execute(select(RefreshToken))).all()
    assert len(rows) == 3
    assert len({row.family_id for row in rows}) == 1
    hashes = {row.token_hash for row in rows}
    for token in (first, second, third):
        assert token["refreshToken"] not in hashes
        assert hashlib.sha256(token["refreshToken"].encode()).hexdigest() in hashes


async def test_a_used_refresh_token_is_refused(app_factory: AppFactory, stores: Databases) -> None:
    app = app_factory()
    async with http_client(app) as client:
        first = await phone_login(client, app, KG)
        data(await refresh(client, first["refreshToken"]))
        unauthenticated(await refresh(client, first["refreshToken"]))


async def test_reuse_revokes_the_whole_family(app_factory: AppFactory, stores: Databases) -> None:
    app = app_factory()
    async with http_client(app) as client:
        first = await phone_login(client, app, KG)
        second = data(await refresh(client, first["refreshToken"]))["refreshToken"]
        third = data(await refresh(client, second["refreshToken"]))["refreshToken"]
        # A thief replays an old token: the family ends, so the newest token dies too.
        message = unauthenticated(await refresh(client, first["refreshToken"]))
        assert "already used" in message
        unauthenticated(await refresh(client, third["refreshToken"]))
    async with stores.store("kg", "auth").connect() as conn:
        revoked = (await conn.execute(select(RefreshToken.revoked_at))).scalars().all()
    assert len(revoked) == 3
    assert all(at is not None for at in revoked)


async def test_reuse_spares_the_users_other_sessions(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        stolen = await phone_login(client, app, KG)
        await allow_resend(kv, KG)
        other_device = await phone_login(client, app, KG)
        data(await refresh(client, stolen["refreshToken"]))
        unauthenticated(await refresh(client, stolen["refreshToken"]))
        data(await refresh(client, other_device["refreshToken"]))


async def test_two_refreshes_at_once_end_the_family(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        session = await phone_login(client, app, KG)
        bodies = await asyncio.gather(*(refresh(client, session["refreshToken"]) for _ in range(2)))
        winners = [body for body in bodies if "errors" not in body]
        losers = [body for body in bodies if "errors" in body]
        assert len(winners) == len(losers) == 1
        unauthenticated(losers[0])
        # The second use is a reuse: even the token the first one got is dead.
        unauthenticated(await refresh(client, winners[0]["data"]["refreshToken"]["refreshToken"]))


@pytest.mark.parametrize(
    "token", ["", "garbage", "kg.", ".abc", "zz.abcdef", "kg.not-a-real-token", "us.abc.def"]
)
async def test_unknown_refresh_tokens_are_refused(client: Any, token: str) -> None:
    unauthenticated(await refresh(client, token))


async def test_a_refresh_token_carries_its_market(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        us = await phone_login(client, app, US)
        assert us["refreshToken"].startswith("us.")
        # Whatever market the request names, the token's prefix picks the store.
        body = await gql(
            client,
            "mutation ($t: String!) { refreshToken(refreshToken: $t) { market { code } } }",
            {"t": us["refreshToken"]},
            headers={"X-Market": "kg"},
        )
        assert data(body)["refreshToken"]["market"]["code"] == "us"
        # The same random part under another market's prefix is nobody's token.
        _, _, rest = us["refreshToken"].partition(".")
        unauthenticated(await refresh(client, f"kg.{rest}"))


async def test_logout_revokes_the_family_and_the_access_token(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        session = await phone_login(client, app, KG)
        rotated = data(await refresh(client, session["refreshToken"]))["refreshToken"]
        await allow_resend(kv, KG)
        other = await phone_login(client, app, KG)

        assert data(await logout(client, rotated["refreshToken"], token=rotated["accessToken"]))
        unauthenticated(await refresh(client, rotated["refreshToken"]))
        message = unauthenticated(await viewer(client, rotated["accessToken"]))
        assert "revoked" in message
        # Only that session ended.
        assert data(await viewer(client, other["accessToken"]))["viewer"]["phone"] == KG
        data(await refresh(client, other["refreshToken"]))


async def test_logout_all_sessions_revokes_every_family(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        phone_a = await phone_login(client, app, KG)
        laptop = data(await refresh(client, phone_a["refreshToken"]))["refreshToken"]
        await allow_resend(kv, KG)
        tablet = await phone_login(client, app, KG)
        neighbour = await phone_login(client, app, KG_2)

        assert data(await logout(client, tablet["refreshToken"], all_sessions=True))
        unauthenticated(await refresh(client, laptop["refreshToken"]))
        unauthenticated(await refresh(client, tablet["refreshToken"]))
        # Another user keeps their session.
        data(await refresh(client, neighbour["refreshToken"]))
    async with stores.store("kg", "auth").connect() as conn:
        rows = (await conn.execute(select(RefreshToken.user_id, RefreshToken.revoked_at))).all()
    revoked: dict[Any, set[bool]] = {}
    for row in rows:
        revoked.setdefault(row.user_id, set()).add(row.revoked_at is not None)
    # Every token of the user who logged out is revoked, none of the neighbour's.
    assert sorted(revoked.values(), key=sorted) == [{False}, {True}]
    assert len(rows) == 5


async def test_logout_all_sessions_ends_the_other_access_tokens_too(
    app_factory: AppFactory, stores: Databases, kv: KeyValueStore
) -> None:
    app = app_factory(kv=kv)
    async with http_client(app) as client:
        laptop = await phone_login(client, app, KG)
        await allow_resend(kv, KG)
        tablet = await phone_login(client, app, KG)
        # No wait: most likely in the same second as the laptop's sign-in (`iat`'s unit).
        assert data(await logout(client, tablet["refreshToken"], all_sessions=True))
        assert error_code(await viewer(client, laptop["accessToken"])) == "UNAUTHENTICATED"
        # Signing in again right after the logout works.
        await allow_resend(kv, KG)
        again = await phone_login(client, app, KG)
        assert data(await viewer(client, again["accessToken"]))["viewer"]["phone"] == KG


async def test_logout_with_an_unknown_token_ends_nothing(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        session = await phone_login(client, app, KG)
        assert data(await logout(client, "kg.unknown"))["logout"] is True
        assert data(await logout(client, "zz.unknown"))["logout"] is True
        unauthenticated(await logout(client, "not a refresh token"))
        data(await refresh(client, session["refreshToken"]))


# --- tampered access tokens ---------------------------------------------------------------


async def signed_in(client: Any, app: Starlette) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A real KG session: its access token, header and claims."""
    token = (await phone_login(client, app, KG))["accessToken"]
    header, claims = jwt_parts(token)
    return token, header, claims


def resign(claims: dict[str, Any], header: dict[str, Any], **changes: Any) -> str:
    """The claims with `changes`, signed again with the real secret and kid."""
    return jwt.encode(
        {**claims, **changes}, SECRET.encode(), algorithm="HS256", headers={"kid": header["kid"]}
    )


async def test_tampered_tokens_are_unauthenticated(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory(jwt_secret=SecretStr(SECRET))
    async with http_client(app) as client:
        token, header, claims = await signed_in(client, app)
        # Controls: the real token and a faithful re-signing both work.
        assert data(await viewer(client, token))["viewer"]["phone"] == KG
        assert data(await viewer(client, resign(claims, header)))["viewer"]["phone"] == KG

        head, _, signature = token.split(".")
        now = int(dt.datetime.now(dt.UTC).timestamp())
        tampered = {
            "mkt edited": f"{head}.{b64url_encode(json.dumps({**claims, 'mkt': 'us'}).encode())}"
            f".{signature}",
            "roles edited": f"{head}."
            f"{b64url_encode(json.dumps({**claims, 'roles': ['admin', 'member']}).encode())}"
            f".{signature}",
            "alg none": jwt.encode(claims, "", algorithm="none", headers={"kid": header["kid"]}),
            "other secret": jwt.encode(
                claims, b"x" * 40, algorithm="HS256", headers={"kid": header["kid"]}
            ),
            "expired": resign(claims, header, iat=now - 1000, exp=now - LEEWAY_SECONDS - 5),
            "wrong iss": resign(claims, header, iss="evil"),
            "wrong aud": resign(claims, header, aud="another-api"),
            # Re-signed, but the subject's id names KG while mkt says US.
            "mkt re-signed": resign(claims, header, mkt="us"),
            "no sub": resign({k: v for k, v in claims.items() if k != "sub"}, header),
            "sub not an id": resign(claims, header, sub="nobody"),
            "sub not a user": resign(claims, header, sub=claims["sub"].replace("V", "W", 1)),
        }
        for name, forged in tampered.items():
            body = await viewer(client, forged)
            assert error_code(body) == "UNAUTHENTICATED", name
            assert "data" not in body, name  # a request error: nothing executed
        # Not a bearer token at all.
        for authorization in ("Bearer", "Basic dXNlcjpwdw==", "Token abc", "ApiKey nope"):
            body = await gql(client, VIEWER, headers={"Authorization": authorization})
            assert error_code(body) == "UNAUTHENTICATED", authorization


async def test_key_confusion_is_unauthenticated(
    app_factory: AppFactory, stores: Databases, tmp_path: Path
) -> None:
    private = write_private_key(tmp_path / "rsa.pem", "rsa")
    app = app_factory(jwt_private_key_file=private)
    async with http_client(app) as client:
        token, header, claims = await signed_in(client, app)
        assert header["alg"] == "RS256"
        assert data(await viewer(client, token))["viewer"]["phone"] == KG
        # HS256 with the (public!) RSA key as the HMAC secret, under the RSA key's kid.
        head = b64url_encode(
            json.dumps({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}).encode()
        )
        body = b64url_encode(json.dumps(claims).encode())
        mac = hmac.new(public_pem(private), f"{head}.{body}".encode(), hashlib.sha256).digest()
        answer = await viewer(client, f"{head}.{body}.{b64url_encode(mac)}")
        assert error_code(answer) == "UNAUTHENTICATED"


@pytest.mark.parametrize(("kind", "alg"), [("rsa", "RS256"), ("ed25519", "EdDSA")])
async def test_asymmetric_tokens_and_jwks(
    app_factory: AppFactory, stores: Databases, tmp_path: Path, kind: str, alg: str
) -> None:
    private = write_private_key(tmp_path / f"{kind}.pem", kind)
    app = app_factory(jwt_private_key_file=private)
    async with http_client(app) as client:
        token, header, _ = await signed_in(client, app)
        assert header["alg"] == alg
        assert data(await viewer(client, token))["viewer"]["phone"] == KG
        response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (jwk,) = response.json()["keys"]
    assert (jwk["kid"], jwk["alg"]) == (header["kid"], alg)
    assert "d" not in jwk
    claims = jwt.decode(token, jwt.PyJWK(jwk), algorithms=[alg], audience="marketgraph")
    assert claims["mkt"] == "kg"


async def test_a_rotated_key_keeps_old_tokens_valid(
    app_factory: AppFactory, stores: Databases, tmp_path: Path
) -> None:
    old_private = write_private_key(tmp_path / "old.pem", "rsa")
    new_private = write_private_key(tmp_path / "new.pem", "ed25519")
    old_app = app_factory(jwt_private_key_file=old_private)
    async with http_client(old_app) as client:
        old_token, old_header, _ = await signed_in(client, old_app)

    previous = tmp_path / "previous.pem"
    previous.write_bytes(public_pem(old_private))
    rotated = app_factory(jwt_private_key_file=new_private, jwt_public_key_file=previous)
    unrotated = app_factory(jwt_private_key_file=new_private)
    async with http_client(rotated) as client:
        assert data(await viewer(client, old_token))["viewer"]["phone"] == KG
        keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    assert {k["kid"]: k["alg"] for k in keys}[old_header["kid"]] == "RS256"
    assert sorted(k["alg"] for k in keys) == ["EdDSA", "RS256"]
    async with http_client(unrotated) as client:
        assert error_code(await viewer(client, old_token)) == "UNAUTHENTICATED"


async def test_jwks_is_empty_with_a_shared_secret(client: Any) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.json() == {"keys": []}


# --- the market a token pins ----------------------------------------------------------------


async def test_a_conflicting_x_market_is_market_mismatch(
    app_factory: AppFactory, stores: Databases
) -> None:
    app = app_factory()
    async with http_client(app) as client:
        token = (await phone_login(client, app, KG))["accessToken"]
        assert error_code(await viewer(client, token, headers={"X-Market": "us"})) == (
            "MARKET_MISMATCH"
        )
        same = await viewer(client, token, headers={"X-Market": "KG"})
        assert data(same)["viewer"]["market"]["code"] == "kg"


async def test_an_unknown_x_market_is_unsupported(client: Any) -> None:
    body = await gql(client, VIEWER, headers={"X-Market": "zz"})
    assert error_code(body) == "UNSUPPORTED_MARKET"
    body = await gql(client, "{ markets { code } }", headers={"X-Market": "zz"})
    assert error_code(body) == "UNSUPPORTED_MARKET"


async def test_anonymous_x_market_picks_the_market(client: Any) -> None:
    body = await gql(
        client,
        'mutation { requestLoginCode(phone: "+12015550123") { market { code } } }',
        headers={"X-Market": "kg"},
    )
    # The phone decides the market of a login, not the header.
    assert data(body)["requestLoginCode"]["market"]["code"] == "us"
