"""Write BENCHMARKS.md (to stdout) from a bench/run-all output directory.

usage: python3 bench/report.py OUT_DIR > BENCHMARKS.md

Reads OUT_DIR/results.jsonl (one JSON line per run, longrun's and the peers'), meta.json (the
machine) and commands.txt (every command as run). Every figure in the tables is the median
over the rounds, with the range when there was more than one; the ratios and the issue's
targets are computed from those medians. bench/analysis.md, when present, is appended.
"""
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict

LONGRUN = ["longrun-sqlite", "longrun-postgres", "longrun-postgres-http"]
PG_PEERS = ["graphile-worker", "pg-boss", "apalis"]
PEERS = ["graphile-worker", "pg-boss", "bullmq", "celery", "apalis"]
HERE = os.path.dirname(os.path.abspath(__file__))


def load(out):
    runs, failed = [], []
    for line in open(os.path.join(out, "results.jsonl")):
        line = line.strip()
        if line:
            r = json.loads(line)
            (failed if r.get("error") else runs).append(r)
    meta = json.load(open(os.path.join(out, "meta.json")))
    commands_path = os.path.join(out, "commands.txt")
    commands = [c.strip() for c in open(commands_path)] if os.path.exists(commands_path) else []
    return runs, failed, meta, commands


class Stat:
    """The values of one metric over the rounds."""

    def __init__(self, values):
        self.values = [v for v in values if v is not None]

    @property
    def median(self):
        return statistics.median(self.values) if self.values else None

    def fmt(self, digits):
        if not self.values:
            return "-"
        text = f"{self.median:,.{digits}f}"
        if len(self.values) > 1:
            text += f" [{min(self.values):,.{digits}f}–{max(self.values):,.{digits}f}]"
        return text


# What a `status` run with authentication on is called in the tables.
WITH_KEY = " (API key)"
# What a `submit` run answered with ids only is called in the tables.
ID_ONLY = " (id only)"


def group(runs):
    """(system, workload[, n_stored]) -> list of runs; a `status` run with an API key, and a
    `submit` run answered with ids only, count as systems of their own."""
    groups = defaultdict(list)
    for r in runs:
        system = r["system"] + (WITH_KEY if r.get("auth") == "key" else "")
        system += ID_ONLY if r.get("answer") == "id" else ""
        key = (system, r["workload"], r.get("n_stored"))
        groups[key].append(r)
    return groups


def stat(groups, system, workload, field, n_stored=None):
    return Stat([r.get(field) for r in groups.get((system, workload, n_stored), [])])


def median(groups, system, workload, field, n_stored=None):
    return stat(groups, system, workload, field, n_stored).median


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def fmt(x, digits=2, suffix=""):
    return "-" if x is None else f"{x:,.{digits}f}{suffix}"


def systems_in(groups, workload, order):
    present = {s for (s, w, _) in groups if w == workload}
    return [s for s in order if s in present] + sorted(present - set(order))


def machine(meta):
    note = meta.get("note")
    out = []
    if note:
        out += [f"> **Note.** {note}", ""]
    out += [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPUs (nproc) | {meta.get('nproc')} ({meta.get('cpu') or '?'}) |",
        f"| memory | {meta.get('memory_gib')} GiB |",
        f"| kernel | Linux {meta.get('kernel')} |",
        f"| PostgreSQL | {meta.get('postgres')} ({meta.get('postgres_settings')}) |",
        f"| Redis | {meta.get('redis') or '?'} |",
        f"| rustc | {meta.get('rustc')} |",
        f"| longrun | commit {meta.get('longrun_commit')}"
        f"{' with uncommitted changes' if meta.get('longrun_dirty') else ''} |",
        f"| load average when the run started | {meta.get('loadavg_at_start')} |",
        "",
        "PostgreSQL, Redis, the drivers, the workers and the servers all share these CPUs.",
        "",
    ]
    return out


# The yardstick's sizes; runs of other sizes (smoke runs) are flagged.
YARDSTICK_N = {"throughput": 20000, "latency": 2000}


def size_warning(groups):
    odd = sorted({f"{s} {w} n={r['n']}" for (s, w, _), runs in groups.items()
                  for r in runs if w in YARDSTICK_N and r.get("n") != YARDSTICK_N[w]})
    if not odd:
        return []
    return ["> **Not comparable:** these runs used other sizes than the yardstick's "
            f"(throughput N=20000, latency M=2000): {', '.join(odd)}.", ""]


