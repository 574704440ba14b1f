"""An application on the test database, a frozen clock, callers of every role."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from tests.factories import Factory


@pytest.fixture
def settings(tmp_path: Path, database_url: str, master_key: bytes) -> Settings:
    key_file = tmp_path / "master.key"
    key_file.write_text(base64.b64encode(master_key).decode())
    return Settings(
        profile="production",
        database_url=database_url,
        master_key_file=key_file,
        var_dir=tmp_path,
        delivery_worker=False,
        log_json=False,
    )


@pytest.fixture
def runtime(
    settings: Settings, clock: FrozenClock, sessions: sessionmaker[Session], engine: Engine
) -> Iterator[Runtime]:
    runtime = Runtime.build(settings, clock)
    runtime.engine.dispose()
    runtime.engine, runtime.sessions = engine, sessions  # share the test's engine and its wipe
    yield runtime


@pytest.fixture
def factory(runtime: Runtime) -> Factory:
    factory = Factory(runtime)
    factory.init_ca()
    return factory


@dataclass
class Keys:
    signer: str
    other_signer: str
    portal: str
    jdn_admin: str
    agency_admin: str


@pytest.fixture
def api_keys(factory: Factory) -> Keys:
    return Keys(
        signer=factory.client("igfmas", "signer"),
        other_signer=factory.client("eperolehan", "signer"),
        portal=factory.client("portal", "portal"),
        jdn_admin=factory.client("jdn", "jdn_admin"),
        agency_admin=factory.client("sa-jdn", "agency_admin", "JDN"),
    )


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime, background_workers=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://roamsign.test") as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
