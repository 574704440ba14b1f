"""People: registered by JDN, stored normalised, seen by whom they may be."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import (
    MYKAD,
    MYKAD_DASHED,
    Keys,
    assert_problem,
    bearer,
    create_user,
    get_user,
    user_body,
)
from tests.factories import Factory


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


@pytest.mark.parametrize("field", ["name", "agency"])
@pytest.mark.parametrize("hidden", ["\u202e", "\u2066", "\u200f", "\u061c", "\u200b", "\ufeff"])
async def test_invisible_or_bidi_characters_in_a_name_are_refused(
    client: httpx.AsyncClient, api_keys: Keys, field: str, hidden: str
) -> None:
    response = await create_user(client, api_keys.jdn_admin, **{field: f"Nur {hidden}Aisyah"})
    body = assert_problem(response, 422, "validation_error")
    assert [error["pointer"] for error in body["errors"]] == [f"/{field}"]


async def test_a_jawi_name_with_a_zero_width_non_joiner_is_kept(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    name = "نور عائشة\u200cبنت احمد"
    response = await create_user(client, api_keys.jdn_admin, name=name)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
