"""roamsign beside privacyIDEA, the same kind of run, interleaved.

privacyIDEA does not sign anything: what is compared is the OTP part of a flow only. A
privacyIDEA flow is an e-mail token's challenge and response, two calls as a client makes them:

1. `POST /validate/check` with the user and the token's PIN: privacyIDEA checks the PIN, makes
   a challenge and sends the OTP by e-mail (over SMTP, to the load generator's sink);
2. `POST /validate/check` with the user, the `transaction_id` and the OTP read from that e-mail.

A roamsign flow (`bench/flow.py`, PostgreSQL, e-mail channel) does more: the signing request
with its audit event and outbox message, the OTP e-mail, then the signature (a CMS signature
with a time-stamp), its audit event and the signing notice e-mail.

Each server is new for each run, on a fresh PostgreSQL (`tests/pg_server.py`), with
`--workers` processes: roamsign as `python -m app serve` (uvicorn), privacyIDEA under gunicorn
(`--workers N`, sync workers unless `--pi-threads` > 1, then gthread), both on 127.0.0.1. The
same client (one aiohttp session), the same closed loop (`--concurrency` flows in flight for
`--duration` seconds, after `--warmup`), the same meters (server and database process trees'
CPU from /proc, per successful flow; p50/p99 of whole flows). Rounds alternate: roamsign,
privacyIDEA, roamsign, privacyIDEA... (`--rounds`, at least 2).

privacyIDEA runs from its own virtualenv, `.venv-privacyidea` (made here if missing:
`privacyidea==--pi-version`, gunicorn, psycopg2-binary; never the project's `.venv`). Its
configuration is made per run in a temporary directory: `pi.cfg` (PostgreSQL database
`privacyidea`, a random SECRET_KEY and PI_PEPPER, an encryption key and audit signing keys made
by `pi-manage setup`), the tables by `pi-manage setup create_tables`, an admin by
`pi-manage admin add`; then, through its admin API: an SMTP server definition for the sink
(`email.identifier`), a flat-file (passwd) resolver with `--people` users, a realm (the
default), an authentication policy `challenge_response=email`, and one e-mail token per user
with a PIN (`POST /token/init`).

    .venv/bin/python bench/privacyidea.py [--rounds 2] [--duration 8] [--workers 2] [--people 50]

Nothing asserts: it prints figures (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import httpx  # noqa: E402

from app.services.mail.sink import MailSink  # noqa: E402
from bench import flow  # noqa: E402
from bench.flow import run_configuration  # noqa: E402
from bench.harness.clients import LanePool, make_lanes  # noqa: E402
from bench.harness.flows import OTP_TIMEOUT_SECONDS, Mailbox  # noqa: E402
from bench.harness.load import LoadPlan, drain, measured_phase  # noqa: E402
from bench.harness.measure import ConfigResult, PhaseStats, percentile, postmaster_pid  # noqa: E402
from bench.harness.report import fmt, machine, markdown_table, plain_table  # noqa: E402
from tests.harness import Server, free_port, launch  # noqa: E402
from tests.pg_server import TemporaryPostgres  # noqa: E402

ROAMSIGN = "roamsign"
PI_VENV = PROJECT_ROOT / ".venv-privacyidea"
PI_DEFAULT_VERSION = "3.14"
# privacyIDEA's own venv: the WSGI server and the PostgreSQL driver it is served with here.
PI_EXTRAS = ("gunicorn==27.0.1", "psycopg2-binary==2.9.13")
PI_DATABASE = "privacyidea"
PI_REALM = "bench"
PI_RESOLVER = "benchusers"
PI_SMTP_IDENTIFIER = "benchsink"
PI_PIN = "bench-pin"  # every user's token PIN; a benchmark's, never a real one
ADMIN_NAME = "benchadmin"
SETUP_TIMEOUT_SECONDS = 300.0  # one pi-manage or pip step
OTP_PATTERN = re.compile(r"\b(\d{6,8})\b")
# PI_HASH_ALGO_PARAMS: None keeps privacyIDEA's default (argon2id, 9 rounds, 64 MiB, 4 lanes:
# ~0.5 s a PIN check here); "light" is its own TestingConfig's (1 round, 8 KiB, 1 lane).
PIN_HASHES: dict[str, dict[str, int] | None] = {
    "default": None,
    "light": {"argon2__rounds": 1, "argon2__memory_cost": 8, "argon2__parallelism": 1},
}

COLUMNS = (
    "round",
    "server",
    "flows/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "generator CPU %",
    "server CPU %",
    "database CPU %",
    "other CPU %",
    "server+db CPU ms/flow",
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


# ------------------------------------------------------------------ privacyIDEA's virtualenv


def pi_bin(name: str) -> Path:
    return PI_VENV / "bin" / name


def installed_version() -> str | None:
    python = pi_bin("python")
    if not python.exists():
        return None
    found = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('privacyidea'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def ensure_venv(version: str) -> str:
    """privacyIDEA `version` in `.venv-privacyidea` (made with this interpreter if missing);
    returns the version installed."""
    if installed_version() == version:
        return version
    if not pi_bin("python").exists():
        subprocess.run(
            [sys.executable, "-m", "venv", str(PI_VENV)], check=True, timeout=SETUP_TIMEOUT_SECONDS
        )
    print(f"  installing privacyidea=={version} into {PI_VENV.name}", flush=True)
    subprocess.run(
        [str(pi_bin("pip")), "install", "-q", f"privacyidea=={version}", *PI_EXTRAS],
        check=True,
        timeout=SETUP_TIMEOUT_SECONDS * 3,
    )
    found = installed_version()
    if found != version:
        raise RuntimeError(f"{PI_VENV.name} holds privacyidea {found}, not {version}")
    return found


# ------------------------------------------------------------------ privacyIDEA's setup


def pi_config(directory: Path, database_url: str, hash_params: dict[str, Any] | None) -> str:
    """pi.cfg for one run: its keys and secrets new each time, files under `directory`;
    `hash_params` (PI_HASH_ALGO_PARAMS) replaces the PIN hash's default cost if given."""
    values: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SECRET_KEY": secrets.token_hex(32),
        "PI_PEPPER": secrets.token_hex(16),
        "PI_ENCFILE": str(directory / "enckey"),
        "PI_AUDIT_KEY_PRIVATE": str(directory / "private.pem"),
        "PI_AUDIT_KEY_PUBLIC": str(directory / "public.pem"),
        "PI_AUDIT_SQL_TRUNCATE": True,
        "PI_LOGFILE": str(directory / "privacyidea.log"),
        "PI_LOGLEVEL": 30,  # logging.WARNING, as roamsign's bench server
        "PI_UUID_FILE": str(directory / "uuid.txt"),
        "PI_NODE": "bench",
        "SUPERUSER_REALM": ["superuser"],
    }
    if hash_params is not None:
        values["PI_HASH_ALGO_PARAMS"] = hash_params
    return "".join(f"{key} = {value!r}\n" for key, value in values.items())


