"""End-to-end: a real `python -m app serve` process (tests/harness.py), a real SMTP sink, the
test database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.clock import SystemClock
from app.runtime import Runtime
from app.services.mail.sink import MailSink
from app.settings import Settings, write_master_key
from tests.factories import Factory
from tests.harness import Server, serve, serve_environment

pytestmark = pytest.mark.e2e


def make_e2e_settings(
    var_dir: Path, database_url: str, master_key: bytes, smtp_port: int
) -> Settings:
    key_file = var_dir / "master.key"
    write_master_key(key_file, master_key)
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
        assert settings.master_key_file is not None
        env = serve_environment(
            database_url=settings.database_url,
            key_file=Path(settings.master_key_file),
            var_dir=Path(settings.var_dir),
            smtp_port=settings.smtp_port,
            ROAMSIGN_DELIVERY_POLL_SECONDS="0.2",
            ROAMSIGN_DELIVERY_BACKOFF_BASE_SECONDS="0.5",
            **overrides,
        )
        server = serve(env, Path(settings.var_dir), workers, ready_seconds=30)
        self.started.append(server)
        return server

    def stop(self) -> None:
        for server in self.started:
            server.stop()


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
