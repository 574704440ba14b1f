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
import base64
import contextlib
import gc
import hashlib
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import aiohttp
import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQLITE_FILE = "roamsign.db"
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from app.clock import SystemClock  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.services.mail.sink import MailSink  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.factories import Factory, Person  # noqa: E402
from tests.helpers import otp_from_message  # noqa: E402
from tests.mobile_app import MobileApp  # noqa: E402
from tests.pg_server import TemporaryPostgres  # noqa: E402

# Hard caps: nothing waits longer than this, whatever the server does.
REQUEST_TIMEOUT_SECONDS = 30.0
OTP_TIMEOUT_SECONDS = 30.0
INBOX_WAIT_SECONDS = 25  # the app's long-poll (`wait`), the contract's maximum
ACTIVATION_MAIL_SECONDS = 30.0  # for the seeded devices' activation e-mails to be delivered
NOTICE_SETTLE_SECONDS = 120.0  # after a phase, for its flows' signing notices to be delivered
DRAIN_CAP_SECONDS = 60.0  # after a phase's end, for the flows still in flight
SERVER_START_SECONDS = 60.0
SERVER_STOP_SECONDS = 15.0
LOG_TAIL_LINES = 40
MAX_PEOPLE = 9999  # tests.factories makes MyKads 90010114NNNN

# `--channel` value -> the `channel` of POST /v1/signing-requests (the contract's spelling).
CHANNELS = {"email": "email", "device": "mobile"}
# The median step between the create and the sign, per channel.
OTP_STEP = {"email": "e-mail", "device": "inbox"}

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- measurements


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[int(rank) - 1]


