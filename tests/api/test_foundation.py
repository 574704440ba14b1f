"""What every route shares: problems, authentication, body rules, people, health, CA, logs."""

from __future__ import annotations

import gc
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy.orm import Session

from app.clock import FrozenClock
from app.db import unit_of_work
from app.logs import JsonFormatter, mask_identifiers
from app.main import create_app
from app.runtime import Runtime
from app.services.audit.log import AuditLog
from app.services.clients import ClientService
from tests.api.conftest import Keys, bearer
from tests.factories import Factory
from tests.helpers import document_hash

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


def signing_body() -> dict[str, object]:
    return {
        "mykad": MYKAD,
        "document_hash": document_hash(),
        "document_name": "Baucar Bayaran PV-2026-000123",
    }


def audit_for(session: Session, runtime: Runtime) -> AuditLog:
    return AuditLog(session, runtime.keys.audit_mac, runtime.keys.subject_ref)


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


async def get_user(client: httpx.AsyncClient, key: str, mykad: str = MYKAD) -> httpx.Response:
    return await client.get(f"/v1/users/{mykad}", headers=bearer(key))


async def create_user(client: httpx.AsyncClient, key: str, **overrides: object) -> httpx.Response:
    return await client.post("/v1/users", json=user_body(**overrides), headers=bearer(key))


# Authentication


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": "Basic amRuOmpkbg=="},
        {"Authorization": "rsk_not-even-a-scheme"},
    ],
    ids=["none", "empty", "scheme-only", "blank-key", "basic", "no-scheme"],
)
async def test_no_key_is_401_with_www_authenticate(
    client: httpx.AsyncClient, api_keys: Keys, headers: dict[str, str]
) -> None:
    response = await client.get(f"/v1/users/{MYKAD}", headers=headers)
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_no_key_is_401_before_the_role_is_checked(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    response = await client.post("/v1/signing-requests", json=signing_body())
    assert_problem(response, 401, "unauthenticated")
    assert "www-authenticate" in response.headers


async def test_a_wrong_key_is_401(client: httpx.AsyncClient, api_keys: Keys) -> None:
    for key in ("rsk_" + "A" * 43, api_keys.portal + "x", api_keys.portal[:-1], "nonsense"):
        response = await get_user(client, key)
        assert_problem(response, 401, "unauthenticated")
        assert "www-authenticate" in response.headers


async def test_the_scheme_is_case_insensitive(client: httpx.AsyncClient, api_keys: Keys) -> None:
    response = await client.get(
        f"/v1/users/{MYKAD}", headers={"Authorization": f"bearer {api_keys.portal}"}
    )
    assert_problem(response, 404, "not_found")  # authenticated; the person does not exist


async def test_a_revoked_key_is_401(
    client: httpx.AsyncClient, api_keys: Keys, runtime: Runtime, clock: FrozenClock
) -> None:
    assert_problem(await get_user(client, api_keys.portal), 404, "not_found")
    with unit_of_work(runtime.sessions) as session:
        ClientService(session, audit_for(session, runtime)).revoke("portal", clock.now())
    response = await get_user(client, api_keys.portal)
    assert_problem(response, 401, "unauthenticated")
    assert "www-authenticate" in response.headers
    # Other clients are untouched.
    assert_problem(await get_user(client, api_keys.jdn_admin), 404, "not_found")


async def test_a_rotated_key_replaces_the_old_one(
    client: httpx.AsyncClient, api_keys: Keys, runtime: Runtime, clock: FrozenClock
) -> None:
    with unit_of_work(runtime.sessions) as session:
        new_key = ClientService(session, audit_for(session, runtime)).rotate("jdn", clock.now())
    assert new_key != api_keys.jdn_admin
    assert_problem(await get_user(client, api_keys.jdn_admin), 401, "unauthenticated")
    created = await create_user(client, new_key)
    assert created.status_code == 201, created.text
    assert (await get_user(client, new_key)).status_code == 200


@pytest.mark.parametrize("role", ["portal", "jdn_admin", "agency_admin"])
async def test_a_caller_without_the_signer_role_is_403(
    client: httpx.AsyncClient, api_keys: Keys, role: str
) -> None:
    response = await client.post(
        "/v1/signing-requests", json=signing_body(), headers=bearer(getattr(api_keys, role))
    )
    assert_problem(response, 403, "forbidden")


# Request bodies


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


@pytest.mark.parametrize(
    "content",
    [b'{"mykad": ', b"{'mykad': '850101145555'}", b'{"mykad": "1",}', b"not json", b"{"],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, api_keys: Keys, content: bytes
) -> None:
    assert_problem(await post_raw(client, api_keys.jdn_admin, content), 400, "bad_request")


@pytest.mark.parametrize(
    "content",
    [
        b'{"mykad": "\xff\xfe", "name": "Aisyah", "agency": "JDN"}',
        b'{"mykad": "850101145555", "name": "Ais\xc3yah", "agency": "JDN"}',
        b"\xef\xbb\xbf\xff",
    ],
)
async def test_invalid_utf8_is_a_client_error(
    client: httpx.AsyncClient, api_keys: Keys, content: bytes
) -> None:
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert response.status_code in {400, 422}, response.text
    assert_problem(response, response.status_code)


async def test_a_lone_surrogate_is_refused_not_a_500(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    content = b'{"mykad": "850101145555", "name": "Ais\\ud800yah", "agency": "JDN"}'
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert response.status_code in {400, 422}, response.text
    assert_problem(response, response.status_code)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, api_keys: Keys, content_type: str | None
) -> None:
    content = json.dumps(user_body()).encode()
    response = await post_raw(client, api_keys.jdn_admin, content, content_type)
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/merge-patch+json"],
)
async def test_json_media_types_are_accepted(
    client: httpx.AsyncClient, api_keys: Keys, content_type: str
) -> None:
    content = json.dumps(user_body()).encode()
    response = await post_raw(client, api_keys.jdn_admin, content, content_type)
    assert response.status_code == 201, response.text


