"""An application on the test database, a frozen clock, callers of every role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from app.main import create_app
from app.runtime import Runtime
from tests.factories import Factory


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
