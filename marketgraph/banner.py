"""The first screen of `marketgraph serve`: where the API answers, where each store lives, how
to sign in; built as data, shown once the server answers."""

from __future__ import annotations

import http.client
import ipaddress
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import phonenumbers
import structlog
from sqlalchemy.engine import URL

from marketgraph import __version__
from marketgraph.db.topology import Topology
from marketgraph.markets import MarketRegistry
from marketgraph.settings import Settings

log = structlog.get_logger(__name__)

# Hosts that mean "every interface" (compared, never bound here), and the loopback address a
# browser on this machine opens instead.
_ANY_HOST = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
# How long the announcer waits for a first answer before giving up quietly.
READY_WAIT = 600.0
_POLL_INTERVAL = 0.2
IN_PROCESS_KV = "not set: an in-process key-value store (one worker only)"


@dataclass(frozen=True, slots=True)
class StoreGroup:
    """Stores that live in the same place, and that place said without a password."""

    stores: tuple[str, ...]
    where: str


@dataclass(frozen=True, slots=True)
class FirstScreen:
    """What a newcomer needs once the server answers; rendered as text or as one log event."""

    title: str
    version: str
    environment: str
    base_url: str
    graphiql: bool
    elsewhere: str | None  # the URL other machines use, when listening on every interface
    store_groups: tuple[StoreGroup, ...]
    store_note: str
    kv: str
    other_market: str | None  # a market besides the default, for the X-Market example
    demo_phones: Mapping[str, str]  # market code → E.164; empty: no sign-in hint
    sms: str

    @property
    def graphql(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def health(self) -> str:
        return f"{self.base_url}/health"

    @property
    def metrics(self) -> str:
        return f"{self.base_url}/metrics"

    def text(self) -> str:
        """The screen for a terminal: aligned labels, copy-paste examples."""
        lines = [self.title, f"  GraphQL   {self.graphql}"]
        if self.elsewhere:
            lines.append(f"            {self.elsewhere}/graphql from other machines")
        if self.graphiql:
            other = f'; another market: header {{"X-Market": "{self.other_market}"}}'
            lines.append(
                f"  GraphiQL  {self.graphql}  (in a browser{other if self.other_market else ''})"
            )
        lines.append(f"  Health    {self.health}   Metrics  {self.metrics}")
        label = "  Stores    "
        for group in self.store_groups:
            lines.append(f"{label}{', '.join(group.stores)} → {group.where}")
            label = " " * len(label)
        lines.append(f"{label}({self.store_note})")
        lines.append(f"  Redis     {self.kv}")
        lines += self._sign_in()
        return "\n".join(lines) + "\n"

    def _sign_in(self) -> list[str]:
        """The sign-in hint: a demo phone per market, where the code goes, a curl example."""
        if not self.demo_phones:
            return []
        phones = ", ".join(
            f"{_readable_phone(phone)} ({code})" for code, phone in self.demo_phones.items()
        )
        code, phone = next(iter(self.demo_phones.items()))
        pad = " " * 12
        post = f"{pad}curl -s {self.graphql} -H 'Content-Type: application/json' \\\n{pad}  -d"
        request = f"requestLoginCode(phone: {_q(phone)}) {{ expiresAt }}"
        verify = f"verifyLoginCode(phone: {_q(phone)}, code: {_q('CODE')}) {{ accessToken }}"
        return [
            f"  Sign in   demo users (a new number makes a new user): {phones}",
            f"{pad}{self.sms}",
            f"{post} '{_mutation(request)}'",
            f"{post} '{_mutation(verify)}'",
            f"{pad}then send the header  Authorization: Bearer <accessToken>  (a {code} user)",
        ]

    def event(self) -> dict[str, Any]:
        """The same facts as fields of one structured log event (LOG_FORMAT=json)."""
        return {
            "version": self.version,
            "environment": self.environment,
            "graphql": self.graphql,
            "graphiql": self.graphql if self.graphiql else None,
            "health": self.health,
            "metrics": self.metrics,
            "elsewhere": self.elsewhere,
            "stores": {", ".join(g.stores): g.where for g in self.store_groups},
            "kv": self.kv,
            "demo_phones": dict(self.demo_phones),
            "sms": self.sms if self.demo_phones else None,
        }


def first_screen(
    settings: Settings,
    topology: Topology,
    *,
    host: str,
    port: int,
    workers: int = 1,
    reload: bool = False,
    demo_phones: Mapping[str, str] | None = None,
    hostname: str | None = None,
) -> FirstScreen:
    """The first screen for this configuration; no I/O, no secrets (passwords show as ***).

    `demo_phones` are shown as the sign-in hint outside production only (where the
    development SMS backends are refused); `hostname` names this machine for other
    machines when `host` is every interface.
    """
    base_url = local_url(host, port)
    everywhere = host in _ANY_HOST
    processes = "reload" if reload else f"{workers} worker{'s' if workers != 1 else ''}"
    title = (
        f"marketgraph {__version__} — {settings.environment}, "
        f"planner {settings.query_planner}, {processes}"
    )
    return FirstScreen(
        title=title,
        version=__version__,
        environment=settings.environment,
        base_url=base_url,
        graphiql=not settings.is_production,
        elsewhere=f"http://{_url_host(hostname)}:{port}" if everywhere and hostname else None,
        store_groups=_store_groups(settings, topology),
        store_note=_store_note(settings, topology),
        kv=safe_url(settings.redis_url) if settings.redis_url else IN_PROCESS_KV,
        other_market=next(
            (c for c in settings.markets.codes if c != settings.default_market), None
        ),
        demo_phones={} if settings.is_production else dict(demo_phones or {}),
        sms=_sms_hint(settings),
    )


def first_demo_phones(markets: MarketRegistry) -> dict[str, str]:
    """Each market's first demo user's phone (the one `seed` creates first), in E.164."""
    from marketgraph.seed import demo_phones

    phones = {}
    for market in markets:
        phone = next(demo_phones(market, markets), None)
        if phone is not None:
            phones[market.code] = phone
    return phones


def local_url(host: str, port: int) -> str:
    """The base URL a browser on this machine opens (every-interface hosts become loopback)."""
    return f"http://{_url_host(_ANY_HOST.get(host, host))}:{port}"


def safe_database_url(url: URL) -> str:
    """`url` without its driver, password (***) or query, but with a socket directory."""
    query = {k: v for k, v in url.query.items() if k == "host"}
    shown = url.set(drivername=url.get_backend_name(), query=query)
    return shown.render_as_string(hide_password=True)


def safe_url(url: str) -> str:
    """A Redis-style URL with its password as *** and without its query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = _url_host(host) + (f":{parts.port}" if parts.port else "")
    if parts.username or parts.password:
        user = parts.username or ""
        netloc = f"{user}{':***' if parts.password else ''}@{netloc}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def show(screen: FirstScreen, log_format: str) -> None:
    """Print the screen (console) or log it as one event (json: no ASCII art in a log
    shipper); on stderr, with the log lines."""
    if log_format == "json":
        log.info("marketgraph ready", **screen.event())
    else:
        click.echo("\n" + screen.text(), err=True)


def announce_when_ready(screen: FirstScreen, log_format: str, wait: float = READY_WAIT) -> None:
    """Show `screen` once, when the server first answers HTTP: after the lifespan started,
    with one worker or many (this runs in the process that starts them)."""

    def watch() -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _answers(screen.health):
                show(screen, log_format)
                return
            time.sleep(_POLL_INTERVAL)

    threading.Thread(target=watch, name="first-screen", daemon=True).start()


def _answers(url: str) -> bool:
    """Whether anything answers a GET of `url` over HTTP (no proxy, no log line of its own)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2.0)
    try:
        conn.request("GET", parts.path)
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, garbled
        return False
    finally:
        conn.close()
    return True