async def test_a_body_over_64_kib_is_413(client: httpx.AsyncClient, api_keys: Keys) -> None:
    content = json.dumps(user_body(name="a" * 70 * 1024)).encode()
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert_problem(response, 413, "payload_too_large")


async def test_the_limit_holds_before_authentication(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/signing-requests",
        content=b" " * (70 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload_too_large")


async def chunked(data: bytes, size: int = 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_chunked_body_over_64_kib_is_413(client: httpx.AsyncClient, api_keys: Keys) -> None:
    data = json.dumps(user_body(name="a" * 70 * 1024)).encode()
    response = await post_raw(client, api_keys.jdn_admin, chunked(data))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload_too_large")
    assert (await get_user(client, api_keys.jdn_admin)).status_code == 404


async def test_a_chunked_body_under_the_limit_is_read_whole(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    data = json.dumps(user_body()).encode()
    response = await post_raw(client, api_keys.jdn_admin, chunked(data, size=7))
    assert "content-length" not in response.request.headers
    assert response.status_code == 201, response.text
    assert response.json()["mykad"] == MYKAD


async def test_a_body_of_exactly_64_kib_is_not_refused_for_size(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    base = json.dumps(user_body()).encode()
    content = base[:-1] + b" " * (64 * 1024 - len(base)) + b"}"
    assert len(content) == 64 * 1024
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert response.status_code == 201, response.text


async def test_an_unknown_field_is_422_naming_it(client: httpx.AsyncClient, api_keys: Keys) -> None:
    response = await create_user(client, api_keys.jdn_admin, nickname="Aisyah")
    body = assert_problem(response, 422, "validation_error")
    assert "/nickname" in [error["pointer"] for error in body["errors"]]
    assert all(error["detail"] for error in body["errors"])
    assert (await get_user(client, api_keys.jdn_admin)).status_code == 404  # nothing created


@pytest.mark.parametrize("content", [b"", b"null", b"[]", b'"850101145555"', b"42"])
async def test_a_body_that_is_not_an_object_is_422(
    client: httpx.AsyncClient, api_keys: Keys, content: bytes
) -> None:
    assert_problem(await post_raw(client, api_keys.jdn_admin, content), 422, "validation_error")


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 30000 + b"]" * 30000,
        b'{"a":' * 10000 + b"1" + b"}" * 10000,
        b'{"mykad": ' + b"[" * 30000 + b"]" * 30000 + b"}",
        b'{"name": ' + b"[" * 500 + b"]" * 500 + b', "mykad": "850101145555", "agency": "JDN"}',
    ],
    ids=["lists", "objects", "in-a-field", "parseable"],
)
async def test_deep_json_is_a_client_error(
    client: httpx.AsyncClient, api_keys: Keys, content: bytes
) -> None:
    assert len(content) <= 64 * 1024
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)


async def test_very_deep_json_is_413(client: httpx.AsyncClient, api_keys: Keys) -> None:
    content = b"[" * 100000 + b"]" * 100000
    assert_problem(await post_raw(client, api_keys.jdn_admin, content), 413, "payload_too_large")


@pytest.mark.parametrize(
    "number",
    [b"1" + b"0" * 400, b"1" + b"0" * 5000, b"1e400", b"-1e400", b"NaN", b"Infinity"],
    ids=["10**400", "10**5000", "1e400", "-1e400", "NaN", "Infinity"],
)
async def test_huge_numbers_are_a_client_error(
    client: httpx.AsyncClient, api_keys: Keys, number: bytes
) -> None:
    for content in (
        b'{"mykad": ' + number + b', "name": "Aisyah", "agency": "JDN"}',
        b'{"mykad": "850101145555", "name": "Aisyah", "agency": "JDN", "age": ' + number + b"}",
    ):
        response = await post_raw(client, api_keys.jdn_admin, content)
        assert 400 <= response.status_code < 500, response.text
        assert_problem(response, response.status_code)
    assert (await get_user(client, api_keys.jdn_admin)).status_code == 404


async def test_an_unknown_path_is_a_404_problem(client: httpx.AsyncClient, api_keys: Keys) -> None:
    for path in ("/v1/nothing-here", "/", "/v2/users/850101145555"):
        assert_problem(await client.get(path), 404, "not_found")
    response = await client.get("/v1/nothing-here", headers=bearer(api_keys.signer))
    assert_problem(response, 404, "not_found")


async def test_a_wrong_method_is_a_405_problem(client: httpx.AsyncClient, api_keys: Keys) -> None:
    response = await client.delete("/healthz")
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]
    response = await client.put("/v1/users", json=user_body(), headers=bearer(api_keys.jdn_admin))
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/users/850101145555", {"GET", "PATCH"}),
        ("/v1/users/850101145555/credentials", {"GET", "POST"}),
        ("/v1/signing-requests/some-id", {"GET", "DELETE"}),
        ("/v1/devices/some-id", {"DELETE"}),
    ],
)
async def test_a_405_allows_every_method_of_the_resource(
    client: httpx.AsyncClient, api_keys: Keys, path: str, methods: set[str]
) -> None:
    """RFC 9110 s.15.5.6: Allow lists the resource's methods, not only one route's."""
    response = await client.options(path, headers=bearer(api_keys.jdn_admin))
    assert_problem(response, 405, "method_not_allowed")
    assert {method.strip() for method in response.headers["allow"].split(",")} == methods


