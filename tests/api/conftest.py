"""An application on the test database, a frozen clock, callers of every role, and what the API
tests share: problems checked, people registered, bodies posted raw, logs read as JSON."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.logs import JsonFormatter
from app.main import create_app
from app.runtime import Runtime
from tests.factories import Factory, Person
from tests.helpers import signing_request_body


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


@pytest.fixture
def person(factory: Factory) -> Person:
    return factory.person()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def request_otp(
    client: httpx.AsyncClient, key: str, person: Person, **overrides: Any
) -> httpx.Response:
    """`POST /v1/signing-requests` for `person` (`signing_request_body`: `document=` names what
    is hashed, the other overrides are body fields)."""
    body = signing_request_body(person, **overrides)
    return await client.post("/v1/signing-requests", json=body, headers=bearer(key))


PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
MYKAD = "850101145555"
MYKAD_DASHED = "850101-14-5555"


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    media_type = response.headers["content-type"].split(";", 1)[0].strip()
    assert media_type == "application/problem+json", response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["type"].endswith("/" + body["code"])
    if code is not None:
        assert body["code"] == code, body
    assert REQUEST_ID.fullmatch(response.headers["x-request-id"])
    return body


def user_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "mykad": MYKAD_DASHED,
        "name": "Nur Aisyah binti Ahmad",
        "email": "aisyah@jdn.gov.my",
        "phone": "012-345 6789",
        "agency": "JDN",
    }
    body.update(overrides)
    return body


class JsonLines(logging.Handler):
    """Formats each record as it is emitted (inside the request's context), as production does."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def entries(self, logger: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines]
        return [entry for entry in parsed if entry["logger"] == logger]


async def get_user(client: httpx.AsyncClient, key: str, mykad: str = MYKAD) -> httpx.Response:
    return await client.get(f"/v1/users/{mykad}", headers=bearer(key))


async def create_user(client: httpx.AsyncClient, key: str, **overrides: object) -> httpx.Response:
    return await client.post("/v1/users", json=user_body(**overrides), headers=bearer(key))


async def post_raw(
    client: httpx.AsyncClient,
    key: str,
    content: bytes | AsyncIterator[bytes],
    content_type: str | None = "application/json",
    path: str = "/v1/users",
) -> httpx.Response:
    headers = bearer(key)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.post(path, content=content, headers=headers)


@pytest.fixture
def json_log() -> Iterator[JsonLines]:
    handler = JsonLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)
