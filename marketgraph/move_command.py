"""`marketgraph db move`: move stores' data to a new placement, resumable and verified.

The logic lives in `marketgraph.db.move`; this module reads the options, prints the plan,
draws a progress bar per table and the verification table, and turns refusals into one
message and an exit code: 0 done and verified, 1 refused, failed or a mismatch (a dry run:
a store the move would refuse), 2 a bad configuration or usage, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from marketgraph.db.move import Check, StoreMove, StorePlan
    from marketgraph.db.topology import StoreKey, StoreLocation
    from marketgraph.settings import Settings

# Printed without importing marketgraph.db.move: `marketgraph --help` stays quick.
DEFAULT_BATCH_ROWS = 10_000


@click.command(name="move")
@click.option(
    "--to",
    "assignments",
    multiple=True,
    metavar="NAME=URL",
    help="A database variable of the new placement, as the server will be given it "
    "(repeatable; wins over --to-env).",
)
@click.option(
    "--to-env",
    "env_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file of NAME=VALUE lines, the server's environment for the new placement: its "
    "database variables are read, the others ignored.",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    metavar="MARKET.ROLE",
    help="Move only this store (repeatable).  [default: every store whose database changes]",
)
@click.option("--resume", is_flag=True, help="Continue a move recorded in the targets.")
@click.option("--dry-run", is_flag=True, help="Print the plan and row counts; change nothing.")
@click.option(
    "--verify-only",
    is_flag=True,
    help="Only compare row counts and checksums of source and target.",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=None,
    help=f"Rows per committed batch.  [default: {DEFAULT_BATCH_ROWS}]",
)
def move(
    assignments: tuple[str, ...],
    env_file: Path | None,
    stores: tuple[str, ...],
    resume: bool,
    dry_run: bool,
    verify_only: bool,
    batch_rows: int | None,
) -> None:
    """Move stores' data from where the environment places them to a new placement.

    The new placement is given as database variables (--to, --to-env), resolved as the
    server resolves them; a store they do not place stays where it is. Target databases
    and schemas are created where the role may and migrated to head, then each table is
    copied in primary-key batches, recorded in the target (schema marketgraph_move) so an
    interrupted move continues with --resume, and row counts and checksums of source and
    target are compared at the end.

    Writes to the moved stores must stop during the move: it copies a snapshot.
    """
    from rich.console import Console

    from marketgraph.settings import ConfigError, Settings

    if not assignments and env_file is None:
        raise click.UsageError(
            "give the new placement: --to NAME=URL (repeatable) or --to-env FILE"
        )
    if dry_run and verify_only:
        raise click.UsageError("--dry-run and --verify-only exclude each other")
    out = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        settings = Settings.from_env()
        code = asyncio.run(
            _act(
                settings,
                assignments,
                env_file,
                stores,
                resume=resume,
                dry_run=dry_run,
                verify_only=verify_only,
                batch_rows=batch_rows or DEFAULT_BATCH_ROWS,
                out=out,
                err=err,
            )
        )
    except ConfigError as exc:
        _exit(2, str(exc))
    except KeyboardInterrupt:
        _exit(
            130,
            "interrupted: the batches committed so far are recorded in the targets; run the "
            "same command with --resume to continue",
        )
    if code:
        sys.exit(code)


def _exit(code: int, message: str) -> NoReturn:
    click.echo(f"marketgraph: {message}", err=True)
    sys.exit(code)


async def _act(
    settings: Settings,
    assignments: Sequence[str],
    env_file: Path | None,
    stores: Sequence[str],
    *,
    resume: bool,
    dry_run: bool,
    verify_only: bool,
    batch_rows: int,
    out: Console,
    err: Console,
) -> int:
    """The command's work; the exit code."""
    from marketgraph.db import move as mover
    from marketgraph.db.databases import prepare_topology

    variables = mover.read_env_file(env_file) if env_file is not None else {}
    variables.update(mover.parse_assignments(assignments))
    source = await prepare_topology(settings)
    target = mover.target_topology(source, settings.markets.codes, variables)
    moves = mover.plan_moves(source, target, stores)
    if not moves:
        out.print("Nothing to move: every store's target is where the store is.")
        return 0
    staying = [str(loc.key) for loc in source if loc.key not in {m.key for m in moves}]
    try:
        if verify_only:
            _print_moves(out, moves, staying, plans=None)
            return _report(out, await mover.verify_stores(moves), moves, settings, variables)
        if dry_run:
            plans = await mover.inspect_moves(moves, resume=resume, count_rows=True)
            out.print("Dry run: nothing is changed.\n")
            _print_moves(out, moves, staying, plans)
            out.print(f"\nWrite policy: {mover.WRITE_POLICY}", soft_wrap=True)
            refused = [plan.problem for plan in plans if plan.problem]
            for problem in refused:
                err.print(f"marketgraph: refused: {problem}", soft_wrap=True, markup=False)
            return 1 if refused else 0
        _print_moves(out, moves, staying, plans=None)
        err.print(f"\nWrite policy: {mover.WRITE_POLICY}\n", soft_wrap=True)
        with _bars(err) as progress:
            await mover.copy_stores(
                moves, resume=resume, batch_rows=batch_rows, reporter=_Bars(progress)
            )
        return _report(out, await mover.verify_stores(moves), moves, settings, variables)
    except mover.MoveError as exc:
        err.print(f"marketgraph: {exc}", soft_wrap=True, markup=False)
        return 1


