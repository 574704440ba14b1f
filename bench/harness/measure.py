"""What a benchmark measures: latencies, the CPU of each process tree (from /proc), peak
memory, and the figures of a phase and of a configuration."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import Server
from tests.pg_server import TemporaryPostgres

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def postmaster_pid(pg: TemporaryPostgres) -> int | None:
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        return int((pg.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    return None


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def memory_of(pid: int) -> tuple[str, int, int] | None:
    """(role, VmHWM kB, VmRSS kB) of one server process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    values = dict(
        (line.split(":", 1)[0], line.split(":", 1)[1].split()[0])
        for line in status.splitlines()
        if line.startswith(("VmHWM", "VmRSS"))
    )
    if "resource_tracker" in cmdline:
        role = "tracker"
    elif "multiprocessing" in cmdline:
        role = "worker"
    else:
        role = "main"
    return role, int(values.get("VmHWM", 0)), int(values.get("VmRSS", 0))


def server_memory(server: Server) -> list[tuple[str, int, int]]:
    """Each server process's peak and current RSS; with one process, it is the worker."""
    found = [m for pid in process_tree(server.process.pid) if (m := memory_of(pid)) is not None]
    if not any(role == "worker" for role, _, _ in found):
        found = [("worker" if role == "main" else role, hwm, rss) for role, hwm, rss in found]
    return found
