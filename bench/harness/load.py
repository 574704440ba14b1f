"""Load phases: `/healthz`, closed and open loops of flows, each phase's CPU and the signing
notices it leaves behind."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Coroutine
from dataclasses import dataclass

import httpx

from bench.harness.clients import REQUEST_TIMEOUT_SECONDS, LanePool
from bench.harness.flows import FlowDriver, IdlePeople, Mailbox
from bench.harness.measure import ConfigResult, CpuMeter, PhaseStats
from tests.factories import Person

ACTIVATION_MAIL_SECONDS = 30.0  # for the seeded devices' activation e-mails to be delivered
NOTICE_SETTLE_SECONDS = 120.0  # after a phase, for its flows' signing notices to be delivered
DRAIN_CAP_SECONDS = 60.0  # after a phase's end, for the flows still in flight


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
    open_runs: int = 1  # open-loop phases per channel, each at the same rate


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
        # Every tree measured: the server (or each host's, bench/scaleout.py) and the database.
        server_db = sum(
            share or 0.0 for name, share in used.items() if name not in ("generator", "other")
        )
        stats.cpu_ms_per_flow = server_db * 10 * whole.wall / len(stats.latencies_ms)


PHASE_CAP_SECONDS = 240.0  # no new flow starts after this, whatever --flows says


async def fixed_closed_loop(
    driver: FlowDriver, idle: IdlePeople, concurrency: int, count: int, stats: PhaseStats
) -> None:
    """`count` flows, `concurrency` in flight; none starts after PHASE_CAP_SECONDS."""
    deadline = time.perf_counter() + PHASE_CAP_SECONDS
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0 and time.perf_counter() < deadline:
            left -= 1
            person = await idle.take()
            try:
                await driver.flow(person, stats, time.perf_counter())
            finally:
                await idle.give_back(person)

    tasks = {asyncio.create_task(worker()) for _ in range(concurrency)}
    await asyncio.wait(tasks, timeout=PHASE_CAP_SECONDS + 2 * REQUEST_TIMEOUT_SECONDS)
    await drain(tasks, stats)
    if left > 0:
        stats.failures[f"not started: {PHASE_CAP_SECONDS:.0f} s cap"] += left