# An unexpected failure


async def test_an_unexpected_error_is_a_500_problem_logged_with_the_request_id(
    runtime: Runtime, json_log: JsonLines
) -> None:
    app = create_app(runtime=runtime, background_workers=False)

    async def explode() -> None:
        raise RuntimeError("the secret detail 850101145555")

    app.add_api_route("/explode", explode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://roamsign.test") as client:
        response = await client.get("/explode", headers={"X-Request-Id": "trace-500-0001"})
        generated = await client.get("/explode")
    assert_problem(response, 500, "internal_error")
    assert "secret detail" not in response.text
    assert response.headers["x-request-id"] == "trace-500-0001"
    assert_problem(generated, 500, "internal_error")

    failures = json_log.entries("roamsign.app")
    assert [entry["event"] for entry in failures] == ["request.failed"] * 2
    assert [entry["request_id"] for entry in failures] == [
        "trace-500-0001",
        generated.headers["x-request-id"],
    ]
    assert "RuntimeError" in failures[0]["exception"]
    assert "850101145555" not in "".join(json_log.lines)
    access = json_log.entries("roamsign.access")
    assert [(entry["status"], entry["request_id"]) for entry in access] == [
        (500, "trace-500-0001"),
        (500, generated.headers["x-request-id"]),
    ]


# People


async def test_jdn_registers_a_person_stored_normalised(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    response = await create_user(client, api_keys.jdn_admin)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["mykad"] == MYKAD
    assert body["phone"] == "+60123456789"
    assert body["email"] == "aisyah@jdn.gov.my"
    assert body["agency"] == "JDN"
    assert body["name"] == "Nur Aisyah binti Ahmad"
    assert body["created_at"] == "2026-11-27T10:00:00Z"
    assert body["id"]
    fetched = await get_user(client, api_keys.jdn_admin)
    assert fetched.json() == body


async def test_email_and_phone_are_optional(client: httpx.AsyncClient, api_keys: Keys) -> None:
    response = await client.post(
        "/v1/users",
        json={"mykad": "000229101234", "name": "Siti", "agency": "JDN"},
        headers=bearer(api_keys.jdn_admin),
    )
    assert response.status_code == 201, response.text
    assert response.json()["email"] is None
    assert response.json()["phone"] is None


async def test_a_person_registered_twice_is_409(client: httpx.AsyncClient, api_keys: Keys) -> None:
    assert (await create_user(client, api_keys.jdn_admin)).status_code == 201
    again = await create_user(client, api_keys.jdn_admin, mykad=MYKAD, name="Someone Else")
    assert_problem(again, 409, "conflict")
    assert (await get_user(client, api_keys.jdn_admin)).json()["name"] == "Nur Aisyah binti Ahmad"


@pytest.mark.parametrize("role", ["portal", "agency_admin", "signer"])
async def test_only_jdn_registers_people(
    client: httpx.AsyncClient, api_keys: Keys, role: str
) -> None:
    assert_problem(await create_user(client, getattr(api_keys, role)), 403, "forbidden")
    assert (await get_user(client, api_keys.jdn_admin)).status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mykad", "851301145555"),
        ("mykad", "010229145555"),
        ("mykad", "85010-114-5555"),
        ("mykad", "85010114555"),
        ("mykad", 850101145555),
        ("phone", "03-2345 6789"),
        ("email", "not-an-email"),
        ("name", ""),
        ("name", "Aisyah\nBcc: x@example.com"),
        ("agency", "J" * 101),
    ],
)
async def test_invalid_fields_are_422_pointing_at_them(
    client: httpx.AsyncClient, api_keys: Keys, field: str, value: object
) -> None:
    response = await create_user(client, api_keys.jdn_admin, **{field: value})
    body = assert_problem(response, 422, "validation_error")
    assert [error["pointer"] for error in body["errors"]] == [f"/{field}"]


