"""Roaming applications over HTTP: verification, approval, PIN setup, resend, and refusals."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from app.clock import FrozenClock
from app.models import Credential, OneTimeToken, RoamingApplication
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.api.lifecycle_steps import (
    NEW_PIN,
    active_credential,
    approve,
    approved_credential,
    expect_problem,
    mail,
    open_application,
    request_signature,
    resend,
    set_pin,
    sign,
    verify_email,
)
from tests.factories import Factory, Person


@pytest.fixture
def token_user(factory: Factory) -> Person:
    return factory.token_user()


async def test_an_application_awaits_the_verification_of_the_registered_address(
    client: httpx.AsyncClient, api_keys: Keys, token_user: Person, runtime: Runtime
) -> None:
    opened = await open_application(client, api_keys.portal, token_user)
    assert opened.status_code == 201, opened.text
    body = opened.json()
    assert body["status"] == "awaiting_email_verification"
    assert body["mykad"] == token_user.mykad
    assert body["origin"] == "portal"
    assert body["destination"] == "a***@jdn.gov.my"
    assert body["credential_id"] is None

    message = mail(runtime, "aisyah@jdn.gov.my", "application_email")
    assert message.text.splitlines()[0] == f"Token: {message.token}"
    assert "/" in message.subject and "verify your e-mail" in message.subject
    assert message.text.index("Kepada") < message.text.index("Dear")  # Malay, then English
    assert body["id"] in message.text
    with runtime.sessions() as session:
        stored = session.scalars(select(OneTimeToken)).one()
        assert message.token.encode() not in stored.token_mac and len(stored.token_mac) == 32

    fetched = await client.get(
        f"/v1/roaming-applications/{body['id']}", headers=bearer(api_keys.jdn_admin)
    )
    assert fetched.status_code == 200 and fetched.json() == body


async def test_the_whole_workflow_ends_in_a_credential_that_signs(
    client: httpx.AsyncClient, api_keys: Keys, token_user: Person, runtime: Runtime
) -> None:
    opened = (await open_application(client, api_keys.jdn_admin, token_user)).json()
    assert opened["origin"] == "jdn_admin"
    token = mail(runtime, "aisyah@jdn.gov.my", "application_email").token

    verified = await verify_email(client, api_keys.portal, opened["id"], token)
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "email_verified"
    assert verified.json()["email_verified_at"] == "2026-11-27T10:00:00Z"

    approved = await approve(client, api_keys.jdn_admin, opened["id"], key_algorithm="rsa-2048")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    credential_id = approved.json()["credential_id"]
    credential = await client.get(
        f"/v1/credentials/{credential_id}", headers=bearer(api_keys.portal)
    )
    assert credential.json()["status"] == "pending_pin"
    assert credential.json()["key_algorithm"] == "rsa-2048"

    # No signing before the PIN is set.
    refused = await request_signature(client, api_keys.signer, token_user.mykad)
    expect_problem(refused, 409, "credential_not_active")

    setup = mail(runtime, "aisyah@jdn.gov.my", "pin_setup")
    assert setup.text.splitlines()[0] == f"Token: {setup.token}"
    assert credential.json()["serial"] in setup.text
    activated = await set_pin(
        client, api_keys.portal, credential_id, new_pin=NEW_PIN, token=setup.token
    )
    assert activated.status_code == 200, activated.text
    assert activated.json()["status"] == "active"

    signed = await sign(client, api_keys.signer, runtime, token_user.mykad, NEW_PIN)
    assert signed.status_code == 201, signed.text
    assert signed.json()["signature_algorithm"] == "sha256WithRSAEncryption"

    # The token user keeps the token: both media, side by side.
    media = await client.get(
        f"/v1/users/{token_user.mykad}/credentials", headers=bearer(api_keys.portal)
    )
    assert sorted((c["medium"], c["status"]) for c in media.json()) == [
        ("roaming", "active"),
        ("token", "active"),
    ]
    reused = await set_pin(
        client, api_keys.portal, credential_id, new_pin="468013", token=setup.token
    )
    expect_problem(reused, 409, "otp_consumed")


async def test_a_wrong_or_expired_token_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    api_keys: Keys,
    token_user: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    opened = (await open_application(client, api_keys.portal, token_user)).json()
    token = mail(runtime, "aisyah@jdn.gov.my", "application_email").token

    # Its last character changed: "x" alone would leave a token that ends in "x" as it was.
    wrong_token = token[:-1] + ("y" if token.endswith("x") else "x")
    wrong = await verify_email(client, api_keys.portal, opened["id"], wrong_token)
    problem = expect_problem(wrong, 422, "validation_error")
    assert [e["pointer"] for e in problem["errors"]] == ["/token"]

    clock.advance(72 * 3600)  # the token's validity (ROAMSIGN_EMAIL_TOKEN_TTL_SECONDS)
    expired = await verify_email(client, api_keys.portal, opened["id"], token)
    expect_problem(expired, 410, "otp_expired")

    fetched = await client.get(
        f"/v1/roaming-applications/{opened['id']}", headers=bearer(api_keys.portal)
    )
    assert fetched.json()["status"] == "awaiting_email_verification"
    with runtime.sessions() as session:
        assert session.scalars(select(OneTimeToken.used_at)).one() is None
    audit = await client.get(
        "/v1/audit-events",
        params={"action": "email_token.rejected"},
        headers=bearer(api_keys.jdn_admin),
    )
    assert [e["outcome"] for e in audit.json()["events"]] == ["not_valid", "expired"]


async def test_a_token_verifies_only_its_own_application_and_only_once(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, runtime: Runtime
) -> None:
    first = factory.token_user(email="first@jdn.gov.my")
    second = factory.token_user(email="second@jdn.gov.my")
    first_id = (await open_application(client, api_keys.portal, first)).json()["id"]
    second_id = (await open_application(client, api_keys.portal, second)).json()["id"]
    first_token = mail(runtime, "first@jdn.gov.my", "application_email").token

    crossed = await verify_email(client, api_keys.portal, second_id, first_token)
    expect_problem(crossed, 422, "validation_error")
    assert (await verify_email(client, api_keys.portal, first_id, first_token)).status_code == 200
    again = await verify_email(client, api_keys.portal, first_id, first_token)
    expect_problem(again, 409, "otp_consumed")


async def test_approval_is_refused_before_verification_and_given_once(
    client: httpx.AsyncClient, api_keys: Keys, token_user: Person, runtime: Runtime
) -> None:
    opened = (await open_application(client, api_keys.portal, token_user)).json()
    early = await approve(client, api_keys.jdn_admin, opened["id"])
    assert "not verified" in expect_problem(early, 409, "conflict")["detail"]
    with runtime.sessions() as session:
        assert session.scalar(select(Credential).where(Credential.medium == "roaming")) is None

    token = mail(runtime, "aisyah@jdn.gov.my", "application_email").token
    await verify_email(client, api_keys.portal, opened["id"], token)
    for role in ("portal", "agency_admin", "signer"):
        expect_problem(
            await approve(client, getattr(api_keys, role), opened["id"]), 403, "forbidden"
        )
    assert (await approve(client, api_keys.jdn_admin, opened["id"])).status_code == 200
    twice = await approve(client, api_keys.jdn_admin, opened["id"])
    expect_problem(twice, 409, "conflict")
    unknown = await approve(client, api_keys.jdn_admin, "00000000-0000-0000-0000-000000000000")
    expect_problem(unknown, 404, "not_found")
    bad_body = await approve(client, api_keys.jdn_admin, opened["id"], key_algorithm="dsa")
    expect_problem(bad_body, 422, "validation_error")


async def test_one_open_application_per_person_and_none_for_roaming_holders(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, token_user: Person
) -> None:
    assert (await open_application(client, api_keys.portal, token_user)).status_code == 201
    again = await open_application(client, api_keys.jdn_admin, token_user)
    assert "open" in expect_problem(again, 409, "conflict")["detail"]

    roaming = factory.person(email="roaming@jdn.gov.my")
    expect_problem(await open_application(client, api_keys.portal, roaming), 409, "conflict")
    no_email = factory.token_user(email=None)
    refused = await open_application(client, api_keys.portal, no_email)
    expect_problem(refused, 409, "no_email_address")


async def test_who_may_open_an_application(
    client: httpx.AsyncClient, api_keys: Keys, token_user: Person
) -> None:
    for role in ("agency_admin", "signer"):
        refused = await open_application(client, getattr(api_keys, role), token_user)
        expect_problem(refused, 403, "forbidden")
    anonymous = await client.post(f"/v1/users/{token_user.mykad}/roaming-applications")
    expect_problem(anonymous, 401, "unauthenticated")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    nobody = Person("991231019999", "x", None, "", None, "")
    expect_problem(await open_application(client, api_keys.portal, nobody), 404, "not_found")
    bad = Person("not-a-mykad", "x", None, "", None, "")
    expect_problem(await open_application(client, api_keys.portal, bad), 404, "not_found")


async def test_verification_is_for_the_portal(
    client: httpx.AsyncClient, api_keys: Keys, token_user: Person, runtime: Runtime
) -> None:
    opened = (await open_application(client, api_keys.portal, token_user)).json()
    token = mail(runtime, "aisyah@jdn.gov.my", "application_email").token
    for role in ("jdn_admin", "agency_admin", "signer"):
        refused = await verify_email(client, getattr(api_keys, role), opened["id"], token)
        expect_problem(refused, 403, "forbidden")
    unknown = await verify_email(client, api_keys.portal, "no-such-application", token)
    expect_problem(unknown, 404, "not_found")


async def test_resend_replaces_the_token(
    client: httpx.AsyncClient,
    api_keys: Keys,
    token_user: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    opened = (await open_application(client, api_keys.portal, token_user)).json()
    old_token = mail(runtime, "aisyah@jdn.gov.my", "application_email").token
    clock.advance(60)
    resent = await resend(client, api_keys.agency_admin, opened["id"])  # their agency: JDN
    assert resent.status_code == 202, resent.text
    assert resent.json() == {
        "purpose": "application_email",
        "destination": "a***@jdn.gov.my",
        "expires_at": "2026-11-30T10:01:00Z",
    }
    new_token = mail(runtime, "aisyah@jdn.gov.my", "application_email").token
    assert new_token != old_token

    stale = await verify_email(client, api_keys.portal, opened["id"], old_token)
    assert "newer" in expect_problem(stale, 409, "otp_consumed")["detail"]
    verified = await verify_email(client, api_keys.portal, opened["id"], new_token)
    assert verified.status_code == 200

    # Verified, waiting for JDN: nothing to resend.
    expect_problem(await resend(client, api_keys.jdn_admin, opened["id"]), 409, "conflict")
    # Approved, PIN not set yet: the PIN-setup e-mail is what goes again.
    approved = (await approve(client, api_keys.jdn_admin, opened["id"])).json()
    first_setup = mail(runtime, "aisyah@jdn.gov.my", "pin_setup").token
    clock.advance(60)
    again = await resend(client, api_keys.jdn_admin, opened["id"])
    assert again.status_code == 202 and again.json()["purpose"] == "pin_setup"
    second_setup = mail(runtime, "aisyah@jdn.gov.my", "pin_setup").token
    credential_id = approved["credential_id"]
    stale_setup = await set_pin(
        client, api_keys.portal, credential_id, new_pin=NEW_PIN, token=first_setup
    )
    expect_problem(stale_setup, 409, "otp_consumed")
    fresh = await set_pin(
        client, api_keys.portal, credential_id, new_pin=NEW_PIN, token=second_setup
    )
    assert fresh.status_code == 200
    # Active: nothing left to resend.
    expect_problem(await resend(client, api_keys.jdn_admin, opened["id"]), 409, "conflict")


async def test_resend_is_for_administrators_of_the_persons_agency(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory
) -> None:
    elsewhere = factory.token_user(email="siti@moh.gov.my", agency="KKM")
    opened = (await open_application(client, api_keys.portal, elsewhere)).json()
    # Another agency's administrator: the application does not exist for them.
    hidden = await resend(client, api_keys.agency_admin, opened["id"])
    expect_problem(hidden, 404, "not_found")
    hidden_get = await client.get(
        f"/v1/roaming-applications/{opened['id']}", headers=bearer(api_keys.agency_admin)
    )
    expect_problem(hidden_get, 404, "not_found")
    kkm_admin = factory.client("sa-kkm", "agency_admin", "KKM")
    assert (await resend(client, kkm_admin, opened["id"])).status_code == 202
    for role in ("portal", "signer"):
        expect_problem(
            await resend(client, getattr(api_keys, role), opened["id"]), 403, "forbidden"
        )


async def test_resend_is_limited_to_five_a_day_per_person(
    client: httpx.AsyncClient,
    api_keys: Keys,
    token_user: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    opened = (await open_application(client, api_keys.portal, token_user)).json()
    for _ in range(5):
        clock.advance(3600)
        assert (await resend(client, api_keys.jdn_admin, opened["id"])).status_code == 202
    token_before = mail(runtime, "aisyah@jdn.gov.my", "application_email").token
    clock.advance(3600)
    limited = await resend(client, api_keys.agency_admin, opened["id"])
    expect_problem(limited, 429, "rate_limited")
    # The first of the five was 5 hours ago: it leaves the 24-hour window in 19 hours.
    assert limited.headers["retry-after"] == str(19 * 3600)
    # The refusal sent nothing and kept the last token working.
    assert mail(runtime, "aisyah@jdn.gov.my", "application_email").token == token_before
    clock.advance(19 * 3600)
    assert (await resend(client, api_keys.jdn_admin, opened["id"])).status_code == 202


async def test_concurrent_openings_leave_one_application(
    client: httpx.AsyncClient, api_keys: Keys, token_user: Person, runtime: Runtime
) -> None:
    import asyncio

    answers = await asyncio.gather(
        *(open_application(client, api_keys.portal, token_user) for _ in range(5))
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409]
    with runtime.sessions() as session:
        assert len(session.scalars(select(RoamingApplication)).all()) == 1


async def test_approved_credential_is_pending_until_its_pin(
    client: httpx.AsyncClient, api_keys: Keys, token_user: Person, runtime: Runtime
) -> None:
    _application_id, credential_id = await approved_credential(
        client, api_keys, runtime, token_user
    )
    trivial = await set_pin(
        client,
        api_keys.portal,
        credential_id,
        new_pin="123456",
        token=mail(runtime, "aisyah@jdn.gov.my", "pin_setup").token,
    )
    expect_problem(trivial, 422, "validation_error")
    # A change with a "current PIN" is meaningless before the first one.
    no_pin_yet = await set_pin(
        client, api_keys.portal, credential_id, new_pin=NEW_PIN, current_pin="583920"
    )
    expect_problem(no_pin_yet, 409, "credential_not_active")


async def test_a_person_whose_certificate_expired_applies_again(
    client: httpx.AsyncClient,
    api_keys: Keys,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    person = factory.person()
    clock.advance(days=731)
    credential_id = await active_credential(client, api_keys, runtime, person)
    media = await client.get(
        f"/v1/users/{person.mykad}/credentials", headers=bearer(api_keys.portal)
    )
    statuses = {c["id"]: c["status"] for c in media.json()}
    assert statuses == {person.credential_id: "superseded", credential_id: "active"}
    signed = await sign(client, api_keys.signer, runtime, person.mykad, NEW_PIN)
    assert signed.status_code == 201, signed.text