def _process_tree_ticks(root: int) -> int:
    """utime + stime (clock ticks) of `root` and every live descendant, from /proc."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        pid, ppid = int(entry.name), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def serving_processes_peak_rss(root: int) -> list[float]:
    """VmHWM (peak RSS, MiB) of each process that serves requests under `root`: the workers
    that `serve --workers N` spawns, or `root` itself when it serves alone."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    workers = [
        pid
        for pid in children.get(root, [])
        if b"spawn_main" in _read_bytes(Path(f"/proc/{pid}/cmdline"))
    ]
    peaks = []
    for pid in workers or [root]:
        for line in _read_bytes(Path(f"/proc/{pid}/status")).decode().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)  # kB
    return peaks


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _machine_busy_ticks() -> int:
    """CPU ticks spent by the whole machine (every CPU) outside idle and iowait, /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0
    ticks = [int(value) for value in first[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return sum(ticks[:8]) - ticks[3] - ticks[4]


class CpuMeter:
    """CPU time over one phase, as % of one core: this process (the load generator and the
    SMTP sink's thread), the server's and the database's process trees, and whatever else ran
    on the machine meanwhile ("other": other people's jobs share these cores)."""

    def __init__(self, trees: dict[str, int | None]) -> None:
        self._trees = trees
        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._ticks = {name: _process_tree_ticks(pid) for name, pid in trees.items() if pid}
        self._machine = _machine_busy_ticks()

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self._wall
        self.wall = wall
        shares: dict[str, float | None] = {
            "generator": 100 * (time.process_time() - self._own) / wall
        }
        for name, pid in self._trees.items():
            if pid is None:
                shares[name] = None
                continue
            used = (_process_tree_ticks(pid) - self._ticks[name]) / CLOCK_TICKS
            shares[name] = 100 * used / wall
        machine = 100 * (_machine_busy_ticks() - self._machine) / CLOCK_TICKS / wall
        ours = sum(share for share in shares.values() if share is not None)
        shares["other"] = max(0.0, machine - ours)
        return shares


@dataclass
class PhaseStats:
    """What one phase measured: latencies of successful flows and failures by kind."""

    name: str
    channel: str = "email"
    duration: float = 0.0
    window_end: float = 0.0  # perf_counter() at the end of the measured window
    started: int = 0
    ok_in_window: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    # Of successful flows: ms spent in each step (create, e-mail or inbox, sign).
    steps_ms: dict[str, list[float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float | None] = field(default_factory=dict)
    target_rate: float | None = None
    # Server+db CPU from the phase's start until its flows and their signing notices were
    # done, per successful flow (None: not measured, or no database process to add).
    cpu_ms_per_flow: float | None = None
    notices_behind: int = 0  # signing notices not yet delivered when the window closed
    notices_drained_s: float = 0.0  # how long after the phase's flows they took to arrive
    notices_missing: int = 0  # still missing after NOTICE_SETTLE_SECONDS

    def success(self, started_at: float, steps: dict[str, float]) -> None:
        finished = time.perf_counter()
        for step, seconds in steps.items():
            self.steps_ms.setdefault(step, []).append(seconds * 1000)
        self.latencies_ms.append((finished - started_at) * 1000)
        if finished <= self.window_end:
            self.ok_in_window += 1

    @property
    def rate(self) -> float:
        return self.ok_in_window / self.duration if self.duration else 0.0

    @property
    def errors(self) -> int:
        return sum(self.failures.values())

    @property
    def server_errors(self) -> int:
        """5xx answers, timeouts and broken connections: what points at the server."""
        return sum(
            count
            for kind, count in self.failures.items()
            if " 5" in kind or "timeout" in kind.lower() or "transport" in kind
        )


@dataclass
class ConfigResult:
    name: str
    workers: int
    healthz_rps: float = 0.0
    healthz_errors: Counter[str] = field(default_factory=Counter)
    healthz_cpu: dict[str, float | None] = field(default_factory=dict)
    phases: list[PhaseStats] = field(default_factory=list)
    error: str | None = None
    log_tail: str | None = None
    # Peak resident set (VmHWM, MiB) of each process serving requests, read after the load.
    peak_rss_mib: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=SERVER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                # Its own session (start_new_session): the group is uvicorn and its workers.
                with contextlib.suppress(OSError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=SERVER_STOP_SECONDS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    *, database_url: str, key_file: Path, var_dir: Path, smtp_port: int, workers: int
) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "ROAMSIGN_PROFILE": "production",
        "ROAMSIGN_DATABASE_URL": database_url,
        "ROAMSIGN_MASTER_KEY_FILE": str(key_file),
        "ROAMSIGN_VAR_DIR": str(var_dir),
        "ROAMSIGN_SMTP_HOST": "127.0.0.1",
        "ROAMSIGN_SMTP_PORT": str(smtp_port),
        "ROAMSIGN_LOG_LEVEL": "WARNING",
        # A benchmark signs for a few people as fast as it can: far past the abuse limits.
        "ROAMSIGN_OTPS_PER_PERSON_PER_MINUTE": "1000000",
        "ROAMSIGN_OTPS_PER_SIGNER_PER_MINUTE": "1000000",
    }
    return launch(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        port=port,
        log_path=var_dir / f"server-{port}.log",
        ready_path="/readyz",
    )


def launch(
    command: list[str], *, env: dict[str, str], port: int, log_path: Path, ready_path: str
) -> Server:
    """Start a server (`command`, listening on `port`, in a session of its own, its output to
    `log_path`) and wait until `ready_path` answers 200."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{server.tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}{ready_path}", timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"the server was not ready within {SERVER_START_SECONDS} s:\n{server.tail()}"
    )


def seed(settings: Settings, people: int) -> tuple[str, list[Person]]:
    """The CA, one signer API client and `people` people with ECDSA P-256 roaming credentials."""
    runtime = Runtime.build(settings, SystemClock())
    try:
        factory = Factory(runtime)
        factory.init_ca()
        key = factory.client("bench-signer", "signer")
        made = [
            factory.person(
                name=f"Bench Person {i}",
                email=f"bench{i}@jdn.gov.my",
                key_algorithm="ecdsa-p256",
            )
            for i in range(people)
        ]
    finally:
        runtime.close()
    return key, made


def seed_devices(settings: Settings, people: list[Person]) -> dict[str, MobileApp]:
    """An active MyGPKI Mobile device for each person, registered and activated through the
    real services (`Factory.mobile_device`), as the simulated app holding its private key;
    by MyKad. The registrations all come from one client address ("factory"): its limit per
    address is raised for the seeding (the server's own settings are untouched)."""
    seeding = settings.model_copy(update={"device_registrations_per_address": max(len(people), 1)})
    runtime = Runtime.build(seeding, SystemClock())
    try:
        factory = Factory(runtime)
        return {person.mykad: factory.mobile_device(person) for person in people}
    finally:
        runtime.close()


# --------------------------------------------------------------------------- the load


class Mailbox:
    """OTP e-mails by request id, handed from the sink's thread to the event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[str, asyncio.Future[EmailMessage]] = {}
        self._early: dict[str, EmailMessage] = {}
        # E-mails without a request id (device activation notices, signing notices), counted
        # in the sink's thread (an int increment under the GIL).
        self.others = 0
        # How many of those the server owes: one activation notice per seeded device, one
        # signing notice per signature (every seeded person has an e-mail address).
        self.owed = 0

    def notices_behind(self) -> int:
        return max(0, self.owed - self.others)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def unbind(self) -> None:
        self._loop = None
        self._waiting.clear()
        self._early.clear()

    def on_message(self, _path: Path | None, message: EmailMessage) -> None:
        """MailSink's callback, in the sink's thread."""
        loop, request_id = self._loop, message["X-Roamsign-Request-Id"]
        if not request_id:
            self.others += 1
        elif loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(self._arrived, str(request_id), message)

    def _arrived(self, request_id: str, message: EmailMessage) -> None:
        waiter = self._waiting.pop(request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
        else:  # the e-mail beat the 201 to us
            self._early[request_id] = message

    async def wait(self, request_id: str) -> EmailMessage:
        """The OTP e-mail of this request; the caller bounds the wait."""
        early = self._early.pop(request_id, None)
        if early is not None:
            return early
        assert self._loop is not None
        waiter: asyncio.Future[EmailMessage] = self._loop.create_future()
        self._waiting[request_id] = waiter
        try:
            return await waiter
        finally:
            self._waiting.pop(request_id, None)


class IdlePeople:
    """People with no flow in flight; a flow takes a random one and gives it back."""

    def __init__(self, people: list[Person], rng: random.Random) -> None:
        self._idle = list(people)
        self._rng = rng
        self._returned = asyncio.Condition()

    def try_take(self) -> Person | None:
        if not self._idle:
            return None
        index = self._rng.randrange(len(self._idle))
        self._idle[index], self._idle[-1] = self._idle[-1], self._idle[index]
        return self._idle.pop()

    async def take(self) -> Person:
        async with self._returned:
            await self._returned.wait_for(lambda: bool(self._idle))
            person = self.try_take()
            assert person is not None
            return person

    async def give_back(self, person: Person) -> None:
        async with self._returned:
            self._idle.append(person)
            self._returned.notify()


class Answer(Protocol):
    """What the flows read of an answer: `httpx.Response` or `Reply`."""

    @property
    def status_code(self) -> int: ...

    def json(self) -> Any: ...


class HttpClient(Protocol):
    """What the flows call on a client: `httpx.AsyncClient` or `AiohttpClient`."""

    async def get(self, url: str, /) -> Answer: ...

    async def post(self, url: str, /, *, json: Any) -> Answer: ...

    async def send(self, request: httpx.Request, /) -> Answer: ...


class LanePool(Protocol):
    """Lends a client for one request: `Lanes` (httpx) or `AiohttpLanes`."""

    base_url: str

    def client(self) -> AbstractAsyncContextManager[HttpClient]: ...

    async def aclose(self) -> None: ...


class Lanes:
    """`httpx.AsyncClient`s with one connection each, lent out for one request at a time.

    One AsyncClient shared by 32 concurrent requests spends ~6-7 ms of CPU per request in its
    connection pool on this kind of machine, against ~2 ms when each request has a client to
    itself (see encode/httpx#3215): on two shared cores that would be the benchmark measuring
    itself. A lane is made when none is idle, so there are as many as requests in flight.
    `shared=True` (`--client shared`) lends out one client with a big pool instead, for
    comparison.
    """

    def __init__(self, base_url: str, api_key: str | None, *, shared: bool = False) -> None:
        self.base_url = base_url
        # No API key for the devices' own lanes: the app authenticates by its signatures.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []
        self._shared = self._new(connections=1024) if shared else None

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._shared is not None:
            yield self._shared
            return
        client = self._idle.pop() if self._idle else self._new()
        try:
            yield client
        finally:
            self._idle.append(client)

    def _new(self, connections: int = 1) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._all.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._all:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._all.clear()
        self._idle.clear()


class Reply:
    """An aiohttp answer, read whole, with the few parts of `httpx.Response` the flows read."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self._body = body

    def json(self) -> Any:
        return json.loads(self._body)


class AiohttpClient:
    """One `aiohttp.ClientSession` behind the part of `httpx.AsyncClient`'s API the flows use.

    Its errors are raised as httpx's (timeouts as `httpx.TimeoutException`, the rest as
    `httpx.TransportError`), so the flows count failures alike whichever client runs them.
    Signed device requests are built as `httpx.Request`s (tests.mobile_app signs those) and
    sent as they are: same method, URL, headers and body.
    """

    def __init__(self, base_url: str, headers: dict[str, str], connections: int) -> None:
        self._session = aiohttp.ClientSession(
            base_url=base_url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(limit=connections),
        )

    async def get(self, url: str, /) -> Reply:
        return await self._call("GET", url)

    async def post(self, url: str, /, *, json: Any) -> Reply:
        return await self._call("POST", url, json=json)

    async def send(self, request: httpx.Request, /) -> Reply:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        return await self._call(
            request.method, str(request.url), headers=headers, data=request.content or None
        )

    async def _call(self, method: str, url: str, **kwargs: Any) -> Reply:
        try:
            async with self._session.request(method, url, **kwargs) as response:
                return Reply(response.status, await response.read())
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"{method} {url}: no answer in time") from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(f"{method} {url}: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        await self._session.close()


class AiohttpLanes:
    """`--client aiohttp`: one aiohttp session (a pool of keep-alive connections) for every
    request in flight. Its client costs ~0.08 ms of CPU a request here, against ~0.5 ms for an
    httpx lane (measured against a bare uvicorn app, 32 in flight), so the load generator takes
    less of the cores it shares with the server and `/healthz` measures the server more than
    the client."""

    def __init__(self, base_url: str, api_key: str | None, connections: int) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url, self._headers, self._connections = base_url, headers, connections
        self._client: AiohttpClient | None = None

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[AiohttpClient]:
        if self._client is None:  # made inside the running loop, as aiohttp requires
            self._client = AiohttpClient(self.base_url, self._headers, self._connections)
        yield self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _problem_code(response: Answer) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(response.json().get("code", "-"))
    return "-"


CLIENTS = ("lanes", "shared", "aiohttp")


def make_lanes(kind: str, base_url: str, api_key: str | None, in_flight: int) -> LanePool:
    """The load generator's HTTP client (`--client`): see `Lanes` and `AiohttpLanes`."""
    if kind == "aiohttp":
        return AiohttpLanes(base_url, api_key, connections=in_flight)
    return Lanes(base_url, api_key, shared=kind == "shared")


class StepFailed(Exception):
    """A step of a flow refused; the message is the kind the failure is counted under."""


class DeviceInbox:
    """The people's MyGPKI Mobile apps (by MyKad) fetching their OTP messages, as the real app
    does: `GET /v1/devices/{id}/messages?wait=25`, signed (RFC 9421, the app's P-256 key, a
    fresh nonce) by `tests.mobile_app.MobileApp`, on lanes of their own that carry no API key.

    The app asks once the OTP request has answered (as after a push notification), so the
    message is normally there already; the long-poll only matters when it is not."""

    def __init__(self, lanes: LanePool, apps: dict[str, MobileApp]) -> None:
        self._lanes = lanes
        self._apps = apps

    async def otp(self, person: Person, request_id: str) -> str:
        """The OTP of this request from the person's inbox; the caller bounds the wait.
        Messages of other requests (an earlier flow that gave up) are passed over."""
        app = self._apps[person.mykad]
        while True:
            # As MobileApp.fetch_request builds it, with no client needed to build it.
            request = app.sign(
                httpx.Request(
                    "GET",
                    f"{self._lanes.base_url}/v1/devices/{app.device_id}/messages",
                    params={"wait": INBOX_WAIT_SECONDS},
                )
            )
            async with self._lanes.client() as client:
                response = await client.send(request)
            if response.status_code != 200:
                raise StepFailed(f"inbox {response.status_code} {_problem_code(response)}")
            for message in response.json()["messages"]:
                if message["request_id"] == request_id:
                    return str(message["otp"])


class FlowDriver:
    """Runs complete flows over one OTP channel (`email`, or `device` with `inbox`) and
    records them in the current phase's stats."""

    def __init__(
        self,
        lanes: LanePool,
        mailbox: Mailbox,
        label: str,
        *,
        channel: str = "email",
        inbox: DeviceInbox | None = None,
    ) -> None:
        if channel not in CHANNELS or (channel == "device") != (inbox is not None):
            raise ValueError("the device channel needs the inbox, and only it does")
        self._lanes = lanes
        self._mailbox = mailbox
        self._label = label
        self._channel = channel
        self._inbox = inbox
        self._counter = 0

    def _document_hash(self) -> str:
        self._counter += 1
        text = f"roamsign bench {self._label} {self._counter} {uuid.uuid4()}"
        return hashlib.sha256(text.encode()).hexdigest()

    async def flow(self, person: Person, stats: PhaseStats, started_at: float) -> None:
        """One flow; a failure is counted under its step, status and problem code."""
        stats.started += 1
        step = "create"
        steps: dict[str, float] = {}
        lap_start = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal lap_start
            now = time.perf_counter()
            steps[name], lap_start = now - lap_start, now

        try:
            async with self._lanes.client() as client:
                created = await client.post(
                    "/v1/signing-requests",
                    json={
                        "mykad": person.mykad,
                        "document_hash": self._document_hash(),
                        "document_name": f"Bench PV-{self._counter}",
                        "channel": CHANNELS[self._channel],
                    },
                )
            if created.status_code != 201:
                stats.failures[f"{step} {created.status_code} {_problem_code(created)}"] += 1
                return
            request_id = created.json()["id"]
            lap("create")
            step = "otp"
            received = OTP_STEP[self._channel]
            try:
                async with asyncio.timeout(OTP_TIMEOUT_SECONDS):
                    otp = await self._receive(person, request_id)
            except TimeoutError:
                stats.failures[f"otp {received} timeout ({OTP_TIMEOUT_SECONDS:.0f} s)"] += 1
                return
            except StepFailed as refused:
                stats.failures[str(refused)] += 1
                return
            lap(received)
            step = "sign"
            async with self._lanes.client() as client:
                signed = await client.post(
                    f"/v1/signing-requests/{request_id}/signature",
                    json={"otp": otp, "pin": person.pin},
                )
            if signed.status_code != 201:
                stats.failures[f"{step} {signed.status_code} {_problem_code(signed)}"] += 1
                return
            self._mailbox.owed += 1
            lap("sign")
            stats.success(started_at, steps)
        except httpx.TimeoutException as exc:
            stats.failures[f"{step} timeout ({type(exc).__name__})"] += 1
        except httpx.TransportError as exc:
            stats.failures[f"{step} transport {type(exc).__name__}"] += 1

    async def _receive(self, person: Person, request_id: str) -> str:
        if self._inbox is not None:
            return await self._inbox.otp(person, request_id)
        return otp_from_message(await self._mailbox.wait(request_id))


async def drain(tasks: set[asyncio.Task[None]], stats: PhaseStats) -> None:
    """Let the flows in flight finish, up to the cap; cancel and count the rest."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=DRAIN_CAP_SECONDS)
    for task in pending:
        task.cancel()
    if pending:
        stats.failures[f"unfinished {DRAIN_CAP_SECONDS:.0f} s after the phase (cancelled)"] += len(
            pending
        )
        await asyncio.wait(pending, timeout=5)


async def measure_healthz(
    lanes: LanePool, concurrency: int, seconds: float, result: ConfigResult
) -> None:
    ok = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def hammer() -> None:
        nonlocal ok
        while time.perf_counter() < deadline:
            try:
                async with lanes.client() as client:
                    response = await client.get("/healthz")
            except httpx.TimeoutException:
                result.healthz_errors["timeout"] += 1
                continue
            except httpx.TransportError as exc:
                result.healthz_errors[f"transport {type(exc).__name__}"] += 1
                continue
            if response.status_code == 200:
                if time.perf_counter() <= deadline:
                    ok += 1
            else:
                result.healthz_errors[f"{response.status_code}"] += 1

    tasks = {asyncio.create_task(hammer()) for _ in range(concurrency)}
    _done, pending = await asyncio.wait(tasks, timeout=seconds + REQUEST_TIMEOUT_SECONDS + 5)
    for task in pending:
        task.cancel()
    result.healthz_rps = ok / seconds


async def closed_loop(
    driver: FlowDriver, idle: IdlePeople, concurrency: int, seconds: float, stats: PhaseStats
) -> None:
    """`concurrency` flows always in flight: each worker starts its next flow when one ends."""
    start = time.perf_counter()
    deadline = start + seconds
    stats.duration, stats.window_end = seconds, deadline

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                person = await asyncio.wait_for(idle.take(), deadline - time.perf_counter())
            except TimeoutError:
                return
            try:
                await driver.flow(person, stats, time.perf_counter())
            finally:
                await idle.give_back(person)

    tasks = {asyncio.create_task(worker()) for _ in range(concurrency)}
    await asyncio.wait(tasks, timeout=seconds)
    await drain(tasks, stats)


async def open_loop(
    driver: FlowDriver,
    idle: IdlePeople,
    rate: float,
    seconds: float,
    max_in_flight: int,
    stats: PhaseStats,
) -> None:
    """Flows started on a fixed schedule, whatever the completions; latency counts from the
    scheduled start, so a late start (the generator falling behind) is not hidden."""
    start = time.perf_counter()
    deadline = start + seconds
    stats.duration, stats.window_end, stats.target_rate = seconds, deadline, rate
    in_flight: set[asyncio.Task[None]] = set()

    async def one(person: Person, scheduled: float) -> None:
        try:
            await driver.flow(person, stats, scheduled)
        finally:
            await idle.give_back(person)

    tick = 0
    while True:
        scheduled = start + tick / rate
        if scheduled >= deadline:
            break
        tick += 1
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            stats.dropped[f"in-flight cap ({max_in_flight})"] += 1
            continue
        person = idle.try_take()
        if person is None:
            stats.dropped["no idle person"] += 1
            continue
        task = asyncio.create_task(one(person, scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        await asyncio.sleep(remaining)
    await drain(set(in_flight), stats)


@dataclass
class LoadPlan:
    concurrency: int
    duration: float
    healthz_seconds: float
    warmup_seconds: float
    rate: float | None
    max_in_flight: int
    client: str  # CLIENTS
    channels: tuple[str, ...] = ("email",)


async def cpu_over_window(
    phase: Coroutine[None, None, None], seconds: float, trees: dict[str, int | None]
) -> dict[str, float | None]:
    """Run a phase; CPU shares over its measured window only, not the drain after it."""
    meter = CpuMeter(trees)
    task = asyncio.create_task(phase)
    await asyncio.wait({task}, timeout=seconds)
    shares = meter.stop()
    await task
    return shares


def settle_activation_mail(mailbox: Mailbox, expected: int) -> None:
    """Wait (capped) until the seeded devices' activation e-mails, sent by the server once it
    starts, have reached the sink, so their delivery does not run inside a measured phase."""
    mailbox.owed += expected
    deadline = time.perf_counter() + ACTIVATION_MAIL_SECONDS
    while mailbox.notices_behind() and time.perf_counter() < deadline:
        time.sleep(0.05)
    if mailbox.notices_behind():
        print(
            f"  note: {mailbox.others} of {expected} activation e-mails delivered after "
            f"{ACTIVATION_MAIL_SECONDS:.0f} s; measuring anyway",
            flush=True,
        )
        mailbox.owed = mailbox.others  # not owed to any phase


def quiet_collector() -> None:
    """Keep the generator's own garbage collector out of the latencies: a full collection
    walks every object this process holds (the app's modules, the seeded people, the sink,
    ~150,000 objects) and stopped every flow in flight for about 0.1 s, several times a phase.
    Freezing what exists before a phase leaves the collector only the phase's own objects (the
    server does the same at startup)."""
    gc.collect()
    gc.freeze()


async def settle_notices(mailbox: Mailbox, cap: float = NOTICE_SETTLE_SECONDS) -> int:
    """Wait (capped) until every notice the server owes has reached the sink; returns how many
    are still missing (and stops expecting them, so they do not hold up later phases)."""
    deadline = time.perf_counter() + cap
    # Polled: the count moves in the sink's thread, and 20 ms is nothing against a phase.
    while mailbox.notices_behind() and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    missing = mailbox.notices_behind()
    mailbox.owed -= missing
    return missing


async def measured_phase(
    phase: Coroutine[None, None, None],
    seconds: float,
    stats: PhaseStats,
    mailbox: Mailbox,
    trees: dict[str, int | None],
) -> None:
    """Run a phase: CPU shares over its window (`stats.cpu`), then, once its flows have
    finished and their signing notices arrived, server+db CPU per successful flow over all
    of that (`stats.cpu_ms_per_flow`)."""
    quiet_collector()
    whole = CpuMeter(trees)
    stats.cpu = await cpu_over_window(phase, seconds, trees)
    stats.notices_behind = mailbox.notices_behind()
    began = time.perf_counter()
    stats.notices_missing = await settle_notices(mailbox)
    stats.notices_drained_s = time.perf_counter() - began
    used = whole.stop()
    if used.get("server") is not None and stats.latencies_ms:
        server_db = (used["server"] or 0.0) + (used.get("database") or 0.0)
        stats.cpu_ms_per_flow = server_db * 10 * whole.wall / len(stats.latencies_ms)


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
    opened = PhaseStats(f"open loop ({rate:.1f}/s offered)", channel)
    await measured_phase(
        open_loop(driver, idle, rate, plan.duration, plan.max_in_flight, opened),
        plan.duration,
        opened,
        mailbox,
        cpu_trees,
    )
    result.phases.append(opened)
    print(f"  {channel} open loop: {opened.rate:.1f} flows/s, {opened.errors} errors", flush=True)


# --------------------------------------------------------------------------- one configuration


def postmaster_pid(pg: TemporaryPostgres) -> int | None:
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        return int((pg.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    return None


def open_sink_and_database(
    database: str, directory: Path, stack: contextlib.ExitStack
) -> tuple[Mailbox, MailSink, str, TemporaryPostgres | None]:
    """An SMTP sink feeding a `Mailbox`, and a fresh migrated database (SQLite under
    `directory`, or a private PostgreSQL); both stopped by `stack`. Returns the database URL
    and the PostgreSQL server, if any."""
    mailbox = Mailbox()
    sink = MailSink(None, on_message=mailbox.on_message).start()
    stack.callback(sink.stop)
    pg: TemporaryPostgres | None = None
    if database == "postgresql":
        pg = TemporaryPostgres().start()
        stack.callback(pg.stop)
        url = pg.url
    else:
        url = f"sqlite:///{directory / SQLITE_FILE}"
    upgrade(url)
    return mailbox, sink, url, pg


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
            key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
            key_file.chmod(0o600)
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


# --------------------------------------------------------------------------- the report


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


# A phase's figures after its latencies, in this table and in bench/floor.py's (`load_cells`).
LOAD_COLUMNS = (
    "errors",
    "generator CPU %",
    "server CPU %",
    "database CPU %",
    "other CPU %",
    "server+db CPU ms/flow",
    "healthz req/s",
    "flows/s ÷ (healthz/3)",
)
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


def cpu_ms_per_unit(cpu: dict[str, float | None], rate: float) -> float | None:
    """Server (and database) CPU ms per flow or request: CPU % of one core x 10 / rate."""
    server = cpu.get("server")
    if server is None or not rate:
        return None
    return (server + (cpu.get("database") or 0.0)) * 10 / rate


def load_cells(phase: PhaseStats, result: ConfigResult, ms_digits: int = 0) -> list[str]:
    """The `LOAD_COLUMNS` of one phase."""
    ratio = phase.rate / (result.healthz_rps / 3) if result.healthz_rps else None
    return [
        str(phase.errors),
        _fmt(phase.cpu.get("generator")),
        _fmt(phase.cpu.get("server")),
        _fmt(phase.cpu.get("database")),
        _fmt(phase.cpu.get("other")),
        _fmt(phase.cpu_ms_per_flow, ms_digits),
        _fmt(result.healthz_rps),
        _fmt(ratio, 3),
    ]


def table_rows(results: list[ConfigResult]) -> list[list[str]]:
    rows: list[list[str]] = []
    for result in results:
        for phase in result.phases:
            rows.append(
                [
                    result.name,
                    phase.channel,
                    phase.name,
                    _fmt(phase.rate, 1),
                    _fmt(percentile(phase.latencies_ms, 0.50)),
                    _fmt(percentile(phase.latencies_ms, 0.95)),
                    _fmt(percentile(phase.latencies_ms, 0.99)),
                    *load_cells(phase, result),
                ]
            )
    return rows


def plain_table(
    rows: list[list[str]], columns: tuple[str, ...] = COLUMNS, text_columns: int = TEXT_COLUMNS
) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [
            cell.ljust(w) if i < text_columns else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def markdown_table(
    rows: list[list[str]], columns: tuple[str, ...] = COLUMNS, text_columns: int = TEXT_COLUMNS
) -> str:
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append(
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(columns))) + "|"
    )
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def details(results: list[ConfigResult]) -> Iterator[str]:
    """Error breakdowns, drops and CPU of the healthz phase, as markdown bullet points."""
    for result in results:
        cpu = result.healthz_cpu
        if not cpu:
            yield f"- **{result.name}**: not measured"
        else:
            yield (
                f"- **{result.name}**: healthz {result.healthz_rps:,.0f} req/s "
                f"(generator CPU {_fmt(cpu.get('generator'))} %, "
                f"server CPU {_fmt(cpu.get('server'))} % = "
                f"{_fmt(cpu_ms_per_unit(cpu, result.healthz_rps), 2)} ms per request, "
                f"other CPU {_fmt(cpu.get('other'))} %)"
                + (f", errors {dict(result.healthz_errors)}" if result.healthz_errors else "")
            )
        if result.peak_rss_mib:
            peaks = ", ".join(f"{peak:,.0f}" for peak in result.peak_rss_mib)
            yield f"  - peak RSS of each serving process after the run: {peaks} MiB"
        for phase in result.phases:
            extra = [f"{phase.started} flows started, {len(phase.latencies_ms)} succeeded"]
            if phase.steps_ms:
                medians = ", ".join(
                    f"{step} {_fmt(percentile(values, 0.5))}"
                    for step, values in phase.steps_ms.items()
                )
                extra.append(f"median ms per step: {medians}")
                # Which step the flow's tail comes from.
                tails = ", ".join(
                    f"{step} {_fmt(percentile(values, 0.99))}"
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


def machine() -> str:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
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
    args = parser.parse_args(argv)
    if not 1 <= args.people <= MAX_PEOPLE:
        parser.error(f"--people must be 1 to {MAX_PEOPLE}")
    if args.concurrency < 1 or args.workers < 1 or args.max_in_flight < 1:
        parser.error("--concurrency, --workers and --max-in-flight must be at least 1")
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
        print(plain_table(rows))
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
        print(markdown_table(rows))
        print()
    for line in details(results):
        print(line)
    if interrupted:
        return 130
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
