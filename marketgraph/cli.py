"""The `marketgraph` command: serve, db, seed, schema export, whereis, check."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from marketgraph.settings import ROLES, ConfigError, Role, Settings

T = TypeVar("T")


def load_settings() -> Settings:
    """Settings from the environment, or a clean exit naming the bad variables."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        click.echo(f"marketgraph: {exc}", err=True)
        sys.exit(2)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """marketgraph: a GraphQL API for commerce data split by market and bounded context."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
def serve(host: str, port: int, workers: int, reload: bool) -> None:
    """Run the API server; on the embedded default also start PostgreSQL, migrate and seed."""
    import uvicorn

    settings = load_settings()
    if workers > 1 and not settings.redis_url:
        raise click.UsageError(
            "--workers > 1 needs REDIS_URL: the in-process key-value store "
            "(login codes, rate limits, revocations) cannot be shared between workers"
        )
    if settings.is_embedded:
        from marketgraph.db.embedded import EmbeddedPostgres

        # Started here so every worker joins the same server; it stops when this process exits.
        EmbeddedPostgres(settings.data_dir).start()
        run(_prepare_embedded(settings))
    uvicorn.run(
        "marketgraph.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers if not reload else None,
        reload=reload,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=",".join(settings.forwarded_allow_ips),
    )


async def _prepare_embedded(settings: Settings) -> None:
    from marketgraph.db import migrate
    from marketgraph.db.databases import prepare_topology

    topology = await prepare_topology(settings)
    for location in topology:
        await migrate.upgrade(location)
    from marketgraph.seed import seed_if_empty

    await seed_if_empty(settings)


# --- db -------------------------------------------------------------------------------------

market_option = click.option("--market", "market", default=None, help="Only this market's stores.")
role_option = click.option(
    "--role", "role", type=click.Choice(ROLES), default=None, help="Only stores of this role."
)


@cli.group()
def db() -> None:
    """Migrations of every (market, role) store."""


async def _each_store(
    settings: Settings,
    market: str | None,
    role: Role | None,
    action: Callable[[Any], Awaitable[Any]],
) -> list[Any]:
    from marketgraph.db.databases import prepare_topology

    if market is not None:
        settings.markets.require(market)
    topology = await prepare_topology(settings)
    results = []
    for location in topology.select(market.lower() if market else None, role):
        results.append((location, await action(location)))
    return results


@db.command()
@market_option
@role_option
@click.option("--to", "target", default="head", show_default=True, help="Revision to reach.")
def upgrade(market: str | None, role: Role | None, target: str) -> None:
    """Bring stores up to a revision (default: head)."""
    from marketgraph.db import migrate

    settings = load_settings()

    async def act(location: Any) -> None:
        click.echo(f"{location.key}: upgrading to {target}")
        await migrate.upgrade(location, target)

    run(_each_store(settings, market, role, act))


@db.command()
@market_option
@role_option
@click.option("--to", "target", default="-1", show_default=True, help="Revision, -N or base.")
def downgrade(market: str | None, role: Role | None, target: str) -> None:
    """Step stores back (default: one revision)."""
    from marketgraph.db import migrate

    settings = load_settings()

    async def act(location: Any) -> None:
        click.echo(f"{location.key}: downgrading to {target}")
        await migrate.downgrade(location, target)

    run(_each_store(settings, market, role, act))


@db.command()
@market_option
@role_option
def current(market: str | None, role: Role | None) -> None:
    """Show each store's revision next to the head."""
    from marketgraph.db import migrate

    settings = load_settings()
    for _, rev in run(_each_store(settings, market, role, migrate.current)):
        state = "at head" if rev.at_head else f"head is {rev.head}"
        click.echo(f"{rev.store}: {rev.current or '(empty)'} ({state})")


@db.command(name="history")
@role_option
def history_(role: Role | None) -> None:
    """List each role's revisions, newest first."""
    from marketgraph.db import migrate

    for r in (role,) if role else ROLES:
        click.echo(f"[{r}]")
        for rev, down, doc in migrate.history(r):
            click.echo(f"  {down or '<base>'} -> {rev}: {doc}")


@db.command()
@click.option("--role", "role", type=click.Choice(ROLES), required=True)
@click.option("-m", "--message", required=True)
@click.option("--autogenerate", is_flag=True, help="Diff the models against the first store.")
def revision(role: Role, message: str, autogenerate: bool) -> None:
    """Write a new revision for one role's branch."""
    from marketgraph.db import migrate
    from marketgraph.db.databases import prepare_topology

    settings = load_settings()

    async def act() -> None:
        location = (await prepare_topology(settings)).select(role=role)[0]
        await migrate.revision(location, message, autogenerate=autogenerate)

    run(act())


# --- schema, whereis --------------------------------------------------------------------------


@cli.group()
def schema() -> None:
    """The GraphQL schema."""


@schema.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def export(path: Path | None) -> None:
    """Write the SDL to PATH (default: standard output)."""
    from marketgraph.schema import export_sdl

    sdl = export_sdl()
    if path is None:
        click.echo(sdl, nl=False)
    else:
        path.write_text(sdl, encoding="utf-8")
        click.echo(f"wrote {path}", err=True)


@cli.command()
@click.argument("phone")
def whereis(phone: str) -> None:
    """Which market (and so which databases) a phone number belongs to."""
    from marketgraph.errors import DomainError
    from marketgraph.markets import detect_market

    settings = load_settings()
    try:
        market, e164 = detect_market(phone, settings.markets)
    except DomainError as exc:
        click.echo(f"{exc.code}: {exc.message}", err=True)
        sys.exit(1)
    click.echo(f"{e164} -> {market.code} ({market.name}, {market.currency})")
    click.echo(f"stores: {market.code}.auth (user), {market.code}.app (cart, orders, wallet)")


def main() -> None:
    cli(prog_name="marketgraph")