def _print_moves(
    out: Console, moves: Sequence[StoreMove], staying: list[str], plans: list[StorePlan] | None
) -> None:
    """Which stores move from where to where (with the dry run's verdicts and row counts)."""
    by_key = {plan.move.key: plan for plan in plans or []}
    for move in moves:
        out.print(f"{move.key}", soft_wrap=True)
        out.print(f"  from {_where(move.source)}", soft_wrap=True, markup=False)
        out.print(f"  to   {_where(move.target)}", soft_wrap=True, markup=False)
        plan = by_key.get(move.key)
        if plan is None:
            continue
        if plan.problem:
            out.print(f"  refused: {plan.problem}", soft_wrap=True, markup=False)
        else:
            out.print(f"  target: {plan.action}", soft_wrap=True, markup=False)
        if plan.source_rows:
            rows = ", ".join(f"{table} {n}" for table, n in plan.source_rows.items())
            total = sum(plan.source_rows.values())
            out.print(f"  rows: {rows} ({total} in all)", soft_wrap=True, markup=False)
    if staying:
        out.print(f"Staying where they are: {', '.join(staying)}", soft_wrap=True)


def _where(location: StoreLocation) -> str:
    from marketgraph.db.create import plain_url

    return f"{plain_url(location.url)} schema {location.schema} ({location.source})"


def _report(
    out: Console,
    checks: list[Check],
    moves: Sequence[StoreMove],
    settings: Settings,
    variables: dict[str, str],
) -> int:
    """Print the verification table and what to do next; 1 on any mismatch."""
    from rich.table import Table

    from marketgraph.db.move import switch_notes

    table = Table(
        "store",
        "table",
        "source rows",
        "target rows",
        "source checksum",
        "target checksum",
        "match",
        title="verification",
    )
    for check in checks:
        table.add_row(
            check.store,
            check.item,
            _rows(check.source.rows),
            _rows(check.target.rows),
            check.source.checksum,
            check.target.checksum,
            "yes" if check.matches else "NO",
        )
    out.print(table)
    mismatched = [check for check in checks if not check.matches]
    if mismatched:
        names = ", ".join(f"{check.store} {check.item}" for check in mismatched)
        out.print(
            f"MISMATCH in {names}: the source changed during the move (were writes stopped?) "
            "or the target was changed since. Keep the server on the current placement; "
            "to move again, drop the mismatched stores' schemas and the schema "
            "marketgraph_move in their target databases.",
            soft_wrap=True,
            markup=False,
        )
        return 1
    placed_by = sorted({move.target.source for move in moves})
    out.print(
        f"Verified: {len(checks)} tables and sequences of {len(moves)} stores match. Next: "
        f"give the server the new placement ({', '.join(placed_by)}), restart it, check it "
        "(`marketgraph check`), then allow writes again. The source data is left as it was: "
        "your way back until you drop it.",
        soft_wrap=True,
        markup=False,
    )
    for note in switch_notes(settings.database_urls, variables, moves):
        out.print(f"Note: {note}", soft_wrap=True, markup=False)
    return 0


def _rows(rows: int | None) -> str:
    return "-" if rows is None else str(rows)


def _bars(console: Console) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


class _Bars:
    """A progress bar per table (and per links pass), on the command's error stream."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[tuple[StoreKey, str], tuple[TaskID, int]] = {}

    def started(self, store: StoreKey, item: str, total: int, done: int) -> None:
        total = max(total, done)
        task = self._progress.add_task(f"{store} {item}", total=total, completed=done)
        self._tasks[store, item] = (task, total)

    def advanced(self, store: StoreKey, item: str, rows: int) -> None:
        self._progress.advance(self._tasks[store, item][0], rows)

    def finished(self, store: StoreKey, item: str) -> None:
        task, total = self._tasks[store, item]
        self._progress.update(task, completed=total)
