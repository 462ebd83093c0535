"""The `marketgraph` command: serve, db, seed, schema export, whereis, check, users."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

import click

from marketgraph.erasure_command import audit, erase
from marketgraph.move_command import move
from marketgraph.settings import ROLES, ConfigError, Role, Settings, refuse_unshared_workers

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
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    envvar="WEB_CONCURRENCY",
    show_envvar=True,
    help="Worker processes; each opens its own database pools.",
)
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
def serve(host: str, port: int, workers: int, reload: bool) -> None:
    """Run the API server; on the embedded default also start PostgreSQL, migrate and seed.

    On SIGTERM each worker drains (SHUTDOWN_GRACE) before it stops; the embedded
    PostgreSQL stops when this command exits.
    """
    import uvicorn

    from marketgraph import draining

    # The workers read their Settings from the environment: this is how each learns how
    # many pools share the servers (--reload runs one server process).
    os.environ["WEB_CONCURRENCY"] = str(1 if reload else workers)
    settings = load_settings()
    try:
        refuse_unshared_workers(settings)  # the workers' own start-up check, said once here
    except ConfigError as exc:
        _fail(exc)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again to die of it;
    # this process exits normally instead, through the `finally` that stops PostgreSQL.
    signal.signal(signal.SIGTERM, _exit_normally)
    embedded = None
    try:
        if settings.is_embedded:
            from marketgraph.db.embedded import EmbeddedPostgres

            # Started here, once: the workers are handed its URL and only connect, so it
            # stops when this process leaves it, however the workers end.
            embedded = EmbeddedPostgres(settings.data_dir)
            embedded.start()
            embedded.share()
            run(_prepare_embedded(settings))
        if settings.db_budget_check == "enforce":
            # Once here, so an over-budget configuration is one line and an exit code, not
            # every worker failing its start-up (and, with workers, being started again).
            error = run(_budget_error(settings))
            if error is not None:
                _fail(error)
        _announce(settings, host, port, workers, reload)
        config = uvicorn.Config(
            "marketgraph.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers if not reload else None,
            reload=reload,
            log_config=None,
            # Access lines are INFO: at a quieter LOG_LEVEL uvicorn should not even prepare
            # them.
            access_log=settings.log_level in ("DEBUG", "INFO"),
            # The app reads X-Forwarded-For itself (from the right, past FORWARDED_ALLOW_IPS).
            proxy_headers=False,
            # httptools, with the request head bounded in bytes and time (http_protocol.py).
            http="marketgraph.http_protocol:BoundedHttpToolsProtocol",
            # After the drain, answers already begun get this long to be sent.
            timeout_graceful_shutdown=draining.FINISH_SECONDS,
        )
        draining.run(config)  # uvicorn.run, with servers that drain on SIGTERM
    finally:
        if embedded is not None:
            # The workers have exited (uvicorn's supervisor waits for them); a second
            # signal must not cut PostgreSQL's stop short.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            embedded.stop()


def _exit_normally(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _announce(settings: Settings, host: str, port: int, workers: int, reload: bool) -> None:
    """Show the first screen (URLs, stores, how to sign in) once the server answers: from this
    process, so once however many workers there are."""
    import socket

    from marketgraph.banner import announce_when_ready, first_demo_phones, first_screen
    from marketgraph.db.databases import prepare_topology
    from marketgraph.logs import configure_logging

    # Workers configure their own logging; this process needs it for LOG_FORMAT=json.
    configure_logging(settings.log_level, settings.log_format)
    screen = first_screen(
        settings,
        run(prepare_topology(settings)),
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        demo_phones=first_demo_phones(settings.markets),
        hostname=socket.gethostname(),
    )
    announce_when_ready(screen, settings.log_format)


async def _budget_error(settings: Settings) -> ConfigError | None:
    """What the workers' start-up check would refuse (a server not answering is theirs to
    report)."""
    from marketgraph.db.budget import measure_budget
    from marketgraph.db.databases import open_databases

    databases = await open_databases(settings)
    try:
        return (await measure_budget(databases)).error()
    finally:
        await databases.dispose()


def _fail(error: ConfigError) -> NoReturn:
    """Exit as `load_settings` does on a bad configuration."""
    click.echo(f"marketgraph: {error}", err=True)
    sys.exit(2)


async def _upgrade_all(settings: Settings) -> None:
    from marketgraph.db import migrate
    from marketgraph.db.databases import prepare_topology

    topology = await prepare_topology(settings)
    for location in topology:
        await migrate.upgrade(location)


async def _prepare_embedded(settings: Settings) -> None:
    from marketgraph.seed import seed_if_empty

    await _upgrade_all(settings)
    result = await seed_if_empty(settings)
    if result is not None:
        total = result.total
        click.echo(
            f"loaded demo data: {total.products} products, {total.users} users "
            f"in {len(result.by_market)} markets",
            err=True,
        )


# --- db -------------------------------------------------------------------------------------

market_option = click.option("--market", "market", default=None, help="Only this market's stores.")
role_option = click.option(
    "--role", "role", type=click.Choice(ROLES), default=None, help="Only stores of this role."
)


@cli.group()
def db() -> None:
    """Migrations of every (market, role) store."""


db.add_command(move)


async def _each_store(
    settings: Settings,
    market: str | None,
    role: Role | None,
    action: Callable[[Any], Awaitable[Any]],
) -> list[Any]:
    from marketgraph.db.databases import prepare_topology

    if market is not None and settings.markets.get(market) is None:
        raise click.BadParameter(
            f"unknown market {market!r}; known markets: {', '.join(settings.markets.codes)}",
            param_hint="--market",
        )
    topology = await prepare_topology(settings)
    results = []
    for location in topology.select(market.lower() if market else None, role):
        results.append((location, await _explained(location, action(location))))
    return results


async def _explained(location: Any, work: Awaitable[T]) -> T:
    """`work` on one store; a failure to reach or find its database is one line and exit 1,
    not a traceback."""
    from marketgraph.db.create import StoreProblem, explain

    try:
        return await work
    except StoreProblem as problem:
        message: str | None = str(problem)
    except Exception as exc:
        message = explain(location, exc)
        if message is None:
            raise
    click.echo(f"marketgraph: {message}", err=True)
    sys.exit(1)


async def _reachable_databases(settings: Settings) -> Any:
    """The stores' `Databases`, once every database answers; else one line and exit 1."""
    from marketgraph.db.create import StoreProblem, check_reachable
    from marketgraph.db.databases import Databases, prepare_topology

    topology = await prepare_topology(settings)
    try:
        await check_reachable(topology)
    except StoreProblem as problem:
        click.echo(f"marketgraph: {problem}", err=True)
        sys.exit(1)
    return Databases(topology, settings)