async def test_a_missing_field_is_422_pointing_at_it(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    body = user_body()
    del body["name"]
    response = await client.post("/v1/users", json=body, headers=bearer(api_keys.jdn_admin))
    problem = assert_problem(response, 422, "validation_error")
    assert [error["pointer"] for error in problem["errors"]] == ["/name"]


@pytest.mark.parametrize(
    "email",
    [
        "ais\x00yah@jdn.gov.my",
        "ais\x7fyah@jdn.gov.my",
        "ais\x1byah@jdn.gov.my",
        "ais\x85yah@jdn.gov.my",
        "ais\u2028yah@jdn.gov.my",
        "ais\nyah@jdn.gov.my",
        "aisyah@jdn.gov.my\r\nBcc: x@example.com",
    ],
)
async def test_control_characters_in_an_email_address_are_refused(
    client: httpx.AsyncClient, api_keys: Keys, email: str
) -> None:
    response = await create_user(client, api_keys.jdn_admin, email=email)
    body = assert_problem(response, 422, "validation_error")
    assert [error["pointer"] for error in body["errors"]] == ["/email"]


async def test_a_person_is_found_with_or_without_dashes(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    await create_user(client, api_keys.jdn_admin)
    for mykad in (MYKAD, MYKAD_DASHED):
        response = await get_user(client, api_keys.portal, mykad)
        assert response.status_code == 200, response.text
        assert response.json()["mykad"] == MYKAD


async def test_who_sees_whom(client: httpx.AsyncClient, api_keys: Keys, factory: Factory) -> None:
    ours = factory.person(agency="JDN", roaming=False)
    theirs = factory.person(agency="KKM", roaming=False, email="siti@moh.gov.my")
    for key in (api_keys.portal, api_keys.jdn_admin):
        for person in (ours, theirs):
            response = await get_user(client, key, person.mykad)
            assert response.status_code == 200, response.text
            assert response.json()["agency"] == ("JDN" if person is ours else "KKM")
    assert (await get_user(client, api_keys.agency_admin, ours.mykad)).status_code == 200
    hidden = await get_user(client, api_keys.agency_admin, theirs.mykad)
    unknown = await get_user(client, api_keys.agency_admin, "991231019999")
    # The same answer as for nobody at all: the person's existence is not revealed.
    assert (
        assert_problem(hidden, 404, "not_found")["detail"]
        == (assert_problem(unknown, 404, "not_found")["detail"])
    )
    assert_problem(await get_user(client, api_keys.signer, ours.mykad), 403, "forbidden")


@pytest.mark.parametrize("mykad", ["991231019999", "851301145555", "not-a-mykad", "8501011455555"])
async def test_an_unknown_person_is_404(
    client: httpx.AsyncClient, api_keys: Keys, mykad: str
) -> None:
    assert_problem(await get_user(client, api_keys.jdn_admin, mykad), 404, "not_found")


# Operations and the CA


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_startup_puts_what_lives_for_ever_out_of_the_collectors_reach(
    runtime: Runtime,
) -> None:
    app = create_app(runtime=runtime, background_workers=False)
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            # The process's lasting objects (this very app among them) are frozen.
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


async def test_healthz_answers_while_every_worker_thread_is_taken(
    client: httpx.AsyncClient,
) -> None:
    # Liveness must not depend on the thread pool: a pool busy with slow database calls is
    # no reason to restart a live process.
    limiter = anyio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:
        await limiter.acquire_on_behalf_of(holder)
    try:
        with anyio.fail_after(5):
            response = await client.get("/healthz")
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database_and_key_store(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "database": "ok", "key_store": "ok"}


def pem_certificates(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


async def test_ca_certificates_are_the_chain_issuing_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    response = await client.get("/v1/ca/certificates")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "application/pem-certificate-chain"
    assert response.text.count("-----BEGIN CERTIFICATE-----") == 2
    issuing, root = pem_certificates(response.text)
    assert issuing.issuer == root.subject
    assert root.issuer == root.subject
    assert issuing.subject != root.subject
    issuing.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    for certificate in (issuing, root):
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca is True


async def test_ca_crl_is_der_signed_by_the_issuing_ca(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock
) -> None:
    chain = pem_certificates((await client.get("/v1/ca/certificates")).text)
    response = await client.get("/v1/ca/crl")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    issuing_key = chain[0].public_key()
    assert isinstance(issuing_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert crl.is_signature_valid(issuing_key)
    assert crl.issuer == chain[0].subject
    root_key = chain[1].public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert not crl.is_signature_valid(root_key)
    assert crl.last_update_utc <= clock.now()
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > clock.now()


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = set(re.findall(r"^# TYPE (roamsign_\w+)", response.text, re.MULTILINE))
    assert {"roamsign_request_duration_seconds", "roamsign_outbox_depth"} <= names
    assert re.search(
        r'^roamsign_request_duration_seconds_count\{[^}]*route="/healthz"',
        response.text,
        re.MULTILINE,
    )


# Request ids


async def test_every_response_carries_a_request_id(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    responses = [
        await client.get("/healthz"),
        await client.get("/v1/nothing-here"),
        await get_user(client, "wrong"),
        await post_raw(client, api_keys.jdn_admin, b"x" * (70 * 1024)),
        await post_raw(client, api_keys.jdn_admin, b"{}", "text/plain"),
        await post_raw(client, api_keys.jdn_admin, b"{"),
        await create_user(client, api_keys.jdn_admin),
    ]
    ids = [response.headers["x-request-id"] for response in responses]
    assert all(REQUEST_ID.fullmatch(request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


async def test_a_sane_caller_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    for given in ("igfmas-PV-2026-000123", "3f2c1b0a-9e8d-4c7b-a6f5-e4d3c2b1a098", "a.b_c-d1"):
        response = await client.get("/healthz", headers={"X-Request-Id": given})
        assert response.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given",
    [
        "short",
        "x" * 65,
        "has spaces in it",
        "<script>alert(1)</script>",
        "id\u00e9\u00e9\u00e9\u00e9\u00e9",
        "abcdefgh\n",
        "abcdefgh\r\nSet-Cookie: a=b",
    ],
)
async def test_an_insane_caller_request_id_is_replaced(
    client: httpx.AsyncClient, given: str
) -> None:
    response = await client.get("/healthz", headers={b"X-Request-Id": given.encode()})
    assert response.headers["x-request-id"] != given
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


# Logs


def test_mask_identifiers() -> None:
    assert mask_identifiers("GET /v1/users/850101-14-5555") == "GET /v1/users/********5555"
    assert mask_identifiers('{"mykad": "850101145555"}') == '{"mykad": "********5555"}'
    assert mask_identifiers("850101145555,900101140001") == "********5555,********0001"
    # Not MyKad-shaped: other lengths and the E.164 phone stay as they are.
    assert mask_identifiers("8501011455556") == "8501011455556"
    assert mask_identifiers("+60123456789") == "+60123456789"


async def test_the_access_log_masks_the_mykad(
    client: httpx.AsyncClient,
    api_keys: Keys,
    factory: Factory,
    caplog: pytest.LogCaptureFixture,
    json_log: JsonLines,
) -> None:
    factory.person(mykad=MYKAD, roaming=False)
    caplog.set_level(logging.DEBUG)
    response = await get_user(client, api_keys.portal, MYKAD_DASHED)
    assert response.status_code == 200
    missing = await get_user(client, api_keys.portal, "991231-01-9999")
    assert missing.status_code == 404

    assert any(record.name == "roamsign.access" for record in caplog.records)
    captured = [JsonFormatter().format(record) for record in caplog.records]
    for line in captured + json_log.lines:
        assert MYKAD not in line
        assert MYKAD_DASHED not in line
        assert "991231019999" not in line
        assert "991231-01-9999" not in line
    access = json_log.entries("roamsign.access")
    assert [(entry["path"], entry["status"]) for entry in access] == [
        ("/v1/users/********5555", 200),
        ("/v1/users/********9999", 404),
    ]
    assert access[0]["request_id"] == response.headers["x-request-id"]
    assert access[0]["caller"] == "portal"
    assert access[0]["method"] == "GET"