def job_table(groups):
    out = size_warning(groups) + [
        "### `throughput` and `latency` (WORKLOADS.md v1)",
        "",
        "| system | version | runs | enqueue jobs/s | drain jobs/s | throughput wall s "
        "| latency p50 ms | p95 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    systems = systems_in(groups, "throughput", LONGRUN + PEERS)
    systems += [s for s in systems_in(groups, "latency", LONGRUN + PEERS) if s not in systems]
    for s in systems:
        t = groups.get((s, "throughput", None), [])
        l = groups.get((s, "latency", None), [])
        version = (t or l)[0].get("version")
        out.append(
            f"| {s} | {version} | {len(t)}/{len(l)} "
            f"| {stat(groups, s, 'throughput', 'enqueue_jobs_per_s').fmt(1)} "
            f"| {stat(groups, s, 'throughput', 'drain_jobs_per_s').fmt(1)} "
            f"| {stat(groups, s, 'throughput', 'wall_s').fmt(2)} "
            f"| {stat(groups, s, 'latency', 'p50_ms').fmt(2)} "
            f"| {stat(groups, s, 'latency', 'p95_ms').fmt(2)} "
            f"| {stat(groups, s, 'latency', 'p99_ms').fmt(2)} |"
        )
    out += ["", "`runs` = throughput runs / latency runs. Medians; [min–max] over the rounds.", ""]
    return out + recorded_drain_note(groups)


def recorded_drain_note(groups):
    """longrun's drains as its store recorded them, beside the driver's 50 ms polls."""
    seen = []
    for s in systems_in(groups, "throughput", LONGRUN):
        recorded = stat(groups, s, "throughput", "drain_recorded_s")
        if recorded.values:
            seen.append(f"{s} {recorded.fmt(3)} s")
    if not seen:
        return []
    return [
        "The drain ends when the driver's poll, every 50 ms (WORKLOADS.md), sees no job left: "
        "a drain of a third of a second reads one poll later or sooner, about 15 % of its "
        "rate, as it ends just before or after a poll. The drains as longrun's store recorded "
        "them (from the start command to the last `completed_at`): "
        + "; ".join(seen) + ".",
        "",
    ]


def submit_table(groups):
    systems = systems_in(groups, "submit", LONGRUN)
    if not systems:
        return []
    out = [
        "### `submit` (one operation per HTTP request, concurrent clients, no worker)",
        "",
        "| system | runs | clients | n | accepted operations/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in systems:
        runs = groups[(s, "submit", None)]
        out.append(
            f"| {s} | {len(runs)} | {runs[0].get('clients')} | {runs[0].get('n')} "
            f"| {stat(groups, s, 'submit', 'enqueue_jobs_per_s').fmt(1)} "
            f"| {stat(groups, s, 'submit', 'p50_ms').fmt(2)} "
            f"| {stat(groups, s, 'submit', 'p99_ms').fmt(2)} |"
        )
    out.append("")
    if any(s.endswith(ID_ONLY) for s in systems):
        out += [f"`{ID_ONLY.strip()}`: each submit answered with the new operation's id only "
                "(`Prefer: return=minimal`); the other rows read the operation back in full.", ""]
    return out


def status_sizes(groups, system):
    return sorted(n for (s, w, n) in groups if s == system and w == "status")


def status_table(groups):
    systems = systems_in(groups, "status", LONGRUN)
    if not systems:
        return []
    out = [
        "### `status` (GET /v1/operations/{random id}, HTTP/1.1 keep-alive clients)",
        "",
        "| system | stored operations | runs | clients | measured s | requests/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in systems:
        for n in status_sizes(groups, s):
            runs = groups[(s, "status", n)]
            out.append(
                f"| {s} | {n:,} | {len(runs)} | {runs[0].get('clients')} | {runs[0].get('duration_s')} "
                f"| {stat(groups, s, 'status', 'requests_per_s', n).fmt(1)} "
                f"| {stat(groups, s, 'status', 'p50_ms', n).fmt(3)} "
                f"| {stat(groups, s, 'status', 'p95_ms', n).fmt(3)} "
                f"| {stat(groups, s, 'status', 'p99_ms', n).fmt(3)} |"
            )
    out.append("")
    if any(s.endswith(WITH_KEY) for s in systems):
        out += [f"`{WITH_KEY.strip()}`: the server with authentication on, every request carrying a "
                "submitter key (`--api-key`); the other rows run open (no keys).", ""]
    for s in systems:
        sizes = status_sizes(groups, s)
        if len(sizes) >= 2:
            small, big = sizes[0], sizes[-1]
            rps = ratio(median(groups, s, "status", "requests_per_s", big),
                        median(groups, s, "status", "requests_per_s", small))
            p99 = ratio(median(groups, s, "status", "p99_ms", big),
                        median(groups, s, "status", "p99_ms", small))
            out.append(
                f"- {s}, {small:,} → {big:,} stored: requests/s {fmt_change(rps)}, p99 {fmt_change(p99)}."
            )
    return out + [""]


def fmt_change(r):
    return "-" if r is None else f"{(r - 1) * 100:+.1f} %"


def limit_table(runs):
    refs = [r for r in runs if r["system"] == "postgres-limit"]
    if not refs:
        return []
    out = [
        "### PostgreSQL ceiling (`pg-limit.sh`, pgbench, 8 clients)",
        "",
        "| workload | rows/s | tx/s | avg tx latency ms |",
        "|---|---:|---:|---:|",
    ]
    for r in refs:
        out.append(
            f"| {r['workload']} | {fmt(r.get('enqueue_jobs_per_s'), 1)} | {fmt(r.get('tps'), 1)} "
            f"| {fmt(r.get('latency_avg_ms'), 3)} |"
        )
    return out + [""]


def ratios(groups):
    peers = [p for p in PEERS if (p, "throughput", None) in groups or (p, "latency", None) in groups]
    mine = [s for s in LONGRUN if (s, "throughput", None) in groups or (s, "latency", None) in groups]
    if not peers or not mine:
        return []
    out = [
        "## Ratios longrun / peer (medians)",
        "",
        "Drain rate: above 1 means longrun drains faster. Latency: below 1 means longrun starts "
        "jobs sooner.",
        "",
    ]
    for title, workload, field, digits in [
        ("`throughput` drain jobs/s", "throughput", "drain_jobs_per_s", 2),
        ("`throughput` enqueue jobs/s", "throughput", "enqueue_jobs_per_s", 2),
        ("`latency` p50", "latency", "p50_ms", 2),
        ("`latency` p99", "latency", "p99_ms", 2),
    ]:
        out += [f"**{title}**", "", "| longrun \\ peer | " + " | ".join(peers) + " |",
                "|---|" + "---:|" * len(peers)]
        for s in mine:
            cells = [fmt(ratio(median(groups, s, workload, field), median(groups, p, workload, field)),
                         digits, "×") for p in peers]
            out.append(f"| {s} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def targets(groups):
    def m(system, workload, field, n=None):
        return median(groups, system, workload, field, n)

    pg_peer_drains = {p: m(p, "throughput", "drain_jobs_per_s") for p in PG_PEERS}
    pg_peer_drains = {p: v for p, v in pg_peer_drains.items() if v is not None}
    fastest_pg = max(pg_peer_drains.items(), key=lambda kv: kv[1]) if pg_peer_drains else None
    bullmq = m("bullmq", "throughput", "drain_jobs_per_s")
    rows = []

    def verdict(value, goal, higher_is_better=True):
        if value is None or goal is None:
            return "not measured"
        ok = value >= goal if higher_is_better else value <= goal
        how = value / goal if goal else math.inf
        return f"**met** ({how:.2f}× the goal)" if ok else f"**missed** ({how:.2f}× the goal)"

    for system in ["longrun-postgres", "longrun-postgres-http"]:
        drain = m(system, "throughput", "drain_jobs_per_s")
        if fastest_pg:
            goal = 3 * fastest_pg[1]
            rows.append((f"{system} drain ≥ 3× fastest PostgreSQL peer ({fastest_pg[0]}, "
                         f"{fastest_pg[1]:,.1f}/s) = {goal:,.0f}/s", fmt(drain, 1, "/s"),
                         verdict(drain, goal)))
        if bullmq:
            goal = 1.5 * bullmq
            rows.append((f"{system} drain ≥ 1.5× BullMQ ({bullmq:,.1f}/s) = {goal:,.0f}/s",
                         fmt(drain, 1, "/s"), verdict(drain, goal)))
    drain = m("longrun-sqlite", "throughput", "drain_jobs_per_s")
    if fastest_pg:
        goal = 6 * fastest_pg[1]
        rows.append((f"longrun-sqlite drain ≥ 6× fastest PostgreSQL peer = {goal:,.0f}/s",
                     fmt(drain, 1, "/s"), verdict(drain, goal)))

    for q in ["p50_ms", "p99_ms"]:
        peer_vals = {p: m(p, "latency", q) for p in PEERS}
        peer_vals = {p: v for p, v in peer_vals.items() if v is not None}
        if not peer_vals:
            continue
        best = min(peer_vals.items(), key=lambda kv: kv[1])
        for system in LONGRUN:
            value = m(system, "latency", q)
            if value is None:
                continue
            rows.append((f"{system} latency {q[:3]} ≤ best peer's ({best[0]}, {best[1]:.2f} ms)",
                         fmt(value, 2, " ms"), verdict(value, best[1], higher_is_better=False)))

    for system in [s + key for key in ["", WITH_KEY] for s in ["longrun-sqlite", "longrun-postgres"]]:
        sizes = status_sizes(groups, system)
        for n in sizes:
            rps, p99 = m(system, "status", "requests_per_s", n), m(system, "status", "p99_ms", n)
            rows.append((f"{system} status at {n:,} stored ≥ 30,000 requests/s",
                         fmt(rps, 1, "/s"), verdict(rps, 30000)))
            rows.append((f"{system} status at {n:,} stored p99 < 5 ms", fmt(p99, 3, " ms"),
                         verdict(p99, 5, higher_is_better=False)))
        if len(sizes) >= 2:
            small, big = sizes[0], sizes[-1]
            r_rps = ratio(m(system, "status", "requests_per_s", big), m(system, "status", "requests_per_s", small))
            r_p99 = ratio(m(system, "status", "p99_ms", big), m(system, "status", "p99_ms", small))
            rows.append((f"{system} status requests/s at {big:,} stored at most 10 % below {small:,}",
                         fmt_change(r_rps), verdict(r_rps, 0.9)))
            rows.append((f"{system} status p99 at {big:,} stored at most 10 % above {small:,}",
                         fmt_change(r_p99), verdict(r_p99, 1.1, higher_is_better=False)))

    for system in ["longrun-postgres", "longrun-sqlite"]:
        runs = groups.get((system, "submit", None), [])
        if runs:
            value = m(system, "submit", "enqueue_jobs_per_s")
            label = "(the target)" if system == "longrun-postgres" else "(for reference; the target is PostgreSQL's)"
            rows.append((f"{system} submit ≥ 10,000 accepted/s, {runs[0].get('clients')} clients {label}",
                         fmt(value, 1, "/s"), verdict(value, 10000)))

    out = ["## The issue's targets (same-run medians)", "", "| target | measured | verdict |",
           "|---|---:|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out + [""]


def commands_section(meta, commands):
    out = ["## Commands", "", "The whole run:", "", "```sh", meta.get("invocation", "bench/run-all"), "```", "",
           "Each run, as executed (every round ran the same list; paths shortened):", "", "```sh"]
    seen = []
    for c in commands:
        c = re.sub(r"\S*/target/release/longrun-bench", "target/release/longrun-bench", c)
        c = re.sub(r"\S*/shared/bench/", "../shared/bench/", c)
        if c not in seen:
            seen.append(c)
    out += seen + ["```", ""]
    return out


def failures(failed):
    if not failed:
        return []
    out = ["## Failed runs", ""]
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    out += [f"- {r['system']} {r['workload']}: {ansi.sub('', r['error'])}" for r in failed]
    return out + [""]


def main(out_dir):
    runs, failed, meta, commands = load(out_dir)
    groups = group(runs)
    rounds = meta.get("rounds")
    doc = [
        "# Benchmarks",
        "",
        f"Generated by `bench/run-all` ({meta.get('date_utc')}, {rounds} round(s), every system run "
        "once per round, rounds interleaved) and `bench/report.py`; the workloads are those of "
        "`../shared/bench/WORKLOADS.md` plus longrun's `submit` and `status` "
        "(see [bench/README.md](bench/README.md)). Only figures from the same run are compared.",
        "",
    ]
    doc += machine(meta)
    doc += ["## Results", ""]
    doc += job_table(groups) + submit_table(groups) + status_table(groups) + limit_table(runs)
    doc += ratios(groups) + targets(groups) + failures(failed) + commands_section(meta, commands)
    analysis = os.path.join(HERE, "analysis.md")
    if os.path.exists(analysis):
        doc += [open(analysis).read().rstrip(), ""]
    print("\n".join(doc))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
