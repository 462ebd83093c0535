"""`marketgraph users erase` and `marketgraph users audit`: erasure for operators.

Both are plain click commands, registered in cli.py's `users` group
(`users.add_command(erase)`, `users.add_command(audit)`); the work is in
`marketgraph.resolvers.erasure`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click

from marketgraph.db.databases import Databases
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import encode_id
from marketgraph.resolvers.erasure import Audit, Erasure, Subject
from marketgraph.settings import Settings

T = TypeVar("T")

WHO_HELP = (
    "WHO is the user's id as the API gives it (a User's `id`), their phone (E.164) or their "
    "email (with --market)."
)
market_option = click.option(
    "--market",
    "market_code",
    default=None,
    help="The user's market: needed for an email; checked against an id or a phone.",
)


def _settings() -> Settings:
    from marketgraph.cli import load_settings  # here: cli.py imports this module

    return load_settings()


def _with_databases(settings: Settings, work: Callable[[Databases], Awaitable[T]]) -> T:
    """`work` on freshly opened stores, closed afterwards, in its own event loop."""
    from marketgraph.cli import run
    from marketgraph.db.databases import open_databases

    async def act() -> T:
        databases = await open_databases(settings)
        try:
            return await work(databases)
        finally:
            await databases.dispose()

    return run(act())


def _describe(subject: Subject) -> str:
    """ "user <id> (phone …, email …) of market kg", or what was given for a user not found."""
    who = [f"phone {subject.phone}"] if subject.phone else []
    who += [f"email {subject.email}"] if subject.email else []
    if subject.user_id is None:
        return f"{', '.join(who)} in market {subject.market.code} (no such user now)"
    named = f" ({', '.join(who)})" if who else ""
    gid = encode_id("User", subject.market.code, subject.user_id)
    return f"user {gid}{named} of market {subject.market.code}"


def _fail(exc: DomainError, status: int = 1) -> NoReturn:
    click.echo(f"{exc.code}: {exc.message}", err=True)
    sys.exit(status)


@click.command(name="erase", epilog=WHO_HELP)
@click.argument("who")
@market_option
@click.option("--yes", "-y", is_flag=True, help="Erase without asking for confirmation.")
def erase(who: str, market_code: str | None, yes: bool) -> None:
    """Erase a user: delete their credentials, sessions, profile, preferences, the API keys
    they created, cart and wallet; keep their orders and wallet transactions for accounting
    under an anonymous id; refuse their tokens.

    Running it again is harmless and finishes an interrupted erasure (after the user's row is
    gone, name them by id).
    """
    from marketgraph.kv import open_kv
    from marketgraph.money import format_money
    from marketgraph.resolvers.erasure import erase_user, find_subject

    settings = _settings()
    try:
        subject = _with_databases(
            settings, lambda dbs: find_subject(dbs, settings.markets, who, market_code)
        )
    except DomainError as exc:
        _fail(exc)
    if subject.user_id is None:
        _fail(
            DomainError(
                ErrorCode.NOT_FOUND,
                f"No user {who} in market {subject.market.code} (to finish an interrupted "
                "erasure, name the user by id)",
            )
        )
    user_id = subject.user_id
    if not yes:
        click.confirm(f"Erase {_describe(subject)}?", abort=True)
    if not settings.redis_url:
        click.echo(
            "warning: REDIS_URL is not set, so the server's access-token revocations cannot "
            "be reached from here: access tokens already issued stay valid for up to "
            f"{settings.access_token_ttl} s (refresh tokens are deleted)",
            err=True,
        )

    async def act(databases: Databases) -> Erasure:
        kv = open_kv(settings.redis_url, settings.redis_timeout)
        try:
            return await erase_user(
                databases, kv, subject.market, user_id, settings.access_token_ttl
            )
        finally:
            await kv.close()

    try:
        done = _with_databases(settings, act)
    except DomainError as exc:  # the key-value store down, say: run it again later
        _fail(exc)
    market = subject.market
    gid = encode_id("User", market.code, done.user_id)
    if not done.changed_anything:
        click.echo(f"nothing left to erase of user {gid} in market {market.code}")
        return
    a, b = done.auth, done.app
    click.echo(f"erased user {gid} of market {market.code}")
    click.echo(
        f"  {market.code}.auth: deleted users {int(a.user_deleted)}, refresh tokens "
        f"{a.refresh_tokens_deleted}, API keys {a.api_keys_deleted}"
    )
    balance = format_money(b.wallet_balance_minor, market)
    click.echo(
        f"  {market.code}.app: deleted carts {b.carts_deleted} ({b.cart_items_deleted} items), "
        f"wallets {b.wallets_deleted} (balance {balance}, the sum of the kept transactions)"
    )
    click.echo(
        f"  {market.code}.app: kept for accounting under an anonymous id: orders "
        f"{b.orders_anonymised}, wallet transactions {b.transactions_anonymised}"
    )
    click.echo("  sessions: every access token issued until now is refused")


@click.command(name="audit", epilog=WHO_HELP)
@click.argument("who")
@market_option
@click.option("--phone", default=None, help="Also look for this phone (E.164) in every store.")
@click.option("--email", default=None, help="Also look for this email in every store.")
def audit(who: str, market_code: str | None, phone: str | None, email: str | None) -> None:
    """List every row of every store, in every market, that names a user: by their id in any
    UUID column, by their phone or email in any text, and rows referencing those.

    Exit status 0 when no row is personal, 1 when some are, 2 when the audit could not be
    made (a store that cannot be read, a user that cannot be named).
    """
    from marketgraph.markets import detect_market
    from marketgraph.resolvers.erasure import audit_user, find_subject

    settings = _settings()

    async def act(databases: Databases) -> Audit:
        subject = await find_subject(databases, settings.markets, who, market_code)
        extra_phone = detect_market(phone, settings.markets)[1] if phone else None
        subject = Subject(
            subject.market,
            subject.user_id,
            subject.phone or extra_phone,
            subject.email or (email.strip().lower() if email else None),
        )
        return await audit_user(databases, subject)

    try:
        report = _with_databases(settings, act)
    except DomainError as exc:
        _fail(exc, status=2)
    subject = report.subject
    click.echo(f"audit of {_describe(subject)}")
    looked = [f"id {subject.user_id}"] if subject.user_id else []
    looked += [f"phone {subject.phone}"] if subject.phone else []
    looked += [f"email {subject.email}"] if subject.email else []
    click.echo(f"looking for: {', '.join(looked)}")
    for store in report.stores:
        rows = [row for row in report.rows if row.store == store]
        personal = sum(row.personal for row in rows)
        summary = f"{len(rows)} rows, {personal} personal" if rows else "no rows"
        click.echo(f"{store}: {summary}")
        for row in rows:
            click.echo(
                f"  {row.table} {row.key}: by {', '.join(row.matched)}; {row.verdict} "
                f"[{row.policy}]"
            )
    for problem in report.unreadable:
        click.echo(f"unreadable {problem}", err=True)
    if report.unreadable:
        click.echo("audit incomplete: some stores could not be read", err=True)
        sys.exit(2)
    count = len(report.personal)
    if count:
        click.echo(f"{count} personal rows name this user")
        sys.exit(1)
    click.echo("no personal row names this user")
