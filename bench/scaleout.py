"""Scale-out across hosts, shown: roamsign on one host against two, on one PostgreSQL, each in
a network namespace of its own (`ip netns`, root only; tests/netns.py makes them):

    root namespace: this process (the load generator and the SMTP sink), {subnet}.1
        | one veth pair
    {prefix}-sw: a bridge, one veth to each of
        {prefix}-db  PostgreSQL, {subnet}.2
        {prefix}-h1  `python -m app serve --workers W`, {subnet}.11:8000
        {prefix}-h2  the same, {subnet}.12:8000

Modes (`--mode`, default `all`: rate then race):

- `rate`: the e-mail flow (bench/flow.py's generator: closed loop, `--concurrency` in flight)
  against one host, then two, alternating, `--rounds` each; with two hosts, each request goes
  to the next host in turn (a load balancer without affinity: a flow may ask on one host and
  sign on the other). Per round: flows/s, p50/p99, errors, each host's, PostgreSQL's and the
  generator's CPU, server+db CPU ms a flow (until its signing notices have arrived); then the
  two-host / one-host ratio of the medians. The second host is stopped during one-host rounds.
- `race`: `--race-otps` OTPs (at most `--race-seconds`), each submitted `--race-copies` times
  to each host at the same instant (each on its own warm connection, released together):
  exactly one 201 and the others 409 `otp_consumed` per OTP, and one signature row per
  request in the database. Exit status 1 on any violation.

    .venv/bin/python bench/scaleout.py [--mode all|rate|race] [--workers 1] [--rounds 2]
        [--duration 10] [--race-otps 100]

See bench/README.md. Exit status: 0, 1 (a run failed, or the race found a violation), 130
(interrupted; the servers, PostgreSQL and the namespaces are removed first).
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from sqlalchemy import create_engine, func, select  # noqa: E402

from app.migrate import upgrade  # noqa: E402
from app.models import Signature  # noqa: E402
from app.services.mail.sink import MailSink  # noqa: E402
from app.settings import Settings, write_master_key  # noqa: E402
from bench.harness.clients import AiohttpClient, LanePool, make_lanes, problem_code  # noqa: E402
from bench.harness.fixtures import bench_environment, seed  # noqa: E402
from bench.harness.flows import OTP_TIMEOUT_SECONDS, FlowDriver, IdlePeople, Mailbox  # noqa: E402
from bench.harness.load import closed_loop, measured_phase, settle_notices  # noqa: E402
from bench.harness.measure import PhaseStats, percentile, postmaster_pid  # noqa: E402
from bench.harness.report import fmt, machine, markdown_table, plain_table  # noqa: E402
from tests.factories import Person  # noqa: E402
from tests.harness import Server  # noqa: E402
from tests.helpers import document_hash, otp_from_message  # noqa: E402
from tests.netns import (  # noqa: E402
    RELAY_PORT,
    NamespacedPostgres,
    Network,
    netns_unavailable,
    serve_in,
    start_relay,
)


class RoundRobinLanes:
    """Lends each request's client from the next host's pool in turn."""

    def __init__(self, pools: list[LanePool]) -> None:
        self._pools = pools
        self._next = 0
        self.base_url = pools[0].base_url

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        pool = self._pools[self._next % len(self._pools)]
        self._next += 1
        async with pool.client() as client:
            yield client

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


@dataclass
class Round:
    hosts: int
    number: int
    stats: PhaseStats

    @property
    def cpu_ms(self) -> float | None:
        return self.stats.cpu_ms_per_flow


@dataclass
class RaceResult:
    otps: int = 0
    submissions: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    winners: Counter[str] = field(default_factory=Counter)  # which host signed
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    setup_failures: Counter[str] = field(default_factory=Counter)


class Cluster:
    """The namespaces, PostgreSQL, the sink, the seeded people and the hosts of one run."""

    def __init__(self, args: argparse.Namespace, directory: Path) -> None:
        self.args = args
        self.directory = directory
        self.network = Network(args.prefix, args.subnet, hosts=2)
        self.pg: NamespacedPostgres | None = None
        self.sink: MailSink | None = None
        self.mailbox = Mailbox()
        self.hosts: dict[int, Server] = {}
        self.relays: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}
        self.api_key = ""
        self.people: list[Person] = []

    def start(self) -> None:
        began = time.perf_counter()
        self.network.create()
        self.pg = pg = NamespacedPostgres(self.network)
        pg.start()
        upgrade(pg.url)
        self.sink = MailSink(
            None, host=self.network.generator_address, on_message=self.mailbox.on_message
        ).start()
        key_file = self.directory / "master.key"
        write_master_key(key_file, secrets.token_bytes(32))
        settings = Settings(
            profile="production",
            database_url=pg.url,
            master_key_file=key_file,
            var_dir=self.directory,
            smtp_port=RELAY_PORT,  # seeding sends nothing
        )
        self.api_key, self.people = seed(settings, self.args.people)
        # Each host e-mails its own loopback, relayed to the sink (see tests/netns.py).
        target = (self.network.generator_address, self.sink.port)
        self.relays = [start_relay(self.network, n, target) for n in (1, 2)]
        self.env = bench_environment(
            database_url=pg.url,
            key_file=key_file,
            var_dir=self.directory,
            smtp_port=RELAY_PORT,
        )
        self.start_host(1)
        print(
            f"  namespaces, PostgreSQL ({self.network.db_address}), {len(self.people)} people "
            f"and host 1 ({self.hosts[1].url}) ready in {time.perf_counter() - began:.1f} s",
            flush=True,
        )

    def start_host(self, n: int) -> None:
        if n not in self.hosts:
            self.hosts[n] = serve_in(
                self.network, n, self.env, self.directory, workers=self.args.workers
            )

    def stop_host(self, n: int) -> None:
        server = self.hosts.pop(n, None)
        if server is not None:
            server.stop()

    def trees(self) -> dict[str, int | None]:
        assert self.pg is not None
        return {
            "server": self.hosts[1].process.pid,
            "server h2": self.hosts[2].process.pid if 2 in self.hosts else None,
            "database": postmaster_pid(self.pg),
        }

    def logs(self) -> str:
        return "\n".join(
            f"--- host {n}, last lines ---\n{server.tail()}" for n, server in self.hosts.items()
        )

    def stop(self) -> None:
        for n in list(self.hosts):
            with contextlib.suppress(Exception):
                self.stop_host(n)
        for relay in self.relays:
            relay.kill()
            relay.wait()
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop()
        self.network.remove()


# ----------------------------------------------------------------------------- rate


async def rate_round(cluster: Cluster, hosts: int, number: int, rng: random.Random) -> Round:
    args = cluster.args
    mailbox = cluster.mailbox
    mailbox.bind(asyncio.get_running_loop())
    pools = [
        make_lanes("aiohttp", cluster.hosts[n].url, cluster.api_key, args.concurrency)
        for n in range(1, hosts + 1)
    ]
    lanes = RoundRobinLanes(pools)
    try:
        driver = FlowDriver(lanes, mailbox, f"scaleout-{hosts}-{number}")
        idle = IdlePeople(cluster.people, rng)
        if args.warmup > 0:
            warmup = PhaseStats("warm-up")
            await closed_loop(driver, idle, args.concurrency, args.warmup, warmup)
            await settle_notices(mailbox)
        stats = PhaseStats(f"{hosts} host{'s' if hosts > 1 else ''}, round {number}")
        await measured_phase(
            closed_loop(driver, idle, args.concurrency, args.duration, stats),
            args.duration,
            stats,
            mailbox,
            cluster.trees(),
        )
        return Round(hosts, number, stats)
    finally:
        mailbox.unbind()
        await lanes.aclose()


def run_rates(cluster: Cluster, rng: random.Random) -> list[Round]:
    rounds: list[Round] = []
    for number in range(1, cluster.args.rounds + 1):
        for hosts in (1, 2):
            if hosts == 2:
                cluster.start_host(2)
            else:
                cluster.stop_host(2)
            result = asyncio.run(rate_round(cluster, hosts, number, rng))
            stats = result.stats
            print(
                f"  {stats.name}: {stats.rate:.1f} flows/s, {stats.errors} errors, "
                f"{fmt(result.cpu_ms, 1)} ms server+db CPU a flow",
                flush=True,
            )
            rounds.append(result)
    return rounds


RATE_COLUMNS = (
    "hosts",
    "round",
    "flows/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "host 1 CPU %",
    "host 2 CPU %",
    "database CPU %",
    "generator CPU %",
    "other CPU %",
    "server+db CPU ms/flow",
)


def rate_rows(rounds: list[Round]) -> list[list[str]]:
    return [
        [
            str(r.hosts),
            str(r.number),
            fmt(r.stats.rate, 1),
            fmt(percentile(r.stats.latencies_ms, 0.5)),
            fmt(percentile(r.stats.latencies_ms, 0.99)),
            str(r.stats.errors),
            fmt(r.stats.cpu.get("server")),
            fmt(r.stats.cpu.get("server h2")),
            fmt(r.stats.cpu.get("database")),
            fmt(r.stats.cpu.get("generator")),
            fmt(r.stats.cpu.get("other")),
            fmt(r.cpu_ms, 1),
        ]
        for r in rounds
    ]


def rate_summary(rounds: list[Round]) -> dict[str, Any]:
    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    summary: dict[str, Any] = {}
    for hosts in (1, 2):
        mine = [r for r in rounds if r.hosts == hosts]
        summary[f"{hosts}_host_flows_s"] = median([r.stats.rate for r in mine])
        summary[f"{hosts}_host_cpu_ms"] = median([r.cpu_ms for r in mine])
        summary[f"{hosts}_host_errors"] = sum(r.stats.errors for r in mine)
    one, two = summary["1_host_flows_s"], summary["2_host_flows_s"]
    summary["ratio"] = two / one if one and two is not None else None
    cpu_one, cpu_two = summary["1_host_cpu_ms"], summary["2_host_cpu_ms"]
    summary["cpu_ratio"] = cpu_two / cpu_one if cpu_one and cpu_two is not None else None
    return summary


# ----------------------------------------------------------------------------- race


async def race(cluster: Cluster) -> RaceResult:
    """Each OTP sent to both hosts at once; exactly one signature must come of it."""
    args = cluster.args
    result = RaceResult()
    mailbox = cluster.mailbox
    mailbox.bind(asyncio.get_running_loop())
    copies = args.race_copies
    # One session per host, with a warm connection per submission in flight.
    sessions = {
        n: AiohttpClient(
            cluster.hosts[n].url,
            {"Authorization": f"Bearer {cluster.api_key}"},
            connections=copies * args.race_parallel,
        )
        for n in (1, 2)
    }
    began = time.perf_counter()
    deadline = began + args.race_seconds
    counter = 0

    async def one(person: Person, create_on: int) -> None:
        nonlocal counter
        counter += 1
        client = sessions[create_on]
        created = await client.post(
            "/v1/signing-requests",
            json={
                "mykad": person.mykad,
                "document_hash": document_hash(f"race-{counter}-{secrets.token_hex(8)}"),
                "document_name": f"Race PV-{counter}",
            },
        )
        if created.status_code != 201:
            result.setup_failures[f"create {created.status_code}"] += 1
            return
        request_id = created.json()["id"]
        try:
            async with asyncio.timeout(OTP_TIMEOUT_SECONDS):
                otp = otp_from_message(await mailbox.wait(request_id))
        except TimeoutError:
            result.setup_failures["otp e-mail timeout"] += 1
            return
        body = {"otp": otp, "pin": person.pin}
        path = f"/v1/signing-requests/{request_id}/signature"
        go = asyncio.Event()

        async def submit(n: int) -> tuple[int, Any]:
            await go.wait()
            return n, await sessions[n].post(path, json=body)

        tasks = [asyncio.create_task(submit(n)) for n in (1, 2) for _ in range(copies)]
        await asyncio.sleep(0)
        go.set()
        answers = await asyncio.gather(*tasks)
        result.otps += 1
        result.submissions += len(answers)
        signed = [n for n, answer in answers if answer.status_code == 201]
        kinds = Counter(
            "201" if a.status_code == 201 else f"{a.status_code} {problem_code(a)}"
            for _, a in answers
        )
        result.answers.update(kinds)
        if len(signed) == 1:
            result.winners[f"host {signed[0]}"] += 1
            mailbox.owed += 1  # its signing notice
        refused = {k for k in kinds if k != "201"}
        if len(signed) != 1 or refused - {"409 otp_consumed"}:
            result.violations.append(f"request {request_id}: {dict(kinds)}")

    people = list(cluster.people)
    try:
        while result.otps < args.race_otps and time.perf_counter() < deadline:
            batch = min(args.race_parallel, args.race_otps - result.otps, len(people))
            chosen = random.sample(people, batch)
            await asyncio.gather(*(one(p, 1 + (i % 2)) for i, p in enumerate(chosen)))
        await settle_notices(mailbox)
    finally:
        for session in sessions.values():
            await session.aclose()
        mailbox.unbind()
    result.seconds = time.perf_counter() - began
    return result


def check_signature_rows(cluster: Cluster, result: RaceResult) -> None:
    """One signature row per signed request: no request has two."""
    assert cluster.pg is not None
    engine = create_engine(cluster.pg.url)
    try:
        with engine.connect() as db:
            doubled = db.execute(
                select(Signature.request_id, func.count())
                .group_by(Signature.request_id)
                .having(func.count() > 1)
            ).all()
    finally:
        engine.dispose()
    result.violations.extend(f"request {rid}: {count} signature rows" for rid, count in doubled)


def race_lines(result: RaceResult, copies: int) -> list[str]:
    verdict = "HOLDS" if not result.violations and result.otps else "VIOLATED"
    if not result.otps:
        verdict = "NOT SHOWN (no OTP raced)"
    lines = [
        f"one OTP, one signature across two hosts: **{verdict}** — {result.otps} OTPs, each "
        f"sent {copies}x to each host at once ({result.submissions} submissions) in "
        f"{result.seconds:.1f} s; answers {dict(result.answers)}; signed by "
        f"{dict(result.winners)}"
    ]
    if result.setup_failures:
        lines.append(f"requests that never reached the race: {dict(result.setup_failures)}")
    lines.extend(f"VIOLATION {v}" for v in result.violations[:20])
    return lines


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--mode", choices=("all", "rate", "race"), default="all")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes per host (default 1)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each configuration")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds a measured round")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds a round")
    parser.add_argument("--concurrency", type=int, default=32, help="flows in flight")
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--race-otps", type=int, default=100, help="OTPs raced")
    parser.add_argument("--race-copies", type=int, default=1, help="submissions per host per OTP")
    parser.add_argument("--race-parallel", type=int, default=8, help="OTPs raced at a time")
    parser.add_argument("--race-seconds", type=float, default=60.0, help="cap on the race")
    parser.add_argument("--prefix", default="rsbench", help="namespace and interface prefix")
    parser.add_argument("--subnet", default="10.213.7", help="private /24 (first three octets)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--summary-json", type=Path, default=None, help="write figures here")
    args = parser.parse_args(argv)
    if min(args.workers, args.rounds, args.concurrency, args.people, args.race_copies) < 1:
        parser.error("--workers, --rounds, --concurrency, --people, --race-copies must be >= 1")
    if args.race_parallel < 1 or args.race_otps < 1:
        parser.error("--race-parallel and --race-otps must be at least 1")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every finally


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    why_not = netns_unavailable()
    if why_not:
        print(f"cannot make network namespaces here: {why_not}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    load_before = os.getloadavg()
    rng = random.Random(args.seed)
    rounds: list[Round] = []
    race_result: RaceResult | None = None
    error: str | None = None
    log_tail = ""
    interrupted = False
    print(f"== scale-out: {args.workers} worker(s) a host, mode {args.mode}", flush=True)
    with tempfile.TemporaryDirectory(prefix="roamsign-scaleout-") as tmp:
        cluster = Cluster(args, Path(tmp))
        try:
            cluster.start()
            if args.mode in ("all", "rate"):
                rounds = run_rates(cluster, rng)
            if args.mode in ("all", "race"):
                cluster.start_host(2)
                race_result = asyncio.run(race(cluster))
                check_signature_rows(cluster, race_result)
            if any(r.stats.server_errors for r in rounds):
                log_tail = cluster.logs()
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: cleaning up", flush=True)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log_tail = cluster.logs()
        finally:
            # A second Ctrl-C must not leave namespaces and servers behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            cluster.stop()
            signal.signal(signal.SIGINT, signal.default_int_handler)

    summary: dict[str, Any] = {"workers_per_host": args.workers}
    print()
    if rounds:
        print(plain_table(rate_rows(rounds), RATE_COLUMNS, 2))
        summary.update(rate_summary(rounds))
    if error:
        print(f"\nFAILED: {error}")
    if log_tail:
        print(log_tail)

    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python", "bench/scaleout.py", *given])
    print("\n---- markdown ----\n")
    print(f"`{command}` on {machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    load_after = os.getloadavg()
    print(
        f"(1-minute load average {load_before[0]:.2f} before the run, {load_after[0]:.2f} after;"
        f" {args.workers} worker(s) a host)\n"
    )
    if rounds:
        print(markdown_table(rate_rows(rounds), RATE_COLUMNS, 2))
        print()
        print(
            f"- two hosts / one host, medians of {args.rounds} rounds: flows/s "
            f"{fmt(summary['1_host_flows_s'], 1)} -> {fmt(summary['2_host_flows_s'], 1)} "
            f"(ratio **{fmt(summary['ratio'], 2)}**); server+db CPU a flow "
            f"{fmt(summary['1_host_cpu_ms'], 1)} -> {fmt(summary['2_host_cpu_ms'], 1)} ms "
            f"(ratio {fmt(summary['cpu_ratio'], 2)}); errors {summary['1_host_errors']} -> "
            f"{summary['2_host_errors']}"
        )
        for r in rounds:
            if r.stats.failures:
                print(f"- {r.stats.name} failures: {dict(r.stats.failures)}")
    if race_result is not None:
        for line in race_lines(race_result, args.race_copies):
            print(f"- {line}")
        summary["race_otps"] = race_result.otps
        summary["race_violations"] = len(race_result.violations)
        summary["race_answers"] = dict(race_result.answers)
        summary["race_winners"] = dict(race_result.winners)
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary, indent=2))
    if interrupted:
        return 130
    if error or (race_result is not None and (race_result.violations or not race_result.otps)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
