"""Load test of the whole signing flow against a real `python -m app serve`.

Per database configuration (SQLite with one worker, PostgreSQL with `--workers`), in one run:
a fresh database, a master key, the CA, one signer API client and `--people` people with ECDSA
P-256 roaming credentials (and, for the device channel, each an active MyGPKI Mobile device);
an in-memory SMTP sink and the server; then

1. `GET /healthz` at `--concurrency` for `--healthz-seconds` (the HTTP stack's ceiling here);
2. per channel (`--channel`: e-mail, then the device inbox):
   a. a short warm-up (not counted);
   b. closed loop: `--concurrency` flows always in flight for `--duration` seconds;
   c. open loop: flows started at a fixed rate (`--rate`, default half that channel's
      closed-loop flows/s) for `--duration` seconds, whatever the completions (in flight
      capped at `--max-in-flight`).
   Each of them ends once the signing notices of its flows have reached the sink: the server
   sends OTPs before notices, so a saturated closed loop leaves notices queued, and their
   delivery must neither run inside the next phase's window nor go uncounted in the CPU cost
   of the flows that caused them.

A flow = POST /v1/signing-requests -> the OTP arrives (e-mail: at the SMTP sink; device: in
the answer to the app's RFC 9421-signed GET /v1/devices/{id}/messages) -> POST .../signature
with that OTP and the PIN -> 201. Failed flows are counted, never retried. The HTTP client is
one aiohttp session (`--client`: httpx lanes, as until session 5, cost the generator six times
more CPU a request).

    .venv/bin/python bench/flow.py [--db sqlite|postgresql|both] [--workers 2] [--people 50]
        [--channel email|device|both] [--concurrency 32] [--duration 10] [--rate R]
        [--client aiohttp|lanes|shared]

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from app.settings import Settings, write_master_key  # noqa: E402
from bench.harness.clients import CLIENTS, make_lanes  # noqa: E402
from bench.harness.fixtures import (  # noqa: E402
    MAX_PEOPLE,
    open_sink_and_database,
    seed,
    seed_devices,
    start_server,
)
from bench.harness.flows import DeviceInbox, FlowDriver, IdlePeople, Mailbox  # noqa: E402
from bench.harness.load import (  # noqa: E402
    NOTICE_SETTLE_SECONDS,
    LoadPlan,
    closed_loop,
    measure_healthz,
    measured_phase,
    open_loop,
    settle_activation_mail,
    settle_notices,
)
from bench.harness.measure import (  # noqa: E402
    ConfigResult,
    CpuMeter,
    PhaseStats,
    percentile,
    postmaster_pid,
    serving_processes_peak_rss,
)
from bench.harness.report import (  # noqa: E402
    LOAD_COLUMNS,
    cpu_ms_per_unit,
    fmt,
    load_cells,
    machine,
    markdown_table,
    plain_table,
)
from tests.factories import Person  # noqa: E402
from tests.harness import LOG_TAIL_LINES, Server  # noqa: E402
from tests.mobile_app import MobileApp  # noqa: E402


async def run_load(
    server: Server,
    api_key: str,
    people: list[Person],
    apps: dict[str, MobileApp],
    mailbox: Mailbox,
    plan: LoadPlan,
    cpu_trees: dict[str, int | None],
    result: ConfigResult,
    rng: random.Random,
) -> None:
    mailbox.bind(asyncio.get_running_loop())
    in_flight = max(plan.concurrency, plan.max_in_flight)  # the open loop's cap
    lanes = make_lanes(plan.client, server.url, api_key, in_flight)
    device_lanes = make_lanes(plan.client, server.url, None, in_flight)
    try:
        meter = CpuMeter(cpu_trees)
        await measure_healthz(lanes, plan.concurrency, plan.healthz_seconds, result)
        result.healthz_cpu = meter.stop()
        print(f"  healthz: {result.healthz_rps:,.0f} req/s", flush=True)

        idle = IdlePeople(people, rng)
        for channel in plan.channels:
            inbox = DeviceInbox(device_lanes, apps) if channel == "device" else None
            driver = FlowDriver(lanes, mailbox, result.name, channel=channel, inbox=inbox)
            await run_channel(driver, idle, mailbox, channel, plan, cpu_trees, result)
    finally:
        mailbox.unbind()
        await lanes.aclose()
        await device_lanes.aclose()


async def run_channel(
    driver: FlowDriver,
    idle: IdlePeople,
    mailbox: Mailbox,
    channel: str,
    plan: LoadPlan,
    cpu_trees: dict[str, int | None],
    result: ConfigResult,
) -> None:
    """Warm-up, closed loop, open loop: flows over one OTP channel."""
    if plan.warmup_seconds > 0:
        warmup = PhaseStats("warm-up", channel)
        await closed_loop(driver, idle, plan.concurrency, plan.warmup_seconds, warmup)
        if warmup.errors:
            print(f"  {channel} warm-up failures: {dict(warmup.failures)}", flush=True)
        missing = await settle_notices(mailbox)
        if missing:
            print(f"  {channel} warm-up: {missing} signing notices never arrived", flush=True)

    closed = PhaseStats(f"closed loop ({plan.concurrency} in flight)", channel)
    await measured_phase(
        closed_loop(driver, idle, plan.concurrency, plan.duration, closed),
        plan.duration,
        closed,
        mailbox,
        cpu_trees,
    )
    result.phases.append(closed)
    print(f"  {channel} closed loop: {closed.rate:.1f} flows/s, {closed.errors} errors", flush=True)

    rate = plan.rate if plan.rate is not None else max(closed.rate / 2, 1.0)
    for run in range(1, plan.open_runs + 1):
        label = f", run {run}/{plan.open_runs}" if plan.open_runs > 1 else ""
        opened = PhaseStats(f"open loop ({rate:.1f}/s offered){label}", channel)
        await measured_phase(
            open_loop(driver, idle, rate, plan.duration, plan.max_in_flight, opened),
            plan.duration,
            opened,
            mailbox,
            cpu_trees,
        )
        result.phases.append(opened)
        print(
            f"  {channel} open loop{label}: {opened.rate:.1f} flows/s, {opened.errors} errors, "
            f"p99 {fmt(percentile(opened.latencies_ms, 0.99))} ms",
            flush=True,
        )


def run_configuration(
    database: str, workers: int, args: argparse.Namespace, plan: LoadPlan
) -> ConfigResult:
    name = f"{database}, {workers} worker{'s' if workers > 1 else ''}"
    result = ConfigResult(name, workers)
    print(f"== {name}", flush=True)
    server: Server | None = None
    with (
        tempfile.TemporaryDirectory(prefix="roamsign-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            directory = Path(tmp)
            mailbox, sink, url, pg = open_sink_and_database(database, directory, stack)

            key_file = directory / "master.key"
            write_master_key(key_file, secrets.token_bytes(32))
            settings = Settings(
                profile="production",
                database_url=url,
                master_key_file=key_file,
                var_dir=directory,
                smtp_host="127.0.0.1",
                smtp_port=sink.port,
            )
            began = time.perf_counter()
            api_key, people = seed(settings, args.people)
            print(
                f"  seeded {len(people)} people in {time.perf_counter() - began:.1f} s", flush=True
            )
            apps: dict[str, MobileApp] = {}
            if "device" in plan.channels:
                began = time.perf_counter()
                apps = seed_devices(settings, people)
                print(
                    f"  seeded {len(apps)} active devices in {time.perf_counter() - began:.1f} s",
                    flush=True,
                )

            server = start_server(
                database_url=url,
                key_file=key_file,
                var_dir=directory,
                smtp_port=sink.port,
                workers=workers,
            )
            stack.callback(server.stop)
            settle_activation_mail(mailbox, len(apps))
            trees = {"server": server.process.pid, "database": postmaster_pid(pg) if pg else None}
            asyncio.run(
                run_load(
                    server,
                    api_key,
                    people,
                    apps,
                    mailbox,
                    plan,
                    trees,
                    result,
                    random.Random(args.seed),
                )
            )
            if server.process.poll() is not None:
                result.error = f"the server exited during the run ({server.process.returncode})"
            else:
                result.peak_rss_mib = serving_processes_peak_rss(server.process.pid)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            server_trouble = any(phase.server_errors for phase in result.phases) or bool(
                result.healthz_errors
            )
            if server is not None and (result.error or server_trouble):
                result.log_tail = server.tail()
    return result


COLUMNS = (
    "configuration",
    "channel",
    "phase",
    "flows/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    *LOAD_COLUMNS,
)
TEXT_COLUMNS = 3  # left-aligned; the figures after them are right-aligned


def table_rows(results: list[ConfigResult]) -> list[list[str]]:
    rows: list[list[str]] = []
    for result in results:
        for phase in result.phases:
            rows.append(
                [
                    result.name,
                    phase.channel,
                    phase.name,
                    fmt(phase.rate, 1),
                    fmt(percentile(phase.latencies_ms, 0.50)),
                    fmt(percentile(phase.latencies_ms, 0.95)),
                    fmt(percentile(phase.latencies_ms, 0.99)),
                    *load_cells(phase, result),
                ]
            )
    return rows


def details(results: list[ConfigResult]) -> Iterator[str]:
    """Error breakdowns, drops and CPU of the healthz phase, as markdown bullet points."""
    for result in results:
        cpu = result.healthz_cpu
        if not cpu:
            yield f"- **{result.name}**: not measured"
        else:
            yield (
                f"- **{result.name}**: healthz {result.healthz_rps:,.0f} req/s "
                f"(generator CPU {fmt(cpu.get('generator'))} %, "
                f"server CPU {fmt(cpu.get('server'))} % = "
                f"{fmt(cpu_ms_per_unit(cpu, result.healthz_rps), 2)} ms per request, "
                f"other CPU {fmt(cpu.get('other'))} %)"
                + (f", errors {dict(result.healthz_errors)}" if result.healthz_errors else "")
            )
        if result.peak_rss_mib:
            peaks = ", ".join(f"{peak:,.0f}" for peak in result.peak_rss_mib)
            yield f"  - peak RSS of each serving process after the run: {peaks} MiB"
        for phase in result.phases:
            extra = [f"{phase.started} flows started, {len(phase.latencies_ms)} succeeded"]
            if phase.steps_ms:
                medians = ", ".join(
                    f"{step} {fmt(percentile(values, 0.5))}"
                    for step, values in phase.steps_ms.items()
                )
                extra.append(f"median ms per step: {medians}")
                # Which step the flow's tail comes from.
                tails = ", ".join(
                    f"{step} {fmt(percentile(values, 0.99))}"
                    for step, values in phase.steps_ms.items()
                )
                extra.append(f"p99 ms per step: {tails}")
            if phase.target_rate is not None:
                extra.append(f"offered {phase.target_rate:.1f}/s")
            extra.append(
                f"signing notices still queued when the window closed: {phase.notices_behind}, "
                f"all delivered {phase.notices_drained_s:.1f} s after the phase's flows"
                if not phase.notices_missing
                else f"**{phase.notices_missing} signing notices never arrived** "
                f"({NOTICE_SETTLE_SECONDS:.0f} s)"
            )
            if phase.failures:
                extra.append(
                    "failures " + ", ".join(f"`{k}` x{v}" for k, v in phase.failures.items())
                )
            if phase.dropped:
                extra.append(
                    "dropped starts " + ", ".join(f"{k} x{v}" for k, v in phase.dropped.items())
                )
            yield f"  - {phase.channel}, {phase.name}: " + "; ".join(extra)
        if result.error:
            yield f"  - **run failed**: {result.error}"


def summarise(results: list[ConfigResult], p99_limit_ms: float) -> list[dict[str, Any]]:
    """Per configuration and channel: the closed loop's maximum and CPU a flow, and each open
    run's p99 against the limit."""
    summary: list[dict[str, Any]] = []
    for result in results:
        for channel in dict.fromkeys(phase.channel for phase in result.phases):
            phases = [phase for phase in result.phases if phase.channel == channel]
            closed = [phase for phase in phases if phase.target_rate is None]
            opened = [phase for phase in phases if phase.target_rate is not None]
            p99s = [percentile(phase.latencies_ms, 0.99) for phase in opened]
            summary.append(
                {
                    "configuration": result.name,
                    "channel": channel,
                    "closed_flows_s": closed[0].rate if closed else None,
                    "closed_cpu_ms_per_flow": closed[0].cpu_ms_per_flow if closed else None,
                    "open_rate": opened[0].target_rate if opened else None,
                    "open_p99_ms": p99s,
                    "open_errors": sum(phase.errors for phase in opened),
                    "open_all_under_limit": bool(p99s)
                    and all(p is not None and p < p99_limit_ms for p in p99s),
                }
            )
    return summary


