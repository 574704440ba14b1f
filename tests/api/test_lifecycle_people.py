"""Contact details over HTTP: a new e-mail address only once confirmed; phone; agency."""

from __future__ import annotations

import httpx

from app.clock import FrozenClock
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.api.lifecycle_steps import (
    NEW_PIN,
    expect_problem,
    mail,
    open_application,
    request_signature,
    set_pin,
    sign,
    verify_email,
)
from tests.factories import Factory, Person
from tests.helpers import queued_message
from tests.mailbox import mails


async def patch(client: httpx.AsyncClient, key: str, mykad: str, **body: object) -> httpx.Response:
    return await client.patch(f"/v1/users/{mykad}", json=body, headers=bearer(key))


async def confirm(client: httpx.AsyncClient, key: str, mykad: str, token: str) -> httpx.Response:
    return await client.post(
        f"/v1/users/{mykad}/email-verification", json={"token": token}, headers=bearer(key)
    )


async def test_a_new_address_takes_effect_only_once_confirmed(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    changed = await patch(client, api_keys.portal, person.mykad, email="aisyah.new@mof.gov.my")
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == "aisyah@jdn.gov.my"
    assert changed.json()["pending_email"] == "aisyah.new@mof.gov.my"
    confirmation = mail(runtime, "aisyah.new@mof.gov.my", "email_change")
    assert confirmation.text.splitlines()[0] == f"Token: {confirmation.token}"
    assert "new e-mail address" in confirmation.subject

    # Until it is confirmed, OTPs still go to the registered address.
    created = await request_signature(client, api_keys.signer, person.mykad)
    assert created.json()["destination"] == "a***@jdn.gov.my"
    otp_mail = queued_message(runtime.sessions, runtime.keys.outbox_seal, created.json()["id"])
    assert otp_mail["To"] == "aisyah@jdn.gov.my"

    wrong = await confirm(client, api_keys.portal, person.mykad, "not-the-token")
    expect_problem(wrong, 422, "validation_error")
    assert (await client.get(f"/v1/users/{person.mykad}", headers=bearer(api_keys.portal))).json()[
        "email"
    ] == "aisyah@jdn.gov.my"

    clock.advance(60)
    confirmed = await confirm(client, api_keys.portal, person.mykad, confirmation.token)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["email"] == "aisyah.new@mof.gov.my"
    assert confirmed.json()["pending_email"] is None
    told = mail(runtime, "aisyah@jdn.gov.my", "email_changed")
    assert "a***@mof.gov.my" in told.text and "Token:" not in told.text
    created = await request_signature(client, api_keys.signer, person.mykad, "after")
    assert created.json()["destination"] == "a***@mof.gov.my"
    reused = await confirm(client, api_keys.portal, person.mykad, confirmation.token)
    expect_problem(reused, 409, "otp_consumed")


async def test_an_expired_or_replaced_confirmation_is_refused(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    await patch(client, api_keys.portal, person.mykad, email="one@jdn.gov.my")
    first = mail(runtime, "one@jdn.gov.my", "email_change").token
    await patch(client, api_keys.portal, person.mykad, email="two@jdn.gov.my")
    second = mail(runtime, "two@jdn.gov.my", "email_change").token
    expect_problem(await confirm(client, api_keys.portal, person.mykad, first), 409, "otp_consumed")
    clock.advance(72 * 3600)
    expect_problem(await confirm(client, api_keys.portal, person.mykad, second), 410, "otp_expired")
    fetched = await client.get(f"/v1/users/{person.mykad}", headers=bearer(api_keys.portal))
    assert fetched.json()["email"] == "aisyah@jdn.gov.my"
    assert fetched.json()["pending_email"] is None


async def test_no_pin_reset_goes_to_a_freshly_changed_address(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    assert person.credential_id is not None
    # A reset token sent to the old address before the change...
    await client.post(
        f"/v1/credentials/{person.credential_id}/pin-reset", headers=bearer(api_keys.portal)
    )
    old_reset = mail(runtime, "aisyah@jdn.gov.my", "pin_reset").token
    await patch(client, api_keys.portal, person.mykad, email="new@jdn.gov.my")
    await confirm(
        client, api_keys.portal, person.mykad, mail(runtime, "new@jdn.gov.my", "email_change").token
    )
    # ...no longer works once the address changed,
    stale = await set_pin(
        client, api_keys.portal, person.credential_id, new_pin=NEW_PIN, token=old_reset
    )
    expect_problem(stale, 409, "otp_consumed")
    # and no reset goes to the new address for 24 hours.
    clock.advance(23 * 3600)
    early = await client.post(
        f"/v1/credentials/{person.credential_id}/pin-reset", headers=bearer(api_keys.portal)
    )
    assert "recently" in expect_problem(early, 409, "conflict")["detail"]
    assert not mails(
        runtime.sessions, runtime.keys.outbox_seal, recipient="new@jdn.gov.my", purpose="pin_reset"
    )
    clock.advance(3600)
    later = await client.post(
        f"/v1/credentials/{person.credential_id}/pin-reset", headers=bearer(api_keys.portal)
    )
    assert later.status_code == 202
    assert later.json()["destination"] == "n***@jdn.gov.my"


async def test_an_open_application_is_verified_at_the_new_address(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, runtime: Runtime
) -> None:
    token_user = factory.token_user()
    application = (await open_application(client, api_keys.portal, token_user)).json()
    old_token = mail(runtime, "aisyah@jdn.gov.my", "application_email").token
    await patch(client, api_keys.portal, token_user.mykad, email="moved@jdn.gov.my")
    await confirm(
        client,
        api_keys.portal,
        token_user.mykad,
        mail(runtime, "moved@jdn.gov.my", "email_change").token,
    )
    stale = await verify_email(client, api_keys.portal, application["id"], old_token)
    expect_problem(stale, 409, "otp_consumed")
    new_token = mail(runtime, "moved@jdn.gov.my", "application_email").token
    verified = await verify_email(client, api_keys.portal, application["id"], new_token)
    assert verified.status_code == 200


async def test_phone_changes(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    changed = await patch(client, api_keys.jdn_admin, person.mykad, phone="019-876 5432")
    assert changed.status_code == 200, changed.text
    assert changed.json()["phone"] == "+60198765432"
    removed = await patch(client, api_keys.portal, person.mykad, phone=None)
    assert removed.json()["phone"] is None
    invalid = await patch(client, api_keys.portal, person.mykad, phone="03-2345 6789")
    assert expect_problem(invalid, 422, "validation_error")["errors"][0]["pointer"] == "/phone"
    audit = await client.get(
        "/v1/audit-events",
        params={"mykad": person.mykad, "action": "user.phone_changed"},
        headers=bearer(api_keys.jdn_admin),
    )
    assert [e["outcome"] for e in audit.json()["events"]] == ["ok", "removed"]


async def test_an_agency_transfer_leaves_the_credential_as_it_is(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, runtime: Runtime
) -> None:
    person = factory.person(agency="JDN")
    moved = await patch(client, api_keys.jdn_admin, person.mykad, agency="KKM")
    assert moved.status_code == 200 and moved.json()["agency"] == "KKM"
    media = await client.get(
        f"/v1/users/{person.mykad}/credentials", headers=bearer(api_keys.jdn_admin)
    )
    assert [(c["id"], c["status"]) for c in media.json()] == [(person.credential_id, "active")]
    signed = await sign(client, api_keys.signer, runtime, person.mykad, person.pin)
    assert signed.status_code == 201, signed.text
    # The old agency's administrator no longer sees the person; the new one does.
    hidden = await client.get(f"/v1/users/{person.mykad}", headers=bearer(api_keys.agency_admin))
    expect_problem(hidden, 404, "not_found")
    kkm_admin = factory.client("sa-kkm", "agency_admin", "KKM")
    assert (
        await client.get(f"/v1/users/{person.mykad}", headers=bearer(kkm_admin))
    ).status_code == 200


async def test_update_refusals(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    for role in ("agency_admin", "signer"):
        refused = await patch(client, getattr(api_keys, role), person.mykad, agency="KKM")
        expect_problem(refused, 403, "forbidden")
    expect_problem(
        await patch(client, api_keys.jdn_admin, "991231019999", agency="KKM"), 404, "not_found"
    )
    for body in ({"email": None}, {"agency": None}, {"email": "nope"}, {"name": "X"}):
        expect_problem(
            await patch(client, api_keys.portal, person.mykad, **body), 422, "validation_error"
        )
    for role in ("jdn_admin", "agency_admin"):
        refused = await confirm(client, getattr(api_keys, role), person.mykad, "token")
        expect_problem(refused, 403, "forbidden")
    unchanged = await patch(client, api_keys.portal, person.mykad)
    assert unchanged.status_code == 200 and unchanged.json()["email"] == "aisyah@jdn.gov.my"
    same = await patch(client, api_keys.portal, person.mykad, email="aisyah@jdn.gov.my")
    assert same.json()["pending_email"] is None
    assert not mails(runtime.sessions, runtime.keys.outbox_seal, purpose="email_change")


async def test_address_changes_are_limited(
    client: httpx.AsyncClient, api_keys: Keys, person: Person
) -> None:
    for n in range(5):
        answer = await patch(client, api_keys.portal, person.mykad, email=f"n{n}@jdn.gov.my")
        assert answer.status_code == 200
    limited = await patch(client, api_keys.portal, person.mykad, email="n5@jdn.gov.my")
    expect_problem(limited, 429, "rate_limited")
    assert "retry-after" in limited.headers


async def test_a_new_phone_number_deactivates_the_active_device(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, runtime: Runtime
) -> None:
    from app.models.device import Device

    person = factory.person()
    app = factory.mobile_device(person)
    changed = await patch(client, api_keys.portal, person.mykad, phone="019-876 5432")
    assert changed.status_code == 200, changed.text
    with runtime.sessions() as session:
        device = session.get(Device, app.device_id)
        assert device is not None and device.status != "active"  # FAQ 14, 17
    kept = factory.person()
    other_app = factory.mobile_device(kept)
    same = await patch(client, api_keys.portal, kept.mykad, agency="MOF")  # no phone change
    assert same.status_code == 200
    with runtime.sessions() as session:
        device = session.get(Device, other_app.device_id)
        assert device is not None and device.status == "active"
