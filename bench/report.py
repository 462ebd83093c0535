"""The Markdown report of one run: machine, results per cell, ratios, statements, targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.peer import NAME as PEER
from bench.queries import QUERIES
from bench.servers import CONFIGS

if TYPE_CHECKING:
    from bench.hostile import HostileResult, Latency, StressResult
    from bench.run import Cell, Probe, Run

# Issue 6, "What it must show", item 2.
MIN_Q2_PLANNER_OVER_OFF = 10.0
MIN_PLANNER_OVER_FLOOR = 0.7
MAX_P99_OVER_P50 = 2.0
MAX_RSS_MIB = 150.0
# Other work on the machine above this (% of one core) makes a run's figures suspect.
MAX_FOREIGN_CPU_PCT = 10.0
# Issue "safe to expose": the probe's p99 under attack within this many times its idle p99.
MAX_PROBE_P99_UNDER_ATTACK = 5.0
# Against the peer, PostGraphile (reported, never asserted): planner on's req/s at least this
# many times PostGraphile's on every query, and its peak RSS below PostGraphile's.
MIN_PLANNER_OVER_PEER = 1.5


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
        *([f"| PostGraphile | {m['peer']} |"] if "peer" in m else []),
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
        if any(c.config == PEER for c in run.cells):
            lines += _against_peer(run, cells)

    if run.probes:
        lines += _statements(run, configs, cells)
    if run.hostile is not None:
        lines += _hostile(run.hostile)
    if run.stress is not None:
        lines += _stress(run.stress)
    lines += ["## Queries", ""]
    for q in QUERIES.values():
        lines.append(f"- **{q.name}** ({q.caller}; {q.description}): `{q.document}`")
        if PEER in run.probes:
            lines.append(f"  - PostGraphile: `{q.peer}`")
    lines.append("")
    return "\n".join(lines)


def _against_peer(run: Run, cells: dict[tuple[str, str], Cell]) -> list[str]:
    """Planner on next to PostGraphile, per query, and the targets against it (reported only)."""
    lines = [
        "## Planner on / PostGraphile (same run)",
        "",
        "PostGraphile v4 over the same database (bench/postgraphile/, one Node.js process): "
        "its documents select the same data, with raw money columns instead of `formatted` "
        "(see Queries); each compiles to one SQL statement (see the statements below).",
        "",
        "| query | req/s on / PostGraphile | p50 on / PostGraphile | p99 on / PostGraphile "
        "| peak RSS MiB on / PostGraphile | CPU ms/request on / PostGraphile |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    pairs = []
    for query in dict.fromkeys(c.query for c in run.cells):
        on, them = cells.get((query, "on")), cells.get((query, PEER))
        if them is None:
            continue
        if on is None:
            lines.append(f"| {query} | – | – | – | – | – |")
            continue
        pairs.append((query, on, them))
        lines.append(
            f"| {query} | {_ratio(on.load.rps, them.load.rps)} "
            f"| {_ratio(on.load.p50_ms, them.load.p50_ms)} "
            f"| {_ratio(on.load.p99_ms, them.load.p99_ms)} "
            f"| {on.peak_rss_mib:.0f} / {them.peak_rss_mib:.0f} "
            f"| {on.cpu_ms_per_request:.2f} / {them.cpu_ms_per_request:.2f} |"
        )
    lines += ["", "Targets against PostGraphile (planner on; reported, not asserted):", ""]
    if not pairs:
        return [*lines, "- planner on was not measured in this run", ""]
    for query, on, them in pairs:
        ratio = on.load.rps / them.load.rps if them.load.rps else 0.0
        lines.append(
            f"- {_mark(ratio >= MIN_PLANNER_OVER_PEER)} {query} ≥ {MIN_PLANNER_OVER_PEER:g}× "
            f"PostGraphile's req/s: {ratio:.2f}× ({on.load.rps:,.1f} / {them.load.rps:,.1f})"
        )
    for query, on, them in pairs:
        tail = on.load.p99_ms / on.load.p50_ms if on.load.p50_ms else 0.0
        theirs = them.load.p99_ms / them.load.p50_ms if them.load.p50_ms else 0.0
        lines.append(
            f"- {_mark(tail <= MAX_P99_OVER_P50)} {query} p99 ≤ 2 × p50: {tail:.2f}× "
            f"(PostGraphile {theirs:.2f}×)"
        )
    ours = max(on.peak_rss_mib for _, on, _ in pairs)
    theirs_rss = max(them.peak_rss_mib for _, _, them in pairs)
    lines += [
        f"- {_mark(ours < theirs_rss)} peak RSS below PostGraphile's: {ours:.0f} MiB "
        f"vs {theirs_rss:.0f} MiB (the Node.js process)",
        "",
    ]
    return lines


def _statements(run: Run, configs: list[str], cells: dict[tuple[str, str], Cell]) -> list[str]:
    """Statements per request per store, and issue 6's targets."""
    lines = [
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
    return lines


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


# --- hostile load (bench/hostile.py) -------------------------------------------------------------


def _counts(counts: dict[str, int]) -> str:
    """`200: 1,234 · 413: 5`, most frequent first; – for none."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return " · ".join(f"{k}: {v:,}" for k, v in ordered) or "–"


def _is_5xx_bug(status: str) -> bool:
    """A 5xx other than 503 (load shedding, an unavailable dependency: both by design)."""
    return status.isdigit() and int(status) >= 500 and status != "503"


def _bad(statuses: dict[str, int], codes: dict[str, int]) -> int:
    """Answers the issue counts as bugs: INTERNAL_SERVER_ERROR, and 5xx other than 503."""
    return codes.get("INTERNAL_SERVER_ERROR", 0) + sum(
        n for status, n in statuses.items() if _is_5xx_bug(status)
    )


def _probe_row(label: str, probe: Latency, idle_p99: float, *extra: str) -> str:
    errors = {k: v for k, v in probe.statuses.items() if k != "200"}
    codes = {k: v for k, v in probe.codes.items() if k != "OK"}
    problems = _counts({**errors, **codes}) + (
        f" · different answer: {probe.different}" if probe.different else ""
    )
    return (
        f"| {label} | {probe.requests:,} | {probe.p50_ms:.2f} | {probe.p99_ms:.2f} "
        f"| {probe.max_ms:.2f} | {_ratio(probe.p99_ms, idle_p99)} | {problems} | "
        + " | ".join(extra)
        + " |"
    )


def _hostile(result: HostileResult) -> list[str]:
    """The probe under attack: latencies per phase, the target, what the attackers got."""
    lines = [
        "## Probe under hostile load",
        "",
        f"Probe: {result.probe_query} ({QUERIES[result.probe_query].description}), "
        f"sent by one client in the runner, one at a time with {result.probe_pause_ms:g} ms "
        f"between probes, {result.duration:g} s per phase. Attack: 3 client processes "
        "(`bench/clients.py`), each sending the requests below one after another, each as "
        f"soon as the last one is answered, from {result.warmup:g} s before the probe starts; "
        "**repeated**: the same documents each time, **distinct**: each made new by a "
        "trailing `# comment` (the document cache cannot help). One server worker, the "
        "project's defaults. Latencies include the client's own time.",
        "",
        "| phase | probes | p50 ms | p99 ms | max ms | p99 / idle p99 | probe errors "
        "| attacker requests | server CPU % of a core | VmRSS before → after MiB "
        "| peak RSS MiB | other work % |",
        "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|",
        _probe_row("idle", result.idle, result.idle.p99_ms, "–", "–", "–", "–", "–"),
    ]
    for phase in result.phases:
        sent = sum(t["requests"] for t in phase.attackers.values())
        lines.append(
            _probe_row(
                f"under attack, {phase.mode}",
                phase.probe,
                result.idle.p99_ms,
                f"{sent:,} ({sent / phase.seconds:,.0f}/s)",
                f"{phase.server_cpu_pct:.0f}",
                f"{phase.rss_before_mib:.0f} → {phase.rss_after_mib:.0f}",
                f"{phase.peak_rss_mib:.0f}",
                f"{phase.foreign_cpu_pct:.0f}",
            )
        )
    lines.append(
        _probe_row("idle again", result.idle_after, result.idle.p99_ms, "–", "–", "–", "–", "–")
    )
    lines += ["", "Against the issue:", ""]
    for phase in result.phases:
        ratio = phase.probe.p99_ms / result.idle.p99_ms if result.idle.p99_ms else 0.0
        lines.append(
            f"- {_mark(ratio <= MAX_PROBE_P99_UNDER_ATTACK)} probe p99 under attack "
            f"({phase.mode}) within {MAX_PROBE_P99_UNDER_ATTACK:g}× its idle p99: {ratio:.2f}× "
            f"({phase.probe.p99_ms:.2f} ms / {result.idle.p99_ms:.2f} ms)"
        )
    bad = sum(_bad(p.probe.statuses, p.probe.codes) for p in result.phases)
    bad += sum(_bad(t["statuses"], t["codes"]) for p in result.phases for t in p.attackers.values())
    bad_server = sum(_bad(p.server_statuses, p.server_codes) for p in result.phases)
    if result.phases:
        first, last = result.phases[0], result.phases[-1]
        lines.append(
            f"- The server's VmRSS: {first.rss_before_mib:.0f} MiB before the attacks, "
            f"{last.rss_after_mib:.0f} MiB after them "
            f"({last.rss_after_mib - first.rss_before_mib:+.0f} MiB; no target, a figure)"
        )
    lines += [
        f"- {_mark(bad == 0)} no INTERNAL_SERVER_ERROR and no 5xx but 503, as the clients saw "
        f"them (probe and attackers): {bad}",
        f"- {_mark(bad_server == 0)} the same, as the server counted them (`/metrics`): "
        f"{bad_server}",
        f"- {_mark(result.alive)} the server answered `/health` at the end; its peak RSS "
        f"(VmHWM) {result.vm_hwm_start_mib:.0f} MiB once started, {result.vm_hwm_mib:.0f} MiB "
        "at the end",
        "",
        "### What the attackers got",
        "",
        "| request | body bytes | phase | requests | by HTTP status | by GraphQL code "
        "| mean ms | max ms |",
        "|---|--:|---|--:|---|---|--:|--:|",
    ]
    for item in result.catalog:
        for phase in result.phases:
            t = phase.attackers.get(item["name"])
            if t is None:
                continue
            mean = t["total_ms"] / t["requests"] if t["requests"] else 0.0
            lines.append(
                f"| {item['name']} | {item['bytes']:,} | {phase.mode} | {t['requests']:,} "
                f"| {_counts(t['statuses'])} | {_counts(t['codes'])} | {mean:.1f} "
                f"| {t['max_ms']:.1f} |"
            )
    lines += [
        "",
        "`reset`: the connection dropped before an answer; `timeout`: no answer within 30 s; "
        "`OK`: data without errors.",
        "",
    ]
    lines += [f"- **{item['name']}**: {item['description']}" for item in result.catalog]
    lines += [
        "",
        "### The server's own count (`/metrics`), per phase",
        "",
        "| phase | /graphql answers by status | refused at the edge, by reason "
        "| GraphQL errors by code |",
        "|---|---|---|---|",
    ]
    for phase in result.phases:
        lines.append(
            f"| {phase.mode} | {_counts(phase.server_statuses)} "
            f"| {_counts(phase.server_refusals)} | {_counts(phase.server_codes)} |"
        )
    lines += [
        "",
        "### A 300 MiB body, alone",
        "",
        "Sent from the runner before the attacks, streamed from one reused buffer; VmRSS of "
        "the server process from /proc/<pid>/status, the peak sampled every 20 ms.",
        "",
        "| body | answer | ms | VmRSS before MiB | VmRSS after MiB | peak RSS MiB |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for huge in result.huge:
        codes = f" ({', '.join(huge.codes)})" if huge.codes else ""
        lines.append(
            f"| {huge.name} | {huge.outcome}{codes} | {huge.ms:,.0f} | {huge.rss_before_mib:.0f} "
            f"| {huge.rss_after_mib:.0f} | {huge.peak_rss_mib:.0f} |"
        )
    lines += ["", *_server_log(result.log_lines, result.log)]
    return lines


def _server_log(count: int, shown: list[str]) -> list[str]:
    if not count:
        return ["The server logged nothing at LOG_LEVEL=WARNING.", ""]
    return [
        f"The server logged {count} lines at LOG_LEVEL=WARNING"
        + (f" (the first {len(shown)}):" if len(shown) < count else ":"),
        "",
        "```",
        *shown,
        "```",
        "",
    ]


def _stress(result: StressResult) -> list[str]:
    """200 connections at the project's defaults: answers by status and code, latency."""
    defaults = ", ".join(f"{k} {v}" for k, v in result.defaults.items())
    lines = [
        f"## {result.connections} connections at the project's defaults",
        "",
        f"Python load generator (`bench/clients.py`; wrk sees statuses, not GraphQL codes): "
        f"{result.processes} processes holding {result.connections} keep-alive connections "
        "in all, each connection sending "
        + " and ".join(result.queries)
        + " in turn, the next as soon as the last is answered, for "
        f"{result.seconds:.1f} s, on a fresh server (one worker; no setting inherited from "
        f"the runner: {defaults}). Latencies include the clients' own time.",
        "",
        "| query | answers | req/s | p50 ms | p99 ms | max ms | by HTTP status "
        "| by GraphQL code | INTERNAL_SERVER_ERROR | differs from the idle answer |",
        "|---|--:|--:|--:|--:|--:|---|---|--:|--:|",
    ]
    for name, q in [*result.queries.items(), ("all", result.overall)]:
        lines.append(
            f"| {name} | {q.requests:,} | {q.requests / result.seconds:,.1f} | {q.p50_ms:.1f} "
            f"| {q.p99_ms:.1f} | {q.max_ms:.1f} | {_counts(q.statuses)} | {_counts(q.codes)} "
            f"| {q.codes.get('INTERNAL_SERVER_ERROR', 0)} | {q.different} |"
        )
    overall = result.overall
    bad = _bad(overall.statuses, overall.codes)
    bad_server = _bad(result.server_statuses, result.server_codes)
    shed = overall.statuses.get("503", 0)
    lines += [
        "",
        f"- New PostgreSQL sessions during the run: **{result.sessions_opened}** "
        "(`pg_stat_database.sessions`; the pools start empty, so this includes filling them); "
        f"at most {result.peak_backends} at once (`pg_stat_activity`, sampled every 0.25 s); "
        "pool connections checked out at most (`/metrics`, sampled): "
        + (", ".join(f"{k} {v}" for k, v in result.peak_checked_out.items()) or "–")
        + (
            f" — the {result.pool_stores} stores share one pool here (one DATABASE_URL), "
            "so each gauge shows that pool."
            if result.pool_stores > 1
            else "."
        ),
        f"- Server: {result.server_cpu_pct:.0f} % of a core, peak RSS "
        f"{result.peak_rss_mib:.0f} MiB; other work on the machine: "
        f"{result.foreign_cpu_pct:.0f} % of a core.",
        f"- The server's own count (`/metrics`): /graphql answers "
        f"{_counts(result.server_statuses)}; GraphQL errors {_counts(result.server_codes)}; "
        "answered within (its own timing, without the clients'): "
        + (
            ", ".join(
                f"{float(le) * 1000:g} ms {share * 100:.1f} %"
                for le, share in result.server_within.items()
            )
            or "–"
        )
        + ".",
        f"- {_mark(bad == 0)} no INTERNAL_SERVER_ERROR and no 5xx but 503: {bad} "
        f"(server's count: {bad_server}); shed with 503: {shed}",
        f"- {_mark(overall.different == 0)} every 200 answer equal to the idle server's: "
        f"{overall.different} differ",
        f"- {_mark(result.alive)} the server answered `/health` at the end",
        "",
        *_server_log(result.log_lines, result.log),
    ]
    return lines
