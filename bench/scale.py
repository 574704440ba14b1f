"""Scaling benchmark: does a flow cost more with more people, or with more history?

Per database (SQLite with one worker, PostgreSQL with `--workers`), in one run, on one database
that grows step by step (the server is stopped while rows are added, and restarted for each
measurement so each worker's peak RSS belongs to that configuration):

1. People: `--people-steps` (default 1, 10,000, 100,000) people with an active roaming ECDSA
   P-256 credential besides the flow's own `--flow-people`, added by bulk inserts.
2. History: with the largest population, `--history-steps` (default 100,000 and 1,000,000)
   historical signing requests (signed with their signature, run out unused, expired,
   cancelled, locked), with their delivered OTP e-mails, signing notices and audit events,
   spread over a year and over every person, made by INSERT ... SELECT in the database.
   The last people step is the 0-history baseline.
3. Per configuration: the same fixed number of complete flows (request -> OTP e-mail -> sign,
   bench/harness/flows.py's FlowDriver) in a closed loop, after an uncounted warm-up, until their
   signing notices have arrived too: flows/s, p50/p99, the server's (and PostgreSQL's) CPU per
   flow from /proc, and each server process's peak RSS (VmHWM). Ratios against the first
   configuration (people) and the 0-history one (history).
4. The plans of the hot path's statements with the biggest tables: on PostgreSQL the plans the
   real server used (auto_explain, generic plans of prepared statements included), on SQLite
   `EXPLAIN QUERY PLAN` of the statements the real server sent (recorded by a SQLAlchemy event
   hook loaded into the server processes through `sitecustomize`); full scans are listed.

What the bulk rows hold (see bench/README.md): every filler person has a real P-256 key, sealed
under its own credential id, and a real certificate from the database's CA, made once per run
and shared by both databases (same master key, same CA rows). Historical rows carry random
document hashes, OTP MACs and signature bytes of real lengths; their audit events have the
right chains and sequence numbers but placeholder MACs (see HistoryBuilder).

    .venv/bin/python bench/scale.py [--db sqlite|postgresql|both] [--flows 300]
        [--people-steps 1,10000,100000] [--history-steps 100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from sqlalchemy import insert, select  # noqa: E402

from app.clock import SystemClock  # noqa: E402
from app.models.ca import CertificateAuthority  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.services.mail.sink import MailSink  # noqa: E402
from app.settings import Settings, write_master_key  # noqa: E402
from bench.harness.clients import Lanes  # noqa: E402
from bench.harness.fixtures import (  # noqa: E402
    SQLITE_FILE,
    open_sink_and_database,
    seed,
    start_server,
)
from bench.harness.flows import FlowDriver, IdlePeople, Mailbox  # noqa: E402
from bench.harness.load import fixed_closed_loop, settle_notices  # noqa: E402
from bench.harness.measure import (  # noqa: E402
    CpuMeter,
    PhaseStats,
    percentile,
    postmaster_pid,
    server_memory,
)
from bench.harness.report import fmt, machine, markdown_table, plain_table  # noqa: E402
from bench.scale_history import HistoryBuilder  # noqa: E402
from bench.scale_people import (  # noqa: E402
    Filler,
    add_people,
    database_bytes,
    make_filler,
    settle,
    table_counts,
)
from bench.scale_plans import (  # noqa: E402
    BIG_TABLES,
    ROWS_READ,
    TRACE_HOOK,
    full_scans,
    postgres_plans,
    sqlite_plans,
)
from tests.factories import Person  # noqa: E402
from tests.harness import Server  # noqa: E402
from tests.pg_server import TemporaryPostgres  # noqa: E402


@dataclass
class Measurement:
    database: str
    label: str
    people: int  # everyone with an active roaming credential
    history: int  # historical signing requests added
    stats: PhaseStats
    wall: float = 0.0
    memory: list[tuple[str, int, int]] = field(default_factory=list)
    error: str | None = None
    role: str = "people"  # or "repeat" (the baseline measured again), "history"

    @property
    def rate(self) -> float:
        return len(self.stats.latencies_ms) / self.wall if self.wall else 0.0

    def cpu_ms(self, tree: str) -> float | None:
        share = self.stats.cpu.get(tree)
        if share is None or not self.rate:
            return None
        return share * 10 / self.rate

    @property
    def server_db_ms(self) -> float | None:
        server = self.cpu_ms("server")
        return None if server is None else server + (self.cpu_ms("database") or 0.0)


async def drive(
    server: Server,
    api_key: str,
    people: list[Person],
    mailbox: Mailbox,
    args: argparse.Namespace,
    trees: dict[str, int | None],
    measurement: Measurement,
    concurrency: int,
    flows: int,
    warmup: int,
) -> None:
    mailbox.bind(asyncio.get_running_loop())
    lanes = Lanes(server.url, api_key)
    try:
        idle = IdlePeople(people, random.Random(args.seed))
        driver = FlowDriver(lanes, mailbox, measurement.label)
        if warmup:
            warm = PhaseStats("warm-up")
            await fixed_closed_loop(driver, idle, concurrency, warmup, warm)
            if warm.errors:
                print(f"    warm-up failures: {dict(warm.failures)}", flush=True)
            await settle_notices(mailbox)
        stats = measurement.stats
        stats.window_end = float("inf")
        meter = CpuMeter(trees)
        began = time.perf_counter()
        await fixed_closed_loop(driver, idle, concurrency, flows, stats)
        # The flows' signing notices are part of their cost (the server sends OTPs first, so
        # under load notices queue): the measurement ends when the last one has arrived.
        stats.notices_behind = mailbox.notices_behind()
        stats.notices_missing = await settle_notices(mailbox)
        measurement.wall = stats.duration = time.perf_counter() - began
        stats.cpu = meter.stop()
        if stats.notices_missing:
            print(f"    {stats.notices_missing} signing notices never arrived", flush=True)
    finally:
        mailbox.unbind()
        await lanes.aclose()


def measure(
    context: DatabaseContext,
    label: str,
    args: argparse.Namespace,
    *,
    flows: int | None = None,
    concurrency: int | None = None,
    warmup: int | None = None,
) -> Measurement:
    measurement = Measurement(
        context.database, label, context.people, context.history, PhaseStats(label)
    )
    server = start_server(
        database_url=context.url,
        key_file=context.key_file,
        var_dir=context.directory,
        smtp_port=context.sink.port,
        workers=context.workers,
    )
    try:
        trees = {"server": server.process.pid, "database": context.postmaster}
        asyncio.run(
            drive(
                server,
                context.api_key,
                context.flow_people,
                context.mailbox,
                args,
                trees,
                measurement,
                concurrency or args.concurrency,
                args.flows if flows is None else flows,
                args.warmup_flows if warmup is None else warmup,
            )
        )
        measurement.memory = server_memory(server)
        if server.process.poll() is not None:
            measurement.error = f"the server exited ({server.process.returncode})"
        elif measurement.stats.server_errors:
            measurement.error = f"server errors; log tail:\n{server.tail()}"
    finally:
        server.stop()
    return measurement


def explain_phase(
    context: DatabaseContext, args: argparse.Namespace, *, force_generic: bool = False
) -> dict[str, Any]:
    """Flows on the biggest tables with the statements recorded (SQLite) or their plans logged
    by PostgreSQL itself (auto_explain), at low concurrency so each pooled connection runs each
    statement often enough to be prepared and given a generic plan. `force_generic`: every
    prepared statement (psycopg prepares from the 6th execution on a connection) gets its
    generic plan, the one PostgreSQL may settle on by itself after five custom plans: a
    statement that relies on a parameter's value (a partial index's predicate) shows here."""
    trace_dir = context.directory / "trace"
    trace_dir.mkdir(exist_ok=True)
    (trace_dir / "sitecustomize.py").write_text(TRACE_HOOK)
    database = "roamsign_test"
    pg = context.pg
    log_offset = 0
    if pg is not None:
        log_offset = pg.log_path.stat().st_size
        with context.runtime.engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as connection:
            for setting, value in (
                ("session_preload_libraries", "auto_explain"),
                ("auto_explain.log_min_duration", "0"),
                ("auto_explain.log_format", "json"),
                ("auto_explain.log_analyze", "on"),
                ("auto_explain.log_timing", "off"),
                *([("plan_cache_mode", "force_generic_plan")] if force_generic else []),
            ):
                connection.exec_driver_sql(f"ALTER DATABASE {database} SET {setting} = '{value}'")
    saved: dict[str, str | None] = {
        name: os.environ.get(name) for name in ("PYTHONPATH", "ROAMSIGN_BENCH_TRACE_DIR")
    }
    if pg is None:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(trace_dir), str(PROJECT_ROOT)])
        os.environ["ROAMSIGN_BENCH_TRACE_DIR"] = str(trace_dir)
    try:
        measurement = measure(
            context, "plans", args, flows=args.explain_flows, concurrency=2, warmup=0
        )
        if force_generic:
            measurement.label = "plans, generic forced"
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        if pg is not None:
            with context.runtime.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                connection.exec_driver_sql(f"ALTER DATABASE {database} RESET ALL")
    if pg is not None:
        with pg.log_path.open("rb") as log:
            log.seek(log_offset)
            plans = postgres_plans(log.read().decode(errors="replace"))
    else:
        assert context.sqlite_path is not None
        plans = sqlite_plans(trace_dir, context.sqlite_path)
    return {
        "title": "generic plans forced" if force_generic else None,
        "plans": plans,
        "flows": len(measurement.stats.latencies_ms),
        "failures": dict(measurement.stats.failures),
    }


@dataclass
class DatabaseContext:
    database: str
    workers: int
    url: str
    directory: Path
    key_file: Path
    sink: MailSink
    mailbox: Mailbox
    runtime: Runtime
    api_key: str
    flow_people: list[Person]
    pg: TemporaryPostgres | None
    postmaster: int | None
    sqlite_path: Path | None
    people: int = 0
    history: int = 0


@dataclass
class DatabaseResult:
    database: str
    workers: int
    measurements: list[Measurement] = field(default_factory=list)
    builds: list[str] = field(default_factory=list)
    plan_sets: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class Shared:
    """Made once per run, used by both databases."""

    key_file: Path
    ca_rows: list[dict[str, Any]] | None = None
    filler: Filler | None = None


def run_database(
    database: str, workers: int, args: argparse.Namespace, shared: Shared
) -> DatabaseResult:
    result = DatabaseResult(database, workers)
    name = f"{database}, {workers} worker{'s' if workers > 1 else ''}"
    print(f"== {name}", flush=True)
    people_steps = sorted(args.people_steps)
    history_steps = sorted(args.history_steps)
    if database == "sqlite" and args.sqlite_history_max is not None:
        history_steps = [h for h in history_steps if h <= args.sqlite_history_max]
    with (
        tempfile.TemporaryDirectory(prefix="roamsign-scale-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            directory = Path(tmp)
            mailbox, sink, url, pg = open_sink_and_database(database, directory, stack)
            sqlite_path = directory / SQLITE_FILE if pg is None else None
            settings = Settings(
                profile="production",
                database_url=url,
                master_key_file=shared.key_file,
                var_dir=directory,
                smtp_host="127.0.0.1",
                smtp_port=sink.port,
                delivery_worker=False,
            )
            runtime = Runtime.build(settings, SystemClock())
            stack.callback(runtime.close)
            if shared.ca_rows is not None:  # the first database's CA: the filler's issuer
                with runtime.engine.begin() as connection:
                    connection.execute(insert(CertificateAuthority), shared.ca_rows)
            began = time.perf_counter()
            api_key, flow_people = seed(settings, args.flow_people)
            print(
                f"  seeded the CA, the signer and {len(flow_people)} flow people in "
                f"{time.perf_counter() - began:.1f} s",
                flush=True,
            )
            if shared.ca_rows is None:
                with runtime.engine.connect() as connection:
                    shared.ca_rows = [
                        dict(row._mapping)
                        for row in connection.execute(select(CertificateAuthority.__table__))
                    ]
            if shared.filler is None:
                shared.filler = make_filler(runtime, max(people_steps))
                note = (
                    f"{max(people_steps):,} filler people (P-256 key sealed + certificate from "
                    f"the CA) made in {shared.filler.seconds:.1f} s, once for both databases"
                )
                print(f"  {note}", flush=True)
                result.builds.append(note)
            filler = shared.filler
            context = DatabaseContext(
                database,
                workers,
                url,
                directory,
                shared.key_file,
                sink,
                mailbox,
                runtime,
                api_key,
                flow_people,
                pg,
                postmaster_pid(pg) if pg else None,
                sqlite_path,
                people=len(flow_people),
            )
            inserted = 0
            for step in people_steps:
                seconds = add_people(runtime.engine, filler, inserted, step)
                seconds += settle(runtime.engine)
                note = f"people {inserted:,} -> {step:,}: inserted in {seconds:.1f} s"
                inserted = step
                context.people = len(flow_people) + step
                result.builds.append(note)
                print(f"  {note}", flush=True)
                label = f"{step:,} + {len(flow_people)} people"
                result.measurements.append(report(measure(context, label, args)))
                if step == people_steps[0] and args.repeat_baseline:
                    # The same configuration once more: the noise of this run, to read the
                    # ratios against.
                    again = report(measure(context, f"{label}, again", args))
                    again.role = "repeat"
                    result.measurements.append(again)
            builder = HistoryBuilder(runtime, flow_people, filler.cms_length)
            for step in history_steps:
                seconds = builder.add(step - builder.total)
                settled = settle(runtime.engine)
                context.history = step
                counts = table_counts(runtime.engine)
                size = database_bytes(runtime.engine, sqlite_path) / 2**20
                tables = ", ".join(f"{t} {v:.0f} s" for t, v in builder.timings.items())
                note = (
                    f"history -> {step:,} requests: inserted in {seconds:.1f} s ({tables}, "
                    f"cumulated), settled in {settled:.1f} s; rows {counts}; database "
                    f"{size:,.0f} MiB"
                )
                result.builds.append(note)
                print(f"  {note}", flush=True)
                label = f"{inserted:,} + {len(flow_people)} people, {step:,} history"
                measured = report(measure(context, label, args))
                measured.role = "history"
                result.measurements.append(measured)
            if args.explain_flows:
                passes = [False, True] if pg is not None else [False]
                for force_generic in passes:
                    plans = explain_phase(context, args, force_generic=force_generic)
                    result.plan_sets.append(plans)
                    flagged = full_scans(plans["plans"])
                    print(
                        f"  plans{' (generic forced)' if force_generic else ''}: "
                        f"{len(plans['plans'])} statements, {len(flagged)} full scans of big "
                        "tables",
                        flush=True,
                    )
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED: {result.error}", flush=True)
    return result


def report(measurement: Measurement) -> Measurement:
    stats = measurement.stats
    workers = ", ".join(
        f"{hwm / 1024:.0f}" for role, hwm, _ in measurement.memory if role == "worker"
    )
    print(
        f"  {measurement.label}: {measurement.rate:.1f} flows/s, p50 "
        f"{fmt(percentile(stats.latencies_ms, 0.5))} ms, server+db "
        f"{fmt(measurement.server_db_ms, 1)} ms CPU/flow, worker peak RSS {workers} MiB, "
        f"{stats.errors} errors",
        flush=True,
    )
    return measurement


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "n/a"
    return f"{value / base:.2f}"


COLUMNS = (
    "database",
    "configuration",
    "flows/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "server CPU ms/flow",
    "db CPU ms/flow",
    "server+db ms/flow",
    "ratio (CPU/flow)",
    "ratio (flows/s)",
    "generator %",
    "other %",
    "worker peak RSS MiB",
)


def rows_of(result: DatabaseResult) -> Iterator[list[str]]:
    name = f"{result.database}, {result.workers}w"
    people = [m for m in result.measurements if m.role == "people"]
    if not people:
        return
    people_base, history_base = people[0], people[-1]
    for m in result.measurements:
        base = history_base if m.role == "history" else people_base
        base_mark = " (base)" if m is people_base else ""
        if m is history_base and m is not people_base:
            base_mark = " (history base)"
        p50 = percentile(m.stats.latencies_ms, 0.5)
        p99 = percentile(m.stats.latencies_ms, 0.99)
        workers = " / ".join(f"{hwm / 1024:.0f}" for role, hwm, _ in m.memory if role == "worker")
        yield [
            name,
            m.label + base_mark,
            fmt(m.rate, 1),
            fmt(p50),
            fmt(p99),
            str(m.stats.errors),
            fmt(m.cpu_ms("server"), 1),
            fmt(m.cpu_ms("database"), 1),
            fmt(m.server_db_ms, 1),
            _ratio(m.server_db_ms, base.server_db_ms),
            _ratio(m.rate, base.rate),
            fmt(m.stats.cpu.get("generator")),
            fmt(m.stats.cpu.get("other")),
            workers or "n/a",
        ]


def plan_lines(result: DatabaseResult) -> Iterator[str]:
    for plan_set in result.plan_sets:
        plans = plan_set["plans"]
        how = (
            "auto_explain (analyze) in the server's own sessions"
            if result.database == "postgresql"
            else "EXPLAIN QUERY PLAN of the statements the server sent"
        )
        if plan_set["title"]:
            how += f", {plan_set['title']}"
        generic = sum(1 for plan in plans.values() if plan["generic"])
        yield (
            f"- **{result.database}**: {len(plans)} distinct statements in "
            f"{plan_set['flows']} flows at the largest size ({how}"
            + (f"; {generic} ran a generic plan" if result.database == "postgresql" else "")
            + ")"
        )
        if plan_set["failures"]:
            yield f"  - failed flows meanwhile: {plan_set['failures']}"
        flagged = full_scans(plans)
        if not flagged:
            yield "  - no full scan of a table that grows with people or history"
        for text, scan in flagged:
            yield f"  - **{scan}**: `{text[:300]}`"
        heavy = [
            (rows, text) for text, plan in plans.items() if (rows := plan["rows_read"]) > ROWS_READ
        ]
        for rows, text in sorted(heavy, reverse=True):
            yield f"  - **reads {rows:,} rows** in one execution: `{text[:300]}`"
        if result.database == "postgresql" and not heavy:
            worst = max((plan["rows_read"] for plan in plans.values()), default=0)
            yield f"  - no statement read more than {worst:,} rows in one execution"
        small = sorted(
            {
                scan
                for plan in plans.values()
                for scan in plan["scans"]
                if (scan.startswith("Seq Scan") or scan.startswith("SCAN "))
                and scan.split()[3 if scan.startswith("Seq") else 1] not in BIG_TABLES
            }
        )
        if small:
            yield "  - full scans of small tables (fixed size): " + ", ".join(
                f"`{s}`" for s in small
            )


def all_plans(result: DatabaseResult) -> Iterator[str]:
    """Every statement with the scans of its plan(s), for the record."""
    for plan_set in result.plan_sets:
        yield f"{result.database}" + (f", {plan_set['title']}" if plan_set["title"] else "") + ":"
        for text, plan in sorted(plan_set["plans"].items()):
            mark = " [generic]" if plan["generic"] else ""
            rows = f", at most {plan['rows_read']:,} rows read" if plan["rows_read"] else ""
            yield f"  {text[:160]}"
            yield f"    x{plan['count']}{mark}{rows}: " + "; ".join(sorted(plan["scans"]) or ["-"])


def parse_steps(text: str) -> list[int]:
    steps = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if any(step < 0 for step in steps):
        raise argparse.ArgumentTypeError("steps must be 0 or more")
    return steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2, help="server workers on PostgreSQL")
    parser.add_argument("--flow-people", type=int, default=40, help="people who sign in the run")
    parser.add_argument("--people-steps", type=parse_steps, default=[1, 10_000, 100_000])
    parser.add_argument("--history-steps", type=parse_steps, default=[100_000, 1_000_000])
    parser.add_argument(
        "--sqlite-history-max",
        type=int,
        default=None,
        help="skip history steps above this on SQLite (default: none skipped)",
    )
    parser.add_argument("--flows", type=int, default=300, help="measured flows per configuration")
    parser.add_argument("--warmup-flows", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--explain-flows", type=int, default=120, help="flows run to record plans (0: skip)"
    )
    parser.add_argument(
        "--repeat-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the first configuration twice (the run's noise)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (people choice)")
    args = parser.parse_args(argv)
    if not args.people_steps:
        parser.error("--people-steps needs at least one step")
    if args.flow_people < args.concurrency or args.concurrency < 1:
        parser.error("--flow-people must be at least --concurrency, which must be at least 1")
    if not 1 <= args.flow_people <= 9999 or args.flows < 1 or args.workers < 1:
        parser.error("--flow-people must be 1 to 9999, --flows and --workers at least 1")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The servers' retention job (issue 7) would delete the history this benchmark builds, in
    # the middle of a measurement: with the longest retention it finds nothing to delete and
    # only its own index probes are measured. Set ROAMSIGN_RETENTION_DAYS to measure it purging.
    os.environ.setdefault("ROAMSIGN_RETENTION_DAYS", "3650")
    signal.signal(signal.SIGTERM, _terminate)
    load_before = os.getloadavg()
    started = time.perf_counter()
    databases = {
        "sqlite": [("sqlite", 1)],
        "postgresql": [("postgresql", args.workers)],
        "both": [("sqlite", 1), ("postgresql", args.workers)],
    }[args.db]
    results: list[DatabaseResult] = []
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="roamsign-scale-key-") as keys:
        key_file = Path(keys) / "master.key"
        write_master_key(key_file, secrets.token_bytes(32))
        shared = Shared(key_file)
        try:
            for database, workers in databases:
                results.append(run_database(database, workers, args, shared))
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: the figures below cover what finished")
    elapsed = time.perf_counter() - started
    rows = [row for result in results for row in rows_of(result)]
    print()
    if rows:
        print(plain_table(rows, COLUMNS, 2))
    command = " ".join(["python", "bench/scale.py", *(argv if argv is not None else sys.argv[1:])])
    print("\n---- markdown ----\n")
    print(
        f"`{command}` on {machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{elapsed / 60:.1f} min in all"
    )
    load_after = os.getloadavg()
    print(
        f"(1-minute load average {load_before[0]:.2f} before the run, {load_after[0]:.2f} after)\n"
    )
    if rows:
        print(markdown_table(rows, COLUMNS, 2))
        print()
    for result in results:
        print(f"- **{result.database}** builds:")
        for note in result.builds:
            print(f"  - {note}")
        for m in result.measurements:
            failures = Counter(m.stats.failures)
            if failures:
                print(f"  - {m.label}: failures {dict(failures)}")
            memory = ", ".join(
                f"{role} {hwm / 1024:.0f} MiB peak / {rss / 1024:.0f} now"
                for role, hwm, rss in m.memory
            )
            print(f"  - {m.label}: server processes: {memory}")
            if m.error:
                print(f"  - {m.label}: {m.error}")
        if result.error:
            print(f"  - **run failed**: {result.error}")
    print()
    for result in results:
        for line in plan_lines(result):
            print(line)
    print("\n---- every statement of the flows, with its plan's scans ----\n")
    for result in results:
        for line in all_plans(result):
            print(line)
    if interrupted:
        return 130
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