@db.command()
def create() -> None:
    """Create the databases and schemas of every store that are missing (external servers,
    where the role may); what exists is left alone."""
    from marketgraph.db.create import StoreProblem, create_databases
    from marketgraph.db.databases import prepare_topology

    settings = load_settings()

    async def act() -> list[Any]:
        topology = await prepare_topology(settings)
        try:
            return await create_databases(topology)
        except StoreProblem as problem:
            click.echo(f"marketgraph: {problem}", err=True)
            sys.exit(1)

    for done in run(act()):
        database = "created" if done.database_created else "exists"
        schema = "created" if done.schema_created else "exists"
        click.echo(
            f"{done.store}: database {done.database} ({database}), schema {done.schema} ({schema})"
        )


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


# --- seed -----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--users",
    default=None,
    type=click.IntRange(min=0),
    help="Demo users per market (each with a cart and a wallet).  [default: 20]",
)
@click.option(
    "--products",
    default=None,
    type=click.IntRange(min=0),
    help="Demo products per market.  [default: 60]",
)
def seed(users: int | None, products: int | None) -> None:
    """Load demo data: products with local names and prices, and users, in every market.

    Idempotent: running it again adds only what is missing. On the embedded
    default the stores are migrated to head first.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from sqlalchemy.exc import DBAPIError

    from marketgraph import seed as demo

    settings = load_settings()
    n_users = demo.DEFAULT_USERS if users is None else users
    n_products = demo.DEFAULT_PRODUCTS if products is None else products
    console = Console(stderr=True)

    async def act() -> demo.SeedResult:
        if settings.is_embedded:
            await _upgrade_all(settings)
        databases = await _reachable_databases(settings)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                tasks = {
                    market.code: progress.add_task(
                        f"{market.code} ({market.currency})", total=n_users + n_products
                    )
                    for market in settings.markets
                }
                return await demo.seed(
                    databases,
                    users=n_users,
                    products=n_products,
                    on_progress=lambda code, rows: progress.advance(tasks[code], rows),
                )
        finally:
            await databases.dispose()

    try:
        result = run(act())
    except DBAPIError as exc:  # reachable, but not migrated
        click.echo(
            f"marketgraph: seeding failed: {exc.orig or exc}\n"
            "(are the stores migrated? run `marketgraph db upgrade`)",
            err=True,
        )
        sys.exit(1)
    table = Table("market", "products", "users", "carts", "wallets", title="rows added")
    for code, counts in result.by_market.items():
        table.add_row(
            code, *(str(n) for n in (counts.products, counts.users, counts.carts, counts.wallets))
        )
    console.print(table)


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


@cli.group()
def plan() -> None:
    """The query planner."""


@plan.command("explain")
@click.argument("query")
@click.option("--operation-name", default=None, help="The operation to plan, if several.")
@click.option("--variables", default=None, help="The variables, as a JSON object.")
@click.option("--market", default="kg", show_default=True, help="Whose schemas the SQL names.")
def plan_explain(
    query: str, operation_name: str | None, variables: str | None, market: str
) -> None:
    """Print what the planner does with QUERY ('-' reads standard input): its steps, the
    statements per store, fused lookups, snapshot, and each statement's SQL — or why
    Strawberry answers it instead. Runs nothing."""
    import orjson

    from marketgraph.planner.explain import explain
    from marketgraph.schema import build_schema

    text = sys.stdin.read() if query == "-" else query
    values = orjson.loads(variables) if variables else None
    click.echo(explain(build_schema(), text, operation_name, values, market), nl=False)


@cli.group()
def documents() -> None:
    """Persisted documents: the manifest of trusted documents (PERSISTED_DOCUMENTS)."""


@documents.command("add")
@click.argument(
    "manifests", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
def documents_add(manifests: tuple[Path, ...]) -> None:
    """Check each document of MANIFESTS against the schema and add them to the server's
    manifest (PERSISTED_DOCUMENTS_MANIFEST); running servers pick them up without a restart.
    Reads graphql-codegen's persisted-documents.json, Relay's queryMap.json and Apollo's
    persisted-query manifest. Nothing is written when one fails."""
    from marketgraph.persisted import read_manifest, write_manifest
    from marketgraph.schema import build_schema
    from marketgraph.schema.documents import DocumentRules

    settings = load_settings()
    incoming: dict[str, str] = {}
    for manifest in manifests:
        try:
            incoming.update(read_manifest(manifest.read_bytes()))
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{manifest}: {exc}") from None
    checker = build_schema(DocumentRules.from_settings(settings)).documents
    problems = []
    for document_id, text in incoming.items():
        checked = checker.check(text)
        if checked.document is None or checked.errors:
            problems.append(f"{document_id}: {checked.errors[0].message}")
    target = settings.manifest_path
    current = read_manifest(target.read_bytes()) if target.exists() else {}
    problems += [
        f"{document_id}: a different document has this id in {target}"
        for document_id, text in incoming.items()
        if current.get(document_id, text) != text
    ]
    if problems:
        raise click.ClickException(
            f"{len(problems)} document(s) refused; nothing written:\n  " + "\n  ".join(problems)
        )
    added = len(incoming.keys() - current.keys())
    write_manifest(target, {**current, **incoming})
    click.echo(
        f"{added} added, {len(incoming) - added} known already; {target} holds "
        f"{len(current) + added}"
    )


@documents.command("list")
def documents_list() -> None:
    """Print each trusted document's id and operation names."""
    from graphql import OperationDefinitionNode, parse

    from marketgraph.persisted import read_manifest

    target = load_settings().manifest_path
    if not target.exists():
        raise click.ClickException(f"no manifest at {target}: `marketgraph documents add`")
    for document_id, text in read_manifest(target.read_bytes()).items():
        names = [
            d.name.value if d.name else "(anonymous)"
            for d in parse(text).definitions
            if isinstance(d, OperationDefinitionNode)
        ]
        click.echo(f"{document_id}\t{', '.join(names)}")


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