def pi_environment(directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PRIVACYIDEA_CONFIGFILE": str(directory / "pi.cfg"),
        "PI_CONFIG_NAME": "production",
    }


def pi_manage(directory: Path, *arguments: str) -> None:
    done = subprocess.run(
        [str(pi_bin("pi-manage")), *arguments],
        env=pi_environment(directory),
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"pi-manage {' '.join(arguments[:2])} failed ({done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-2000:]}"
        )


def user_name(number: int) -> str:
    return f"bench{number}"


def user_email(number: int) -> str:
    return f"bench{number}@jdn.gov.my"


def passwd_file(people: int) -> str:
    """privacyIDEA's flat-file resolver reads /etc/passwd lines; the e-mail address is the
    fifth comma-separated field of the GECOS field."""
    return "".join(
        f"{user_name(i)}:x:{10000 + i}:{10000 + i}:Bench Person {i},,,,{user_email(i)}"
        f":/nonexistent:/usr/sbin/nologin\n"
        for i in range(people)
    )


def start_privacyidea(directory: Path, port: int, workers: int, threads: int) -> Server:
    """gunicorn on 127.0.0.1: `workers` processes, sync workers (one request at a time each)
    or gthread with `threads` threads each; the app from privacyIDEA's own factory."""
    worker_class = ("--worker-class", "gthread", "--threads", str(threads)) if threads > 1 else ()
    return launch(
        [
            str(pi_bin("gunicorn")),
            *("--workers", str(workers), *worker_class),
            *("--bind", f"127.0.0.1:{port}", "--log-level", "warning"),
            "privacyidea.app:create_app(config_name='production', silent=True)",
        ],
        env=pi_environment(directory),
        port=port,
        log_path=directory / "gunicorn.log",
        ready_path="/healthz/livez",
        ready_seconds=120.0,
    )


