"""The media a person holds: tokens on record next to roaming credentials."""

from __future__ import annotations

import httpx

from app.clock import FrozenClock
from tests.api.conftest import Keys, bearer
from tests.api.lifecycle_steps import expect_problem
from tests.factories import Factory


async def record(client: httpx.AsyncClient, key: str, mykad: str, **body: object) -> httpx.Response:
    return await client.post(f"/v1/users/{mykad}/credentials", json=body, headers=bearer(key))


async def media(client: httpx.AsyncClient, key: str, mykad: str) -> httpx.Response:
    return await client.get(f"/v1/users/{mykad}/credentials", headers=bearer(key))


async def test_a_person_holds_token_softcert_and_roaming_at_once(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory
) -> None:
    person = factory.person()  # with an active roaming credential
    token = await record(
        client,
        api_keys.jdn_admin,
        person.mykad,
        serial="TKN-0042",
        expires_at="2027-03-31T23:59:59Z",
    )
    assert token.status_code == 201, token.text
    assert token.json()["medium"] == "token"
    assert token.json()["status"] == "active"
    assert token.json()["serial"] == "TKN-0042"
    assert token.json()["not_after"] == "2027-03-31T23:59:59Z"
    assert token.json()["certificate"] is None
    softcert = await record(
        client,
        api_keys.jdn_admin,
        person.mykad,
        medium="softcert",
        serial="SC-7781",
        expires_at="2028-01-01T00:00:00+08:00",
    )
    assert softcert.status_code == 201, softcert.text
    assert softcert.json()["not_after"] == "2027-12-31T16:00:00Z"

    listed = await media(client, api_keys.portal, person.mykad)
    assert listed.status_code == 200
    assert {(c["medium"], c["status"]) for c in listed.json()} == {
        ("roaming", "active"),
        ("token", "active"),
        ("softcert", "active"),
    }
    roaming = next(c for c in listed.json() if c["medium"] == "roaming")
    assert roaming["id"] == person.credential_id
    assert roaming["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert roaming["key_algorithm"] == "ecdsa-p256"


async def test_a_token_reads_expired_after_its_date_without_cancellation(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, clock: FrozenClock
) -> None:
    person = factory.person()
    await record(
        client, api_keys.jdn_admin, person.mykad, serial="TKN-1", expires_at="2026-12-31T00:00:00Z"
    )
    clock.advance(days=34)
    listed = (await media(client, api_keys.jdn_admin, person.mykad)).json()
    assert {(c["medium"], c["status"]) for c in listed} == {
        ("roaming", "active"),
        ("token", "expired"),
    }


async def test_recording_refusals(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory
) -> None:
    person = factory.token_user()
    body = {"serial": "TKN-9", "expires_at": "2027-01-01T00:00:00Z"}
    assert (await record(client, api_keys.jdn_admin, person.mykad, **body)).status_code == 201
    twice = await record(client, api_keys.jdn_admin, person.mykad, **body)
    expect_problem(twice, 409, "conflict")
    for role in ("portal", "agency_admin", "signer"):
        refused = await record(client, getattr(api_keys, role), person.mykad, **body)
        expect_problem(refused, 403, "forbidden")
    unknown = await record(client, api_keys.jdn_admin, "991231019999", **body)
    expect_problem(unknown, 404, "not_found")
    for bad in (
        {"serial": "TKN-10", "expires_at": "2027-01-01T00:00:00"},  # no time zone
        {"serial": "TKN-10", "expires_at": 1798761600},  # a number is not RFC 3339
        {"serial": "TKN-10", "expires_at": "1798761600"},
        {"serial": "TKN-10", "expires_at": "2027-01-01T00:00:00Z", "not_before": 0},
        {"serial": "TKN\n10", "expires_at": "2027-01-01T00:00:00Z"},
        {"serial": "TKN-10", "expires_at": "2027-01-01T00:00:00Z", "medium": "roaming"},
        {"serial": "TKN-10", "expires_at": "2027-01-01T00:00:00Z", "colour": "red"},
        {
            "serial": "TKN-10",
            "expires_at": "2027-01-01T00:00:00Z",
            "not_before": "2027-02-01T00:00:00Z",
        },
    ):
        expect_problem(
            await record(client, api_keys.jdn_admin, person.mykad, **bad), 422, "validation_error"
        )


async def test_who_sees_whose_media(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory
) -> None:
    ours = factory.person(agency="JDN")
    theirs = factory.person(agency="KKM", email="siti@moh.gov.my")
    assert (await media(client, api_keys.agency_admin, ours.mykad)).status_code == 200
    expect_problem(await media(client, api_keys.agency_admin, theirs.mykad), 404, "not_found")
    hidden = await client.get(
        f"/v1/credentials/{theirs.credential_id}", headers=bearer(api_keys.agency_admin)
    )
    expect_problem(hidden, 404, "not_found")
    expect_problem(await media(client, api_keys.signer, ours.mykad), 403, "forbidden")
    expect_problem(await media(client, api_keys.jdn_admin, "991231019999"), 404, "not_found")
    anonymous = await client.get(f"/v1/users/{ours.mykad}/credentials")
    expect_problem(anonymous, 401, "unauthenticated")
