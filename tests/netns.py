"""Hosts on one private network, made with `ip netns`: for the scale-out benchmark
(bench/scaleout.py) and its race test (tests/e2e/test_scaleout.py). Root only.

`Network(prefix, subnet)` makes these network namespaces, each with its loopback up:

    {prefix}-sw   the switch: a bridge `br0`, and one veth end per member
    {prefix}-db   PostgreSQL, on {subnet}.2 (`NamespacedPostgres`)
    {prefix}-h1   a roamsign host, {subnet}.11 (`serve_in`)
    {prefix}-h2   a roamsign host, {subnet}.12 (and so on, `hosts` of them)

and one veth pair from the root namespace to the switch, `{prefix}-gen` with {subnet}.1 on the
root's end: the load generator (the benchmark's or the test's process, with the SMTP sink its
hosts deliver to) runs in the root namespace and reaches the others through that one link. The
hosts' traffic with PostgreSQL and with each other crosses the switch namespace's bridge and
no interface of the root namespace. A host e-mails in clear to loopback only (production
refuses a relay elsewhere without TLS), as it would to a local MTA: `start_relay` runs a plain
TCP relay on each host's 127.0.0.1 to the generator's SMTP sink. Every name starts with the
prefix: `remove()` stops the processes left in those namespaces and deletes them, so a run
cleans up after a killed one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import PROJECT_ROOT, READY_SECONDS, Server, launch
from tests.pg_server import TemporaryPostgres

HOST_PORT = 8000  # every host serves on its own address, so they all use the same port
DB_HOST = 2
GENERATOR_HOST = 1
FIRST_HOST = 11


@functools.cache
def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip`, or the kernel or a container
    refuses them: one is made and deleted to find out), or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "`ip netns add` needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"rsprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    _ip("netns", "delete", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` refused: {made.stderr.strip()}"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _running(pid: str) -> bool:
    """Whether the process exists and is not a zombie (its parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


@dataclass
class Network:
    prefix: str  # at most 8 characters: interface names have 15
    subnet: str  # the first three octets of a private /24 nobody on this machine uses
    hosts: int = 2
    made: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if len(self.prefix) > 8 or not self.prefix.isalnum():
            raise ValueError("the prefix is 1-8 letters or digits")

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def db(self) -> str:
        return f"{self.prefix}-db"

    def host(self, n: int) -> str:
        """The namespace of host n (1-based)."""
        return f"{self.prefix}-h{n}"

    def address(self, last: int) -> str:
        return f"{self.subnet}.{last}"

    @property
    def generator_address(self) -> str:
        return self.address(GENERATOR_HOST)

    @property
    def db_address(self) -> str:
        return self.address(DB_HOST)

    def host_address(self, n: int) -> str:
        return self.address(FIRST_HOST + n - 1)

    def members(self) -> list[tuple[str, str]]:
        """(namespace, address) of the database and each host."""
        return [(self.db, self.db_address)] + [
            (self.host(n), self.host_address(n)) for n in range(1, self.hosts + 1)
        ]

    def names(self) -> list[str]:
        """Every namespace this network may have made (a killed run's included)."""
        existing = _ip("netns", "list", check=False).stdout.split()
        ours = {self.switch, self.db, *(self.host(n) for n in range(1, self.hosts + 1))}
        ours |= {name for name in existing if name.startswith(f"{self.prefix}-")}
        return sorted(ours)

    def create(self) -> Network:
        """The namespaces and their links, from scratch (leftovers removed first)."""
        self.remove()
        taken = _ip("-4", "route", "show", check=False).stdout
        if f"{self.subnet}." in taken:
            raise RuntimeError(f"{self.subnet}.0/24 is routed on this machine already: {taken}")
        self.made = True
        for namespace in (self.switch, *(name for name, _ in self.members())):
            _ip("netns", "add", namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, (namespace, address) in enumerate(self.members()):
            port = f"p{index}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0")
            _ip("-n", self.switch, "link", "set", "eth0", "netns", namespace)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
        gen = f"{self.prefix}-gen"
        _ip("link", "add", gen, "type", "veth", "peer", "name", "pgen", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", "pgen", "master", "br0", "up")
        _ip("addr", "add", f"{self.generator_address}/24", "dev", gen)
        _ip("link", "set", gen, "up")
        return self

    def remove(self) -> None:
        """Stop whatever runs in this network's namespaces and delete them; idempotent."""
        for namespace in self.names():
            pids = _ip("netns", "pids", namespace, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _running(p)]
                time.sleep(0.05)
            _ip("netns", "delete", namespace, check=False)
        _ip("link", "delete", f"{self.prefix}-gen", check=False)
        self.made = False

    def exec_prefix(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    def __enter__(self) -> Network:
        return self.create()

    def __exit__(self, *_exc: object) -> None:
        self.remove()


class NamespacedPostgres(TemporaryPostgres):
    """`TemporaryPostgres` inside a namespace, listening on its private address only, and
    trusting the network's /24 (the hosts, and the generator that migrates and seeds)."""

    def __init__(self, network: Network, **kwargs: object) -> None:
        settings = {"listen_addresses": network.db_address}
        super().__init__(settings=settings, **kwargs)  # type: ignore[arg-type]
        self._network = network

    @property
    def host(self) -> str:
        return self._network.db_address

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def libpq_dsn(self, database: str | None = None) -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={database or self.database}"

    def _command(self, *argv: str | os.PathLike[str]) -> list[str]:
        return self._network.exec_prefix(self._network.db) + super()._command(*argv)

    def _initdb(self, bindir: Path) -> None:
        super()._initdb(bindir)
        with (self.datadir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host    all   all   {self._network.subnet}.0/24  trust\n")

    def _accepts_connections(self, port: int) -> bool:
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[7].strip() != "ready":
            return False
        try:
            with socket.create_connection((self.host, port), timeout=1):
                return True
        except OSError:
            return False

    def _run_sql(self, database: str, statement: str) -> None:
        result = subprocess.run(
            [
                os.fspath(self.bindir / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--set",
                "ON_ERROR_STOP=1",
                "--dbname",
                self.libpq_dsn(database),
                "--command",
                statement,
            ],
            cwd=self.directory,
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{statement!r} failed: {result.stderr.strip()}")


def serve_in(
    network: Network,
    n: int,
    env: dict[str, str],
    log_dir: Path,
    workers: int = 1,
    ready_seconds: float = READY_SECONDS,
) -> Server:
    """`python -m app serve` in host n's namespace, on its address; returned once ready (its
    `/readyz` answers 200 through the generator's link)."""
    address = network.host_address(n)
    command = [
        *network.exec_prefix(network.host(n)),
        sys.executable,
        "-m",
        "app",
        "serve",
        "--host",
        address,
        "--port",
        str(HOST_PORT),
        "--workers",
        str(workers),
    ]
    # `ip netns exec` execs the command: the process is the server itself.
    return launch(
        command,
        env=env,
        port=HOST_PORT,
        log_path=log_dir / f"server-h{n}.log",
        ready_path="/readyz",
        ready_seconds=ready_seconds,
        host=address,
    )


RELAY_PORT = 8025  # the relay each host's server e-mails to, on that host's loopback


def start_relay(network: Network, n: int, target: tuple[str, int]) -> subprocess.Popen[bytes]:
    """A TCP relay on host n's 127.0.0.1:RELAY_PORT to `target` (the SMTP sink); returned once
    it listens. Stop it with `.kill()` (or `Network.remove()`)."""
    process = subprocess.Popen(
        [
            *network.exec_prefix(network.host(n)),
            sys.executable,
            "-m",
            "tests.netns",
            "relay",
            str(RELAY_PORT),
            target[0],
            str(target[1]),
        ],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "ready", once it listens (or EOF if it died)
    if line.strip() != b"ready":
        process.kill()
        raise RuntimeError(f"the SMTP relay of host {n} did not start ({process.wait()})")
    return process


async def _relay(listen_port: int, host: str, port: int) -> None:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tests/netns.py's helpers, run in a namespace")
    commands = parser.add_subparsers(dest="command", required=True)
    relay = commands.add_parser("relay", help="a TCP relay from 127.0.0.1:PORT to HOST:PORT")
    relay.add_argument("listen_port", type=int)
    relay.add_argument("host")
    relay.add_argument("port", type=int)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_relay(args.listen_port, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