def admin_call(client: httpx.Client, method: str, path: str, data: dict[str, Any]) -> Any:
    response = client.request(method, path, json=data)
    body = response.json() if response.content else {}
    if response.status_code != 200 or not body.get("result", {}).get("status"):
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
    return body["result"].get("value")


def configure(
    base_url: str, admin_password: str, smtp_port: int, passwd: Path, people: int
) -> None:
    """Through the admin API: the sink as SMTP server, users, realm, policy, e-mail tokens."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        token = admin_call(
            client, "POST", "/auth", {"username": ADMIN_NAME, "password": admin_password}
        )["token"]
        client.headers["PI-Authorization"] = token
        admin_call(
            client,
            "POST",
            f"/smtpserver/{PI_SMTP_IDENTIFIER}",
            {"server": "127.0.0.1", "port": smtp_port, "sender": "privacyidea@jdn.gov.my"},
        )
        admin_call(client, "POST", "/system/setConfig", {"email.identifier": PI_SMTP_IDENTIFIER})
        admin_call(
            client,
            "POST",
            f"/resolver/{PI_RESOLVER}",
            {"type": "passwdresolver", "fileName": str(passwd)},
        )
        admin_call(client, "POST", f"/realm/{PI_REALM}", {"resolvers": PI_RESOLVER})
        admin_call(client, "POST", f"/defaultrealm/{PI_REALM}", {})
        admin_call(
            client,
            "POST",
            "/policy/bench-email-challenge",
            {
                "scope": "authentication",
                "action": "challenge_response=email",
                "realm": PI_REALM,
                "active": True,
            },
        )

        def enrol(number: int) -> None:
            admin_call(
                client,
                "POST",
                "/token/init",
                {
                    "type": "email",
                    "user": user_name(number),
                    "realm": PI_REALM,
                    "email": user_email(number),
                    "pin": PI_PIN,
                },
            )

        # Each enrolment hashes a PIN (argon2 by default, ~0.5 s): a few at once.
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(enrol, range(people)))


def set_up(
    directory: Path, pg: TemporaryPostgres, smtp_port: int, args: argparse.Namespace
) -> Server:
    """A configured privacyIDEA under gunicorn, on a fresh database `privacyidea` of `pg`."""
    url = pg.url.replace("postgresql+psycopg://", "postgresql+psycopg2://")
    (directory / "pi.cfg").write_text(pi_config(directory, url, PIN_HASHES[args.pi_hash]))
    passwd = directory / "users.passwd"
    passwd.write_text(passwd_file(args.people))
    admin_password = secrets.token_urlsafe(24)
    began = time.perf_counter()
    pi_manage(directory, "setup", "create_enckey")
    pi_manage(directory, "setup", "create_audit_keys")
    pi_manage(directory, "setup", "create_tables")
    pi_manage(directory, "admin", "add", ADMIN_NAME, "-p", admin_password)
    server = start_privacyidea(directory, free_port(), args.workers, args.pi_threads)
    try:
        configure(server.url, admin_password, smtp_port, passwd, args.people)
    except BaseException:
        server.stop()
        raise
    print(
        f"  privacyIDEA set up ({args.people} users, e-mail tokens) in "
        f"{time.perf_counter() - began:.1f} s",
        flush=True,
    )
    return server


# ------------------------------------------------------------------ the load


class RecipientMailbox(Mailbox):
    """`Mailbox`, keyed by the recipient's address: privacyIDEA's OTP e-mails carry no
    request id, and a user has one flow at a time."""

    def on_message(self, _path: Path | None, message: EmailMessage) -> None:
        loop, recipient = self._loop, str(message["To"] or "").strip().lower()
        if not recipient:
            self.others += 1
        elif loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._arrived, recipient, message)

    def forget(self, recipient: str) -> None:
        """Drop an e-mail left by an earlier, failed flow of this user."""
        self._early.pop(recipient, None)


def otp_of(message: EmailMessage) -> str | None:
    body = message.get_body(("plain", "html"))
    text = body.get_content() if body is not None else str(message.get_payload())
    found = OTP_PATTERN.search(str(text))
    return found.group(1) if found else None


class PiDriver:
    """One flow: /validate/check with the PIN (the OTP is e-mailed), then with the OTP."""

    def __init__(self, lanes: LanePool, mailbox: RecipientMailbox, people: int) -> None:
        self._lanes, self._mailbox, self._people = lanes, mailbox, people

    async def flow(self, slot: int, stats: PhaseStats, started_at: float) -> None:
        stats.started += 1
        number = slot % self._people  # one slot, one user: one flow at a time per user
        user, address = user_name(number), user_email(number)
        self._mailbox.forget(address)
        steps: dict[str, float] = {}
        step, lap_start = "challenge", time.perf_counter()
        try:
            async with self._lanes.client() as client:
                asked = await client.post("/validate/check", json={"user": user, "pass": PI_PIN})
                body = asked.json() if asked.status_code == 200 else {}
                transaction = body.get("detail", {}).get("transaction_id")
                if asked.status_code != 200 or not transaction:
                    stats.failures[f"challenge {asked.status_code}"] += 1
                    return
                steps["challenge"], lap_start = time.perf_counter() - lap_start, time.perf_counter()
                step = "otp"
                async with asyncio.timeout(OTP_TIMEOUT_SECONDS):
                    message = await self._mailbox.wait(address)
                otp = otp_of(message)
                if otp is None:
                    stats.failures["no OTP in the e-mail"] += 1
                    return
                steps["e-mail"], lap_start = time.perf_counter() - lap_start, time.perf_counter()
                step = "response"
                answered = await client.post(
                    "/validate/check",
                    json={"user": user, "transaction_id": transaction, "pass": otp},
                )
            value = answered.json().get("result", {}).get("value")
            if answered.status_code != 200 or value is not True:
                stats.failures[f"response {answered.status_code} value={value}"] += 1
                return
            steps["response"] = time.perf_counter() - lap_start
            stats.success(started_at, steps)
        except TimeoutError:
            stats.failures[f"{step} timeout"] += 1
        except httpx.TimeoutException as exc:
            stats.failures[f"{step} timeout ({type(exc).__name__})"] += 1
        except httpx.TransportError as exc:
            stats.failures[f"{step} transport {type(exc).__name__}"] += 1
        except ValueError as exc:  # an answer that is not JSON
            stats.failures[f"{step} {type(exc).__name__}"] += 1


class SteadyPhase(PhaseStats):
    """A closed loop's figures from `window_start` on: a flow that ends before it is warm-up.

    The harness drains its warm-up before the measured phase, so the phase starts empty and
    its first flows end one flow's latency into the window: nothing against roamsign's
    ~0.1-0.5 s, but privacyIDEA's flows take seconds at 32 in flight, so here the warm-up runs
    on into the window without a pause (a steady state), as a longer run would see it."""

    window_start: float = 0.0
    warmup_failures: int = 0

    def success(self, started_at: float, steps: dict[str, float]) -> None:
        if time.perf_counter() >= self.window_start:
            super().success(started_at, steps)


async def pi_closed_loop(driver: PiDriver, concurrency: int, stats: SteadyPhase) -> None:
    """`concurrency` flows always in flight until `stats.window_end`, then drained."""

    async def slot(number: int) -> None:
        while time.perf_counter() < stats.window_end:
            await driver.flow(number, stats, time.perf_counter())

    tasks = {asyncio.create_task(slot(number)) for number in range(concurrency)}
    await asyncio.wait(tasks, timeout=max(0.0, stats.window_end - time.perf_counter()))
    await drain(tasks, stats)


async def load_privacyidea(
    server: Server,
    mailbox: RecipientMailbox,
    plan: LoadPlan,
    people: int,
    trees: dict[str, int | None],
    result: ConfigResult,
) -> None:
    mailbox.bind(asyncio.get_running_loop())
    lanes = make_lanes(plan.client, server.url, None, plan.concurrency)
    try:
        driver = PiDriver(lanes, mailbox, people)
        closed = SteadyPhase(f"closed loop ({plan.concurrency} in flight)")
        closed.window_start = time.perf_counter() + plan.warmup_seconds
        closed.window_end = closed.window_start + plan.duration
        closed.duration = plan.duration
        loop = asyncio.create_task(pi_closed_loop(driver, plan.concurrency, closed))
        await asyncio.sleep(plan.warmup_seconds)
        if closed.errors:
            print(f"  warm-up failures: {dict(closed.failures)}", flush=True)
            closed.warmup_failures = closed.errors
            closed.failures.clear()

        async def rest() -> None:
            await loop

        await measured_phase(rest(), plan.duration, closed, mailbox, trees)
        result.phases.append(closed)
        print(
            f"  email closed loop: {closed.rate:.1f} flows/s, {closed.errors} errors"
            + (f" {dict(closed.failures)}" if closed.errors else ""),
            flush=True,
        )
    finally:
        mailbox.unbind()
        await lanes.aclose()


def run_privacyidea(args: argparse.Namespace, plan: LoadPlan, version: str) -> ConfigResult:
    name = f"privacyIDEA {version}"
    result = ConfigResult(name, args.workers)
    print(
        f"== {name}, postgresql, {args.workers} gunicorn workers, PIN hash {args.pi_hash}, "
        f"{args.pi_concurrency} in flight",
        flush=True,
    )
    server: Server | None = None
    with (
        tempfile.TemporaryDirectory(prefix="roamsign-pibench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            directory = Path(tmp)
            mailbox = RecipientMailbox()
            sink = MailSink(None, on_message=mailbox.on_message).start()
            stack.callback(sink.stop)
            pg = TemporaryPostgres(database=PI_DATABASE).start()
            stack.callback(pg.stop)
            server = set_up(directory, pg, sink.port, args)
            stack.callback(server.stop)
            trees = {"server": server.process.pid, "database": postmaster_pid(pg)}
            asyncio.run(load_privacyidea(server, mailbox, plan, args.people, trees, result))
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            if server is not None:
                result.log_tail = server.tail()
    return result


# ------------------------------------------------------------------ report


def table_rows(measured: list[Measured]) -> list[list[str]]:
    rows = []
    for m in measured:
        phase = m.closed
        if phase is None:
            rows.append([str(m.round), m.server, "failed", *(["-"] * (len(COLUMNS) - 3))])
            continue
        rows.append(
            [
                str(m.round),
                m.server,
                fmt(phase.rate, 1),
                fmt(percentile(phase.latencies_ms, 0.50)),
                fmt(percentile(phase.latencies_ms, 0.99)),
                str(phase.errors),
                fmt(phase.cpu.get("generator")),
                fmt(phase.cpu.get("server")),
                fmt(phase.cpu.get("database")),
                fmt(phase.cpu.get("other")),
                fmt(phase.cpu_ms_per_flow, 1),
            ]
        )
    return rows


def ratios(measured: list[Measured]) -> list[str]:
    """Per round: roamsign's flows/s ÷ privacyIDEA's, and privacyIDEA's CPU ms ÷ roamsign's."""
    by_round: dict[int, dict[str, PhaseStats]] = {}
    for m in measured:
        if m.closed is not None:
            by_round.setdefault(m.round, {})[ROAMSIGN if m.server == ROAMSIGN else "pi"] = m.closed
    lines = []
    for number, phases in sorted(by_round.items()):
        ours, theirs = phases.get(ROAMSIGN), phases.get("pi")
        if ours is None or theirs is None or not theirs.rate:
            continue
        cpu = (
            f"; privacyIDEA's server+db CPU a flow ÷ roamsign's: "
            f"{theirs.cpu_ms_per_flow / ours.cpu_ms_per_flow:.2f}"
            if ours.cpu_ms_per_flow and theirs.cpu_ms_per_flow
            else ""
        )
        lines.append(
            f"round {number}: roamsign/privacyIDEA flows/s {ours.rate / theirs.rate:.2f}{cpu}"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=2, help="server processes, both servers")
    parser.add_argument("--pi-threads", type=int, default=1, help="gthread threads a worker")
    parser.add_argument("--pi-version", default=PI_DEFAULT_VERSION)
    parser.add_argument(
        "--pi-hash",
        choices=tuple(PIN_HASHES),
        default="default",
        help="the PIN hash's cost: privacyIDEA's default, or its own test configuration's",
    )
    parser.add_argument(
        "--pi-concurrency", type=int, default=None, help="privacyIDEA's flows in flight"
    )
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of the closed loop")
    parser.add_argument("--warmup", type=float, default=15.0, help="uncounted seconds before it")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--summary-json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if min(args.workers, args.pi_threads, args.concurrency, args.rounds) < 1:
        parser.error("--workers, --pi-threads, --concurrency and --rounds must be at least 1")
    args.pi_concurrency = args.pi_concurrency or args.concurrency
    if args.people < max(args.concurrency, args.pi_concurrency):
        parser.error("--people must be at least --concurrency (one flow at a time a person)")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    version = ensure_venv(args.pi_version)
    plan = LoadPlan(
        concurrency=args.concurrency,
        duration=args.duration,
        healthz_seconds=3.0,
        warmup_seconds=args.warmup,
        rate=None,
        max_in_flight=256,
        client="aiohttp",
        channels=("email",),
        open_runs=0,  # the closed loop only, as privacyIDEA's
    )
    roamsign_args = flow.parse_args(
        [
            *("--db", "postgresql", "--channel", "email", "--people", str(args.people)),
            *("--workers", str(args.workers), "--concurrency", str(args.concurrency)),
        ]
    )
    pi_name = f"privacyIDEA {version}"
    if args.pi_hash != "default":
        pi_name += f" ({args.pi_hash} PIN hash)"
    pi_plan = dataclasses.replace(plan, concurrency=args.pi_concurrency)
    measured: list[Measured] = []
    for number in range(1, args.rounds + 1):
        roamsign = run_configuration("postgresql", args.workers, roamsign_args, plan)
        measured.append(Measured(number, ROAMSIGN, roamsign))
        measured.append(Measured(number, pi_name, run_privacyidea(args, pi_plan, version)))
    rows = table_rows(measured)
    summary = ratios(measured)
    print()
    print(plain_table(rows, COLUMNS, TEXT_COLUMNS))
    print("", *summary, sep="\n")
    for m in measured:
        if m.result.error:
            print(f"\n{m.server} (round {m.round}): FAILED: {m.result.error}")
        if m.result.log_tail:
            print(f"--- its server log ---\n{m.result.log_tail}")
    workers = (
        f"gthread, {args.pi_threads} threads a worker" if args.pi_threads > 1 else "sync workers"
    )
    command = " ".join(
        ["python", "bench/privacyidea.py", *(argv if argv is not None else sys.argv[1:])]
    )
    print("\n---- markdown ----\n")
    print(f"`{command}` on {machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"(roamsign: `python -m app serve --workers {args.workers}`; {pi_name}: gunicorn "
        f"--workers {args.workers}, {workers}, PIN hash {args.pi_hash}, "
        f"{args.pi_concurrency} flows in flight; both on PostgreSQL)\n"
    )
    print(markdown_table(rows, COLUMNS, TEXT_COLUMNS))
    print("", *(f"- {line}" for line in summary), sep="\n")
    if args.summary_json is not None:
        figures = [
            {
                "round": m.round,
                "server": m.server,
                "flows_s": m.closed.rate if m.closed else None,
                "cpu_ms_per_flow": m.closed.cpu_ms_per_flow if m.closed else None,
                "p50_ms": percentile(m.closed.latencies_ms, 0.5) if m.closed else None,
                "p99_ms": percentile(m.closed.latencies_ms, 0.99) if m.closed else None,
                "errors": m.closed.errors if m.closed else None,
            }
            for m in measured
        ]
        args.summary_json.write_text(json.dumps({"figures": figures}, indent=2))
    return 1 if any(m.result.error for m in measured) else 0


if __name__ == "__main__":
    sys.exit(main())
