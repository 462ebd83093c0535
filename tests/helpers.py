"""Helpers shared by the API tests: a typed GraphQL call, error reading, and sign-in flows."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
import uvicorn
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute
from starlette.applications import Starlette

from marketgraph.app import create_app
from marketgraph.db.databases import Databases
from marketgraph.kv import KeyValueStore
from marketgraph.services import Services, open_services
from marketgraph.settings import Role, Settings
from marketgraph.sms import MemorySms

AUTH_FIELDS = """
    accessToken refreshToken tokenType expiresIn
    market { code }
    user { id phone email userType market { code } }
"""

REQUEST_CODE = """
mutation ($phone: String!) {
  requestLoginCode(phone: $phone) { market { code currency } expiresAt resendAfter }
}
"""

VERIFY_CODE = f"""
mutation ($phone: String!, $code: String!) {{
  verifyLoginCode(phone: $phone, code: $code) {{ {AUTH_FIELDS} }}
}}
"""

REGISTER = f"""
mutation ($input: RegisterInput!) {{ register(input: $input) {{ {AUTH_FIELDS} }} }}
"""

LOGIN = f"""
mutation ($email: String!, $password: String!) {{
  login(email: $email, password: $password) {{ {AUTH_FIELDS} }}
}}
"""

REFRESH = f"""
mutation ($token: String!) {{ refreshToken(refreshToken: $token) {{ {AUTH_FIELDS} }} }}
"""

LOGOUT = """
mutation ($token: String!, $all: Boolean) { logout(refreshToken: $token, allSessions: $all) }
"""

DEFAULT_PASSWORD = "correct horse battery"

VIEWER = "{ viewer { id phone email userType preferences timezone market { code } } }"


@asynccontextmanager
async def http_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process HTTP client for `app` (peer 127.0.0.1, a trusted proxy by default)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST one GraphQL operation; the decoded JSON body (HTTP 200 asserted)."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if api_key is not None:
        sent["Authorization"] = f"ApiKey {api_key}"
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    response = await client.post("/graphql", json=payload, headers=sent)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def data(body: dict[str, Any]) -> dict[str, Any]:
    """The `data` of a body that must have no errors."""
    assert "errors" not in body, body.get("errors")
    result: dict[str, Any] = body["data"]
    return result


def error(body: dict[str, Any]) -> dict[str, Any]:
    """The one error of a failed body."""
    errors = body.get("errors")
    assert errors, f"expected an error, got {body}"
    assert len(errors) == 1, errors
    first: dict[str, Any] = errors[0]
    return first


def error_code(body: dict[str, Any]) -> str:
    code: str = error(body)["extensions"]["code"]
    return code


def sms_code(app: Starlette, phone: str) -> str:
    """The last code the in-memory SMS backend sent to `phone` (E.164)."""
    sms = app.state.services.sms
    assert isinstance(sms, MemorySms)
    return sms.last_code(phone)


async def request_code(
    client: httpx.AsyncClient, phone: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return await gql(client, REQUEST_CODE, {"phone": phone}, headers=headers)


async def verify_code(client: httpx.AsyncClient, phone: str, code: str) -> dict[str, Any]:
    return await gql(client, VERIFY_CODE, {"phone": phone, "code": code})


async def phone_login(client: httpx.AsyncClient, app: Starlette, phone: str) -> dict[str, Any]:
    """Request a code for `phone` (E.164), read it from the SMS backend, verify it:
    the AuthPayload."""
    data(await request_code(client, phone))
    payload: dict[str, Any] = data(await verify_code(client, phone, sms_code(app, phone)))[
        "verifyLoginCode"
    ]
    return payload


async def register(
    client: httpx.AsyncClient,
    email: str,
    password: str = DEFAULT_PASSWORD,
    *,
    market: str = "kg",
    **extra: Any,
) -> dict[str, Any]:
    """The body of `register` in `market` (errors left to the caller)."""
    return await gql(
        client,
        REGISTER,
        {"input": {"email": email, "password": password, **extra}},
        headers={"X-Market": market},
    )


async def login(
    client: httpx.AsyncClient,
    email: str,
    password: str,
    *,
    market: str = "kg",
    ip: str | None = None,
) -> dict[str, Any]:
    headers = {"X-Market": market}
    if ip is not None:
        headers["X-Forwarded-For"] = ip
    return await gql(client, LOGIN, {"email": email, "password": password}, headers=headers)


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> dict[str, Any]:
    return await gql(client, REFRESH, {"token": refresh_token})


async def viewer(
    client: httpx.AsyncClient, token: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return await gql(client, VIEWER, token=token, headers=headers)


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JWT's header and claims, unverified."""
    header, claims, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(claims))


async def allow_resend(kv: KeyValueStore, phone: str) -> None:
    """Let the 60-second resend wait pass for `phone` (E.164): drop its resend marker."""
    await kv.delete(f"lc:resend:{phone}")


async def placement(
    stores: Databases, role: Role, column: InstrumentedAttribute[Any], value: object
) -> dict[str, int]:
    """How many rows of `column`'s table have `column == value`, in the `role` store of
    every market, asked of each store directly."""
    counts = {}
    for market in stores.settings.markets.codes:
        async with stores.store(market, role).connect() as conn:
            statement = select(func.count()).select_from(column.class_).where(column == value)
            counts[market] = (await conn.execute(statement)).scalar_one()
    return counts


