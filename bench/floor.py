"""How close roamsign's signing flow comes to the stack it stands on, on this machine.

`bench/flow.py` measures roamsign. This measures, in the same run and the same way, servers
that do a flow's HTTP, database and e-mail work and none of roamsign's own
(`bench/floor_server.py`), in three layers, each adding to the one before:

1. `http`: a flow's two POSTs, each parsed, hopped to a worker thread and answered;
2. `database`: and in each call a unit of work on PostgreSQL with the statements roamsign's
   call runs there, in the same order, on tables of the same shape, through SQLAlchemy and
   psycopg with roamsign's pool settings;
3. `mail`: and a flow's two e-mails, the OTP (which the client waits for before its second
   call, as a flow does) and the signing notice, sent over SMTP by delivery threads to the
   load generator's sink and recorded as sent, with an audit row each.

Then roamsign itself: `bench/flow.py`'s PostgreSQL configuration, e-mail channel. Each on a
fresh server with `--workers` processes (uvicorn, as `python -m app serve`) and a fresh
PostgreSQL; the same client (one aiohttp session), the same closed loop (`--concurrency`
flows in flight for `--duration` seconds, after `--warmup`), the same `GET /healthz` phase
first. The `mail` layer is the floor a flow's work cannot go under with this stack: what it
costs beyond it is roamsign's own work (authentication, validation, MACs, the signature,
e-mail rendering and sealing, the ORM). `--rounds` repeats the four in turn: this machine's
speed drifts, so compare figures of one round.

    .venv/bin/python bench/floor.py [--workers 2] [--duration 8] [--rounds 1]

Nothing asserts: it prints figures (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import httpx  # noqa: E402

from app.services.mail.sink import MailSink  # noqa: E402
from bench import flow  # noqa: E402
from bench.floor_server import LAYERS, create_tables, describe_shape  # noqa: E402
from bench.flow import run_configuration  # noqa: E402
from bench.harness.clients import LanePool, make_lanes  # noqa: E402
from bench.harness.flows import OTP_TIMEOUT_SECONDS, Mailbox  # noqa: E402
from bench.harness.load import (  # noqa: E402
    LoadPlan,
    drain,
    measure_healthz,
    measured_phase,
    settle_notices,
)
from bench.harness.measure import (  # noqa: E402
    ConfigResult,
    CpuMeter,
    PhaseStats,
    percentile,
    postmaster_pid,
)
from bench.harness.report import (  # noqa: E402
    LOAD_COLUMNS,
    fmt,
    load_cells,
    machine,
    markdown_table,
    plain_table,
)
from tests.harness import Server, free_port, launch  # noqa: E402
from tests.pg_server import TemporaryPostgres  # noqa: E402

ROAMSIGN = "roamsign"
COLUMNS = (
    "round",
    "server",
    "flows/s",
    "p50 ms",
    "p99 ms",
    *LOAD_COLUMNS,
    "roamsign's flows/s ÷ these",
)
TEXT_COLUMNS = 2


@dataclass
class Measured:
    round: int
    server: str
    result: ConfigResult

    @property
    def closed(self) -> PhaseStats | None:
        closed = [phase for phase in self.result.phases if phase.name.startswith("closed")]
        return closed[0] if closed else None


class FloorDriver:
    """A flow against a floor server: create, (`mail`: wait for the OTP e-mail), sign."""

    def __init__(self, lanes: LanePool, mailbox: Mailbox, layer: str, people: list[str]) -> None:
        self._lanes, self._mailbox, self._layer, self._people = lanes, mailbox, layer, people

    async def flow(self, slot: int, stats: PhaseStats, started_at: float) -> None:
        stats.started += 1
        steps: dict[str, float] = {}
        step, lap_start = "create", time.perf_counter()
        try:
            async with self._lanes.client() as client:
                created = await client.post(
                    "/create",
                    json={
                        # One slot, one person: as in flow.py, a person has one flow at a time.
                        "mykad": self._people[slot % len(self._people)],
                        "document_hash": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
                        "document_name": f"Floor PV-{stats.started}",
                    },
                )
                if created.status_code != 201:
                    stats.failures[f"create {created.status_code}"] += 1
                    return
                request_id = created.json()["id"]
                steps["create"], lap_start = time.perf_counter() - lap_start, time.perf_counter()
                if self._layer == "mail":
                    step = "otp"
                    async with asyncio.timeout(OTP_TIMEOUT_SECONDS):
                        await self._mailbox.wait(request_id)
                    steps["e-mail"], lap_start = (
                        time.perf_counter() - lap_start,
                        time.perf_counter(),
                    )
                step = "sign"
                signed = await client.post(
                    f"/sign/{request_id}", json={"otp": "000000", "pin": "bench-pin"}
                )
            if signed.status_code != 201:
                stats.failures[f"sign {signed.status_code}"] += 1
                return
            if self._layer == "mail":
                self._mailbox.owed += 1  # its signing notice
            steps["sign"] = time.perf_counter() - lap_start
            stats.success(started_at, steps)
        except TimeoutError:
            stats.failures[f"{step} timeout"] += 1
        except httpx.TimeoutException as exc:
            stats.failures[f"{step} timeout ({type(exc).__name__})"] += 1
        except httpx.TransportError as exc:
            stats.failures[f"{step} transport {type(exc).__name__}"] += 1


async def floor_closed_loop(
    driver: FloorDriver, concurrency: int, seconds: float, stats: PhaseStats
) -> None:
    deadline = time.perf_counter() + seconds
    stats.duration, stats.window_end = seconds, deadline

    async def slot(number: int) -> None:
        while time.perf_counter() < deadline:
            await driver.flow(number, stats, time.perf_counter())

    tasks = {asyncio.create_task(slot(number)) for number in range(concurrency)}
    await asyncio.wait(tasks, timeout=seconds)
    await drain(tasks, stats)


def start_floor_server(
    layer: str, database_url: str | None, smtp_port: int, workers: int, directory: Path
) -> Server:
    port = free_port()
    env = {**os.environ, "FLOOR_LAYER": layer, "FLOOR_SMTP_PORT": str(smtp_port)}
    if database_url is not None:
        env["FLOOR_DATABASE_URL"] = database_url
    return launch(
        [
            *(sys.executable, "-m", "uvicorn", "bench.floor_server:build", "--factory"),
            *("--port", str(port), "--workers", str(workers)),
            *("--no-access-log", "--log-level", "warning"),
        ],
        env=env,
        port=port,
        log_path=directory / f"floor-{layer}.log",
        ready_path="/healthz",
    )


async def load_floor(
    server: Server,
    layer: str,
    api_key: str,
    people: list[str],
    mailbox: Mailbox,
    plan: LoadPlan,
    trees: dict[str, int | None],
    result: ConfigResult,
) -> None:
    mailbox.bind(asyncio.get_running_loop())
    lanes = make_lanes(plan.client, server.url, api_key, plan.concurrency)
    try:
        meter = CpuMeter(trees)
        await measure_healthz(lanes, plan.concurrency, plan.healthz_seconds, result)
        result.healthz_cpu = meter.stop()
        driver = FloorDriver(lanes, mailbox, layer, people)
        warmup = PhaseStats("warm-up")
        await floor_closed_loop(driver, plan.concurrency, plan.warmup_seconds, warmup)
        await settle_notices(mailbox)
        closed = PhaseStats(f"closed loop ({plan.concurrency} in flight)")
        await measured_phase(
            floor_closed_loop(driver, plan.concurrency, plan.duration, closed),
            plan.duration,
            closed,
            mailbox,
            trees,
        )
        result.phases.append(closed)
    finally:
        mailbox.unbind()
        await lanes.aclose()


def run_floor(layer: str, people_count: int, plan: LoadPlan, workers: int) -> ConfigResult:
    result = ConfigResult(f"floor: {layer}", workers)
    print(f"== floor: {layer}", flush=True)
    server: Server | None = None
    with (
        tempfile.TemporaryDirectory(prefix="roamsign-floor-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            mailbox = Mailbox()
            sink = MailSink(None, on_message=mailbox.on_message).start()
            stack.callback(sink.stop)
            pg: TemporaryPostgres | None = None
            api_key = secrets.token_urlsafe(32)
            people = [f"90010114{number:04d}" for number in range(people_count)]
            if layer != "http":
                pg = TemporaryPostgres().start()
                stack.callback(pg.stop)
                create_tables(pg.url, people, api_key)
            server = start_floor_server(
                layer, pg.url if pg else None, sink.port, workers, Path(tmp)
            )
            stack.callback(server.stop)
            trees = {"server": server.process.pid, "database": postmaster_pid(pg) if pg else None}
            asyncio.run(load_floor(server, layer, api_key, people, mailbox, plan, trees, result))
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            if server is not None:
                result.log_tail = server.tail()
    return result


def table_rows(measured: list[Measured]) -> list[list[str]]:
    roamsign = {
        m.round: m.closed.rate for m in measured if m.server == ROAMSIGN and m.closed is not None
    }
    rows = []
    for m in measured:
        phase, result = m.closed, m.result
        if phase is None:
            rows.append([str(m.round), m.server, *(["failed"] + ["-"] * (len(COLUMNS) - 3))])
            continue
        share = roamsign.get(m.round, 0.0) / phase.rate if phase.rate else None
        rows.append(
            [
                str(m.round),
                m.server,
                fmt(phase.rate, 1),
                fmt(percentile(phase.latencies_ms, 0.50)),
                fmt(percentile(phase.latencies_ms, 0.99)),
                *load_cells(phase, result, ms_digits=1),
                fmt(share, 2),
            ]
        )
    return rows


def own_work(measured: list[Measured]) -> Iterator[str]:
    """Per round: roamsign's server+db CPU per flow beyond the `mail` floor's."""
    by_round: dict[int, dict[str, float]] = {}
    for m in measured:
        if m.closed is not None and m.closed.cpu_ms_per_flow is not None:
            by_round.setdefault(m.round, {})[m.server] = m.closed.cpu_ms_per_flow
    for number, cost in sorted(by_round.items()):
        if ROAMSIGN in cost and "mail" in cost:
            ours, floor = cost[ROAMSIGN], cost["mail"]
            yield (
                f"round {number}: roamsign {ours:.1f} ms of server+db CPU a flow, the `mail` "
                f"floor {floor:.1f}: roamsign's own work {ours - floor:.1f} ms "
                f"({(ours - floor) / ours:.0%} of its flow)"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of the closed loop")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--healthz-seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--summary-json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if min(args.workers, args.people, args.concurrency, args.rounds) < 1:
        parser.error("--workers, --people, --concurrency and --rounds must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.healthz_seconds <= 0:
        parser.error("--duration and --healthz-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = LoadPlan(
        concurrency=args.concurrency,
        duration=args.duration,
        healthz_seconds=args.healthz_seconds,
        warmup_seconds=args.warmup,
        rate=None,
        max_in_flight=256,
        client="aiohttp",
        channels=("email",),
    )
    roamsign_args = flow.parse_args(
        [
            *("--db", "postgresql", "--channel", "email", "--people", str(args.people)),
            *("--workers", str(args.workers), "--concurrency", str(args.concurrency)),
        ]
    )
    measured: list[Measured] = []
    for number in range(1, args.rounds + 1):
        for layer in LAYERS:
            measured.append(
                Measured(number, layer, run_floor(layer, args.people, plan, args.workers))
            )
        # flow.py's run also has an open-loop phase; only its closed loop is compared here.
        roamsign = run_configuration("postgresql", args.workers, roamsign_args, plan)
        measured.append(Measured(number, ROAMSIGN, roamsign))
    rows = table_rows(measured)
    print()
    print(plain_table(rows, COLUMNS, TEXT_COLUMNS))
    summary = list(own_work(measured))
    print("", *summary, sep="\n")
    for m in measured:
        if m.result.error:
            print(f"\n{m.server} (round {m.round}): FAILED: {m.result.error}")
        if m.result.log_tail:
            print(f"--- its server log ---\n{m.result.log_tail}")
    command = " ".join(["python", "bench/floor.py", *(argv if argv is not None else sys.argv[1:])])
    print("\n---- markdown ----\n")
    print(f"`{command}` on {machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(markdown_table(rows, COLUMNS, TEXT_COLUMNS))
    print("", *(f"- {line}" for line in summary), sep="\n")
    print("- the `database` and `mail` layers' statement shape (bench/floor_server.py):")
    print(*(f"  - {line}" for line in describe_shape().splitlines()), sep="\n")
    if args.summary_json is not None:
        figures = [
            {
                "round": m.round,
                "server": m.server,
                "flows_s": m.closed.rate if m.closed else None,
                "cpu_ms_per_flow": m.closed.cpu_ms_per_flow if m.closed else None,
            }
            for m in measured
        ]
        args.summary_json.write_text(
            json.dumps({"shape": describe_shape(), "figures": figures}, indent=2)
        )
    return 1 if any(m.result.error for m in measured) else 0


if __name__ == "__main__":
    sys.exit(main())