@cli.command()
def check() -> None:
    """Connectivity of every store, like /health/detailed; exit 1 unless all is healthy."""
    from rich.console import Console

    from marketgraph.db.health import check as inspect_stores
    from marketgraph.db.health import check_table

    report = run(inspect_stores(load_settings()))
    Console().print(check_table(report))
    if report.overall_status != "healthy":
        sys.exit(1)


@cli.group()
def users() -> None:
    """User accounts."""


users.add_command(erase)
users.add_command(audit)


@users.command()
@click.argument("who")
@click.option("--market", "market_code", required=True, help="The market the user lives in.")
def promote(who: str, market_code: str) -> None:
    """Make the user with this phone (E.164) or email an admin: how a fresh install gets one."""
    from marketgraph.errors import DomainError
    from marketgraph.markets import detect_market
    from marketgraph.resolvers.accounts import promote as promote_user

    settings = load_settings()

    async def act() -> str:
        market = settings.markets.require(market_code)
        key = who if "@" in who else detect_market(who, settings.markets)[1]
        databases = await _reachable_databases(settings)
        try:
            user = await promote_user(databases, market, key)
        finally:
            await databases.dispose()
        return f"{user.email or user.phone} is now an admin of market {market.code}"

    try:
        click.echo(run(act()))
    except DomainError as exc:
        click.echo(f"{exc.code}: {exc.message}", err=True)
        sys.exit(1)


def main() -> None:
    cli(prog_name="marketgraph")
