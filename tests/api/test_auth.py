"""Authentication on every route: the API key, its revocation and rotation, the caller's role."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.orm import Session

from app.clock import FrozenClock
from app.db import unit_of_work
from app.runtime import Runtime
from app.services.audit.log import AuditLog
from app.services.clients import ClientService
from tests.api.conftest import MYKAD, Keys, assert_problem, bearer, create_user, get_user
from tests.helpers import document_hash


def signing_body() -> dict[str, object]:
    return {
        "mykad": MYKAD,
        "document_hash": document_hash(),
        "document_name": "Baucar Bayaran PV-2026-000123",
    }


def audit_for(session: Session, runtime: Runtime) -> AuditLog:
    return AuditLog(session, runtime.keys.audit_mac, runtime.keys.subject_ref)


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
