"""The Markdown report of one run: machine, results per cell, ratios, statements, targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.queries import QUERIES
from bench.servers import CONFIGS

if TYPE_CHECKING:
    from bench.run import Cell, Probe, Run

# Issue 6, "What it must show", item 2.
MIN_Q2_PLANNER_OVER_OFF = 10.0
MIN_PLANNER_OVER_FLOOR = 0.7
MAX_P99_OVER_P50 = 2.0
MAX_RSS_MIB = 150.0
# Other work on the machine above this (% of one core) makes a run's figures suspect.
MAX_FOREIGN_CPU_PCT = 10.0


def _stores(statements: dict[str, float]) -> str:
    stores = [f"{k} {v:g}" for k, v in statements.items() if k != "other"]
    return " · ".join(stores) if stores else "0"


def _in_stores(probe: Probe) -> dict[str, float]:
    """Statements per request that read a store (connection chatter left out)."""
    return {k: v for k, v in probe.statements.items() if k != "other"}


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:.2f}×"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def render(run: Run) -> str:
    m = run.machine
    lines = [
        f"# marketgraph benchmark — {run.started:%Y-%m-%d %H:%M} UTC on {m['host']}",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['cpu']} × {m['nproc']} (nproc) |",
        f"| RAM | {m['ram']} |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} |",
        f"| PostgreSQL | {m['postgresql']} (same machine, loopback) |",
        f"| code | {m['commit']} |",
        f"| load average | {m['load average']} |",
        f"| packages | {m['packages']} |",
        "",
        "Load: "
        + "; ".join(f"{k}: {v}" for k, v in run.settings.items())
        + f". The whole run (probes and load) took **{run.seconds:.0f} s**.",
        "",
    ]
    cells = {(c.query, c.config): c for c in run.cells}
    configs = [name for name in CONFIGS if name in run.probes]

    if run.cells:
        lines += [
            "## Throughput and latency",
            "",
            "| query | configuration | req/s | p50 ms | p99 ms | p99/p50 | SQL/request by store "
            "| SQL/request under load | other round trips/request | new PG sessions "
            "| peak RSS MiB | server CPU ms/request | errors | other work % |",
            "|---|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        few = False
        for cell in run.cells:
            probe: Probe = run.probes[cell.config][cell.query]
            load = cell.load
            rate = f"{load.rps:,.1f}"
            if load.requests < run.settings["connections"]:
                few, rate = True, rate + " ⚠"
            under_load = (
                f"{cell.metrics_statements:.2f}" if cell.metrics_statements is not None else "–"
            )
            lines.append(
                f"| {cell.query} | {CONFIGS[cell.config].label} | {rate} "
                f"| {load.p50_ms:.2f} | {load.p99_ms:.2f} | {_ratio(load.p99_ms, load.p50_ms)} "
                f"| {_stores(probe.statements)} | {under_load} "
                f"| {probe.statements.get('other', 0):g} | {cell.sessions_opened} "
                f"| {cell.peak_rss_mib:.0f} "
                f"| {cell.cpu_ms_per_request:.2f} | {load.errors} | {cell.foreign_cpu_pct:.0f} |"
            )
        busy = max(c.foreign_cpu_pct for c in run.cells)
        if busy > MAX_FOREIGN_CPU_PCT:
            lines += [
                "",
                f"⚠ **The machine was busy with other work** (up to {busy:.0f} % of a core "
                "outside the benchmark during a cell, `other work %`): these figures are not "
                "comparable with a run on a quiet machine, nor reliably with each other.",
            ]
        if few:
            lines += [
                "",
                "⚠ fewer requests completed than there are connections: a request takes longer "
                "than the run; raise `--duration` for a figure worth quoting.",
            ]
        lines += ["", "## Ratios (same run)", ""]
        lines += [
            "| query | planner on / off | planner on / floor | planner off / floor |",
            "|---|--:|--:|--:|",
        ]
        for query in dict.fromkeys(c.query for c in run.cells):

            def rps(config: str, query: str = query) -> float | None:
                cell = cells.get((query, config))
                return cell.load.rps if cell else None

            lines.append(
                f"| {query} | {_ratio(rps('on'), rps('off'))} | {_ratio(rps('on'), rps('floor'))} "
                f"| {_ratio(rps('off'), rps('floor'))} |"
            )
        lines.append("")

    lines += [
        "## SQL statements per request, per store",
        "",
        "Counted at the wire by the proxy (bench/pgproxy.py) over the probe requests; "
        "the same `first: 10` / `first: 50` shape must cost the same.",
        "",
        "| query | " + " | ".join(CONFIGS[c].label for c in configs) + " |",
        "|---|" + "---|" * len(configs),
    ]
    for name in QUERIES:
        if all(name in run.probes[c] for c in configs):
            row = [_stores(run.probes[c][name].statements) for c in configs]
            lines.append(f"| {name} | " + " | ".join(row) + " |")
    same = {
        c: _in_stores(run.probes[c]["Q2"]) == _in_stores(run.probes[c]["Q2/10"]) for c in configs
    }
    lines += [
        "",
        "`Q2/10` vs `Q2` (first: 10 vs first: 50): "
        + ", ".join(f"{CONFIGS[c].label} {'same' if ok else 'DIFFERENT'}" for c, ok in same.items())
        + ".",
        "",
    ]

    lines += _targets(run, cells, same)
    lines += ["## Queries", ""]
    for q in QUERIES.values():
        lines.append(f"- **{q.name}** ({q.caller}; {q.description}): `{q.document}`")
    lines.append("")
    return "\n".join(lines)


def _targets(run: Run, cells: dict[tuple[str, str], Cell], same: dict[str, bool]) -> list[str]:
    """Issue 6's item 2, checked against this run (planner on is the candidate)."""
    lines = ["## Issue 6 targets (planner on)", ""]

    def rps(query: str, config: str) -> float | None:
        cell = cells.get((query, config))
        return cell.load.rps if cell else None

    def ratio_check(query: str, other: str, minimum: float, text: str) -> None:
        a, b = rps(query, "on"), rps(query, other)
        if a and b:
            lines.append(f"- {_mark(a / b >= minimum)} {text}: {a / b:.2f}× (needs ≥ {minimum:g}×)")

    ratio_check("Q2", "off", MIN_Q2_PLANNER_OVER_OFF, "Q2 planner on / planner off")
    for query in ("Q2", "Q1", "Q3"):
        ratio_check(query, "floor", MIN_PLANNER_OVER_FLOOR, f"{query} planner on / floor")
    on_cells = [c for c in run.cells if c.config == "on"]
    if on_cells:
        worst = max(on_cells, key=lambda c: c.load.p99_ms / c.load.p50_ms if c.load.p50_ms else 0)
        tail = worst.load.p99_ms / worst.load.p50_ms if worst.load.p50_ms else 0.0
        lines.append(
            f"- {_mark(tail <= MAX_P99_OVER_P50)} p99 ≤ 2 × p50 at {run.settings['connections']} "
            f"connections: worst {tail:.2f}× ({worst.query})"
        )
        peak = max(c.peak_rss_mib for c in on_cells)
        lines.append(
            f"- {_mark(peak <= MAX_RSS_MIB)} peak RSS under load ≤ 150 MiB: {peak:.0f} MiB"
        )
    if "on" in same:
        lines.append(f"- {_mark(same['on'])} statements per request the same for first: 10 and 50")
    lines.append("")
    return lines