def summary_lines(summary: list[dict[str, Any]], p99_limit_ms: float) -> Iterator[str]:
    for entry in summary:
        p99s = ", ".join(fmt(p) for p in entry["open_p99_ms"])
        under = sum(1 for p in entry["open_p99_ms"] if p is not None and p < p99_limit_ms)
        yield (
            f"- {entry['configuration']}, {entry['channel']}: closed loop "
            f"{fmt(entry['closed_flows_s'], 1)} flows/s at "
            f"{fmt(entry['closed_cpu_ms_per_flow'], 1)} ms server+db CPU a flow; open loop at "
            f"{fmt(entry['open_rate'], 1)}/s, p99 per run {p99s} ms: {under} of "
            f"{len(entry['open_p99_ms'])} under {p99_limit_ms:.0f} ms"
            + (" (**all**)" if entry["open_all_under_limit"] else " (**not all**)")
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2, help="server workers on PostgreSQL")
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument(
        "--channel",
        choices=("email", "device", "both"),
        default="both",
        help="how the OTP travels: e-mail, the device inbox, or both in turn (default)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop flows in flight")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    parser.add_argument("--rate", type=float, default=None, help="open-loop flows/s offered")
    parser.add_argument("--healthz-seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted warm-up seconds")
    parser.add_argument("--max-in-flight", type=int, default=256, help="open-loop cap")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="aiohttp",
        help="one aiohttp session (default), one httpx client per request in flight, or one "
        "shared httpx client",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (people choice)")
    parser.add_argument(
        "--open-runs",
        type=int,
        default=1,
        help="open-loop phases per channel, each at the same rate (issue 19 asks five)",
    )
    parser.add_argument(
        "--p99-limit-ms",
        type=float,
        default=100.0,
        help="the open loop's p99 bound the summary checks each run against",
    )
    parser.add_argument("--summary-json", type=Path, default=None, help="write the summary here")
    args = parser.parse_args(argv)
    if not 1 <= args.people <= MAX_PEOPLE:
        parser.error(f"--people must be 1 to {MAX_PEOPLE}")
    if min(args.concurrency, args.workers, args.max_in_flight, args.open_runs) < 1:
        parser.error("--concurrency, --workers, --max-in-flight and --open-runs must be at least 1")
    if (
        args.duration <= 0
        or args.healthz_seconds <= 0
        or (args.rate is not None and args.rate <= 0)
    ):
        parser.error("--duration, --healthz-seconds and --rate must be positive")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every finally


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    signal.signal(signal.SIGTERM, _terminate)
    plan = LoadPlan(
        concurrency=args.concurrency,
        duration=args.duration,
        healthz_seconds=args.healthz_seconds,
        warmup_seconds=args.warmup,
        rate=args.rate,
        max_in_flight=args.max_in_flight,
        client=args.client,
        channels=("email", "device") if args.channel == "both" else (args.channel,),
        open_runs=args.open_runs,
    )
    configurations = {
        "sqlite": [("sqlite", 1)],
        "postgresql": [("postgresql", args.workers)],
        "both": [("sqlite", 1), ("postgresql", args.workers)],
    }[args.db]
    if args.people < args.concurrency:
        print(
            f"note: {args.people} people < concurrency {args.concurrency}: at most "
            f"{args.people} flows can be in flight",
            flush=True,
        )
    results: list[ConfigResult] = []
    interrupted = False
    try:
        for db, workers in configurations:
            results.append(run_configuration(db, workers, args, plan))
    except KeyboardInterrupt:
        # run_configuration's finally blocks have stopped the server, the sink and postgres.
        interrupted = True
        print("\ninterrupted: the figures below cover the finished configurations only")

    rows = table_rows(results)
    print()
    if rows:
        print(plain_table(rows, COLUMNS, TEXT_COLUMNS))
    for result in results:
        if result.error:
            print(f"\n{result.name}: FAILED: {result.error}")
        if result.log_tail:
            print(f"\n--- {result.name}: server log, last {LOG_TAIL_LINES} lines ---")
            print(result.log_tail)

    command = " ".join(["python", "bench/flow.py", *(argv if argv is not None else sys.argv[1:])])
    print("\n---- markdown ----\n")
    print(f"`{command}` on {machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    load_after = os.getloadavg()
    print(
        f"(1-minute load average {load_before[0]:.2f} before the run, {load_after[0]:.2f} after)\n"
    )
    if rows:
        print(markdown_table(rows, COLUMNS, TEXT_COLUMNS))
        print()
    for line in details(results):
        print(line)
    summary = summarise(results, args.p99_limit_ms)
    print()
    for line in summary_lines(summary, args.p99_limit_ms):
        print(line)
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary, indent=2))
    if interrupted:
        return 130
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
