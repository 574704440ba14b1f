"""Steps of the roaming lifecycle over HTTP, shared by the lifecycle API tests."""

from __future__ import annotations

from typing import Any

import httpx

from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.factories import Person
from tests.helpers import document_hash, queued_otp
from tests.mailbox import Mail, last_mail

NEW_PIN = "802461"
OTHER_PIN = "730519"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def expect_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status and body["code"] == code, body
    return body


def mail(runtime: Runtime, recipient: str, purpose: str) -> Mail:
    return last_mail(
        runtime.sessions, runtime.keys.outbox_seal, recipient=recipient, purpose=purpose
    )


async def open_application(client: httpx.AsyncClient, key: str, person: Person) -> httpx.Response:
    return await client.post(f"/v1/users/{person.mykad}/roaming-applications", headers=bearer(key))


async def verify_email(
    client: httpx.AsyncClient, key: str, application_id: str, token: str
) -> httpx.Response:
    return await client.post(
        f"/v1/roaming-applications/{application_id}/email-verification",
        json={"token": token},
        headers=bearer(key),
    )


async def approve(
    client: httpx.AsyncClient, key: str, application_id: str, **body: object
) -> httpx.Response:
    return await client.post(
        f"/v1/roaming-applications/{application_id}/approval",
        json=body or None,
        headers=bearer(key),
    )


async def resend(client: httpx.AsyncClient, key: str, application_id: str) -> httpx.Response:
    return await client.post(
        f"/v1/roaming-applications/{application_id}/notifications", headers=bearer(key)
    )


async def set_pin(
    client: httpx.AsyncClient, key: str, credential_id: str, **body: object
) -> httpx.Response:
    return await client.put(f"/v1/credentials/{credential_id}/pin", json=body, headers=bearer(key))


async def approved_credential(
    client: httpx.AsyncClient, keys: Keys, runtime: Runtime, person: Person
) -> tuple[str, str]:
    """Open, verify and approve an application: (application id, pending credential id)."""
    opened = await open_application(client, keys.portal, person)
    assert opened.status_code == 201, opened.text
    application_id = opened.json()["id"]
    assert person.email is not None
    token = mail(runtime, person.email, "application_email").token
    verified = await verify_email(client, keys.portal, application_id, token)
    assert verified.status_code == 200, verified.text
    approved = await approve(client, keys.jdn_admin, application_id)
    assert approved.status_code == 200, approved.text
    return application_id, approved.json()["credential_id"]


async def active_credential(
    client: httpx.AsyncClient, keys: Keys, runtime: Runtime, person: Person, pin: str = NEW_PIN
) -> str:
    """The whole workflow down to an active credential with `pin`; returns its id."""
    _application_id, credential_id = await approved_credential(client, keys, runtime, person)
    assert person.email is not None
    token = mail(runtime, person.email, "pin_setup").token
    activated = await set_pin(client, keys.portal, credential_id, new_pin=pin, token=token)
    assert activated.status_code == 200, activated.text
    return credential_id


async def request_signature(
    client: httpx.AsyncClient, key: str, mykad: str, document: str = "PV-2026-000123"
) -> httpx.Response:
    return await client.post(
        "/v1/signing-requests",
        json={
            "mykad": mykad,
            "document_hash": document_hash(document),
            "document_name": document,
            "channel": "email",
        },
        headers=bearer(key),
    )


async def sign(
    client: httpx.AsyncClient,
    key: str,
    runtime: Runtime,
    mykad: str,
    pin: str,
    document: str = "PV-2026-000123",
) -> httpx.Response:
    """Request an OTP, read it from the outbox, submit it with the PIN."""
    created = await request_signature(client, key, mykad, document)
    if created.status_code != 201:
        return created
    request_id = created.json()["id"]
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, request_id)
    return await client.post(
        f"/v1/signing-requests/{request_id}/signature",
        json={"otp": otp, "pin": pin},
        headers=bearer(key),
    )