def write_private_key(path: Path, kind: str) -> Path:
    """A fresh `rsa` or `ed25519` private key as PEM at `path`."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def public_pem(private_key_file: Path) -> bytes:
    """The PEM public key of the private key at `private_key_file`."""
    private = serialization.load_pem_private_key(private_key_file.read_bytes(), password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def closed_port() -> int:
    """A local TCP port nothing listens on: connecting is refused at once (and a server
    may take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never says a word: a hung database."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def start_serve(
    port: int, cwd: Path, env: dict[str, str], log: Path, *args: str, own_group: bool = False
) -> asyncio.subprocess.Process:
    """`python -m marketgraph serve --port PORT ARGS` in a subprocess, its output into `log`;
    `own_group`: in a process group of its own, so one signal reaches its workers too."""
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "marketgraph",
            "serve",
            "--port",
            str(port),
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=own_group,
        )


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """An app over its own services for `settings`, as the lifespan opens them (engines,
    key-value store, the budget check), and a client of it; everything closed after."""
    services = await open_services(settings)
    app = create_app(settings)
    app.state.services = services
    try:
        async with http_client(app) as client:
            yield client, services
    finally:
        await services.close()


async def run_command(command: click.Command, *args: str, **options: Any) -> Result:
    """A CLI command run as from a terminal, in a worker thread (it runs its own event
    loop); an exception other than its exit is raised here."""
    result = await asyncio.to_thread(CliRunner().invoke, command, list(args), **options)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """`app` under uvicorn with `serve`'s HTTP protocol, in this event loop, on a free
    loopback port: its base URL. The app's services are already open, so no lifespan."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        http="marketgraph.http_protocol:BoundedHttpToolsProtocol",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # uvicorn's Server offers no event to await
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


# --- server processes: `serve` as operators run it (tests/integration/test_processes.py,
# test_shutdown.py) ----------------------------------------------------------------------


def serve_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """This environment without database or Redis variables (the caller gives those), with
    data under `data_dir`, small pools, fixed secrets (as hosts sharing them would have),
    the console SMS backend (codes in the log) and the suite's planner mode."""
    env = {
        name: value
        for name, value in os.environ.items()
        if "DATABASE_URL" not in name.upper() and not name.upper().endswith("REDIS_URL")
    }
    env.update(
        DATA_DIR=str(data_dir),
        ENVIRONMENT="development",
        LOG_FORMAT="console",
        JWT_SECRET="processes-suite-jwt-secret-of-some-length",
        LOGIN_CODE_SECRET="processes-suite-login-code-secret",
        SMS_BACKEND="console",
        DB_POOL_SIZE="2",
        DB_MAX_OVERFLOW="3",
        QUERY_PLANNER=os.environ.get("TEST_QUERY_PLANNER", "on"),
    )
    env.update(variables)
    return env


@dataclass
class ServeProcess:
    """A `python -m marketgraph serve` subprocess (in a session of its own, with its
    workers), where it answers and its output."""

    process: asyncio.subprocess.Process
    base_url: str
    log: Path

    def output(self, tail: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    async def wait_until_ready(self, within: float = 30.0) -> None:
        """Until `/health/ready` answers 200 (fails the test if serve exits first)."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"serve exited with {self.process.returncode}:\n{self.output()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/health/ready")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"not ready after {within} s:\n{self.output()}")
                await asyncio.sleep(0.1)

    async def wait_for_output(self, pattern: str, within: float = 10.0) -> re.Match[str]:
        """The last match of `pattern` in the output, once there is one."""
        deadline = time.monotonic() + within
        while not (found := list(re.finditer(pattern, self.log.read_text(errors="replace")))):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the output:\n{self.output()}")
            await asyncio.sleep(0.05)
        return found[-1]

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM to serve (not to its workers: serve stops them), and its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise AssertionError(
                f"serve did not exit within {within} s of SIGTERM:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL to serve and every process of its session (its workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@asynccontextmanager
async def serve_process(
    env: dict[str, str], directory: Path, *args: str
) -> AsyncIterator[ServeProcess]:
    """`python -m marketgraph serve --port PORT ARGS` on a free port, output into a log under
    `directory`; killed with its workers afterwards if it is still running."""
    port = closed_port()
    log = directory / f"serve-{port}.log"
    # Its own process group: the cleanup reaches its workers.
    process = await start_serve(port, directory, env, log, *args, own_group=True)
    server = ServeProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        yield server
    finally:
        if process.returncode is None:
            server.kill()
            await process.wait()


async def phone_sign_in(
    request_on: httpx.AsyncClient,
    verify_on: httpx.AsyncClient,
    server: ServeProcess,
    phone: str,
) -> dict[str, Any]:
    """Sign in with `phone` (E.164): the code asked of one server (`server`, whose log has
    it, SMS_BACKEND=console), verified on another (or the same). The AuthPayload."""
    data(await request_code(request_on, phone))
    sent = await server.wait_for_output(rf"login code for {re.escape(phone)}: (\d+)")
    payload: dict[str, Any] = data(await verify_code(verify_on, phone, sent.group(1)))[
        "verifyLoginCode"
    ]
    return payload
