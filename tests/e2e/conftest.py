"""End-to-end: a real `python -m app serve` process, a real SMTP sink, the test database."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.clock import SystemClock
from app.runtime import Runtime
from app.services.mail.sink import MailSink
from app.settings import Settings
from tests.factories import Factory

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def make_e2e_settings(
    var_dir: Path, database_url: str, master_key: bytes, smtp_port: int
) -> Settings:
    key_file = var_dir / "master.key"
    key_file.write_text(base64.b64encode(master_key).decode())
    return Settings(
        profile="production",
        database_url=database_url,
        master_key_file=key_file,
        var_dir=var_dir,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        delivery_poll_seconds=0.2,
        delivery_backoff_base_seconds=0.5,
    )


@pytest.fixture
def e2e_settings(tmp_path: Path, database_url: str, master_key: bytes, sink: MailSink) -> Settings:
    return make_e2e_settings(tmp_path, database_url, master_key, sink.port)


@pytest.fixture
def e2e_factory(e2e_settings: Settings, engine: Engine, sessions: sessionmaker[Session]) -> Factory:
    runtime = Runtime.build(e2e_settings, SystemClock())
    runtime.engine.dispose()
    runtime.engine, runtime.sessions = engine, sessions
    factory = Factory(runtime)
    factory.init_ca()
    return factory


ServerStarter = Callable[..., Server]


class Servers:
    """Starts real `python -m app serve` processes on 127.0.0.1; `stop()` ends every one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started: list[Server] = []

    def start(self, workers: int = 1, **overrides: str) -> Server:
        settings = self.settings
        port = free_port()
        env = {
            **os.environ,
            "ROAMSIGN_PROFILE": "production",
            "ROAMSIGN_DATABASE_URL": settings.database_url,
            "ROAMSIGN_MASTER_KEY_FILE": str(settings.master_key_file),
            "ROAMSIGN_VAR_DIR": str(settings.var_dir),
            "ROAMSIGN_SMTP_HOST": "127.0.0.1",
            "ROAMSIGN_SMTP_PORT": str(settings.smtp_port),
            "ROAMSIGN_DELIVERY_POLL_SECONDS": "0.2",
            "ROAMSIGN_DELIVERY_BACKOFF_BASE_SECONDS": "0.5",
            **overrides,
        }
        log_path = Path(settings.var_dir) / f"server-{port}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        self.started.append(server)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {server.log()}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready: {server.log()}")

    def stop(self) -> None:
        for server in self.started:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@pytest.fixture
def start_server(
    e2e_settings: Settings, sessions: sessionmaker[Session]
) -> Iterator[ServerStarter]:
    # Depending on `sessions` orders the teardown: the servers stop before the database is
    # wiped. Otherwise a server still delivering (the signing notice writes an audit event)
    # could write into the next test's empty database.
    servers = Servers(e2e_settings)
    yield servers.start
    servers.stop()


Call = tuple[str, str, Any]  # method, path, JSON body (or None)


async def at_once(server: Server, key: str | None, calls: list[Call]) -> list[httpx.Response]:
    """Send every call on its own connection, all released together; the answers in order."""
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=len(calls))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, timeout=60, limits=limits
    ) as client:
        start = asyncio.Event()

        async def one(method: str, path: str, body: Any) -> httpx.Response:
            await start.wait()
            return await client.request(method, path, json=body)

        tasks = [asyncio.create_task(one(*call)) for call in calls]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)