def _store_groups(settings: Settings, topology: Topology) -> tuple[StoreGroup, ...]:
    """Stores grouped by the server and database they share, in topology order."""
    groups: dict[str, list[str]] = {}
    for location in topology:
        if location.source == "embedded":
            where = f"embedded PostgreSQL in {_dir(settings.data_dir / 'postgres')}"
        else:
            where = f"{safe_database_url(location.url)} ({location.source})"
        groups.setdefault(where, []).append(str(location.key))
    return tuple(StoreGroup(tuple(stores), where) for where, stores in groups.items())


def _store_note(settings: Settings, topology: Topology) -> str:
    schemas = ", ".join(location.schema for location in topology)
    if settings.is_embedded:
        return f"a database per store, each with its schema: {schemas}"
    return f"each store in its own schema: {schemas}"


def _sms_hint(settings: Settings) -> str:
    if settings.sms_backend == "console":
        return (
            'SMS_BACKEND=console: the code appears in this log ("login code for <phone>: <code>")'
        )
    if settings.sms_backend == "webhook":
        return "SMS_BACKEND=webhook: the code is sent to SMS_WEBHOOK_URL"
    return "SMS_BACKEND=memory keeps codes inside the process; SMS_BACKEND=console logs them"


def _readable_phone(e164: str) -> str:
    number = phonenumbers.parse(e164, None)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _mutation(body: str) -> str:
    """A JSON request body for a mutation, for a single-quoted shell argument."""
    return f'{{"query": "mutation {{ {body} }}"}}'


def _q(value: str) -> str:
    """A GraphQL string inside a JSON string."""
    return f'\\"{value}\\"'


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _dir(path: Path) -> str:
    return str(path) if path.is_absolute() else f"./{path}"
