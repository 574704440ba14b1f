"""MyGPKI Mobile over HTTP, with a frozen clock: registration, activation, admin, removal."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from app.clock import FrozenClock
from app.main import create_app
from app.models import AuditEvent
from app.models.device import Device
from app.models.rate_limit import RateWindow
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.factories import Factory, Person
from tests.mailbox import last_mail, mails
from tests.mobile_app import ELIGIBLE_ANDROID, MobileApp, activation_code


def registration(person: Person, **overrides: Any) -> dict[str, Any]:
    return {"mykad": person.mykad, "phone": "012-345 6789", **ELIGIBLE_ANDROID, **overrides}


async def register(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/devices", json=body)


def code_for(runtime: Runtime, person: Person) -> str:
    assert person.email is not None
    mail = last_mail(
        runtime.sessions,
        runtime.keys.outbox_seal,
        recipient=person.email,
        purpose="device_activation",
    )
    return activation_code(mail.text)


async def activate(
    client: httpx.AsyncClient, app: MobileApp, code: str, public_key: str | None = None
) -> httpx.Response:
    return await client.post(
        f"/v1/devices/{app.device_id}/activation",
        json={"code": code, "public_key": public_key or app.public_key_pem},
    )


async def registered_app(
    client: httpx.AsyncClient, runtime: Runtime, person: Person, **overrides: Any
) -> tuple[MobileApp, str]:
    response = await register(client, registration(person, **overrides))
    assert response.status_code == 202, response.text
    return MobileApp(response.json()["device_id"]), code_for(runtime, person)


async def active_app(client: httpx.AsyncClient, runtime: Runtime, person: Person) -> MobileApp:
    app, code = await registered_app(client, runtime, person)
    activated = await activate(client, app, code)
    assert activated.status_code == 200, activated.text
    return app


async def fetch(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock, **sign: Any
) -> httpx.Response:
    sign.setdefault("created", clock.now())
    return await client.send(app.fetch_request(client, **sign))


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def audit_actions(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


# -- registration ---------------------------------------------------------------------------


async def test_registration_emails_a_bilingual_activation_code(
    client: httpx.AsyncClient, runtime: Runtime, person: Person
) -> None:
    response = await register(client, registration(person))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending_activation"
    assert body["activation_expires_at"] == "2026-11-27T10:10:00Z"
    mail = last_mail(
        runtime.sessions,
        runtime.keys.outbox_seal,
        recipient="aisyah@jdn.gov.my",
        purpose="device_activation",
    )
    assert "activation code" in mail.subject and "pengaktifan" in mail.subject
    assert mail.text.splitlines()[0].startswith("Kod / Code: ")
    assert "Kepada" in mail.text and "Dear" in mail.text
    assert "Pixel 8" not in mail.text  # nothing the unauthenticated caller typed
    with runtime.sessions() as session:
        device = session.get(Device, body["device_id"])
        assert device is not None
        assert device.phone_last4 == "6789" and device.status == "pending_activation"
        assert device.activation_code_mac is not None and len(device.activation_code_mac) == 32
    assert "device.registered" in audit_actions(runtime)


@pytest.mark.parametrize(
    ("overrides", "pointer", "words"),
    [
        ({"platform": "android", "os_version": "7.1.2"}, "/os_version", "Android 8 or later"),
        ({"platform": "ios", "os_version": "11.4"}, "/os_version", "iOS 12 or later"),
        ({"has_sim": False}, "/has_sim", "SIM card"),
        ({"platform": "ios", "os_version": "17.4", "has_sim": False}, "/has_sim", "SIM card"),
    ],
)
async def test_ineligible_devices_are_refused_naming_the_rule(
    client: httpx.AsyncClient,
    person: Person,
    overrides: dict[str, Any],
    pointer: str,
    words: str,
) -> None:
    response = await register(client, registration(person, **overrides))
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "device_not_eligible"
    assert words in problem["detail"]
    assert problem["errors"][0]["pointer"] == pointer


@pytest.mark.parametrize(
    "overrides",
    [
        {"platform": "harmonyos", "os_version": "2.0"},
        {"platform": "android", "os_version": "8"},
        {"platform": "ios", "os_version": "12.0.1", "model": "iPad (SIM)"},
    ],
)
async def test_eligible_devices_any_harmonyos_and_tablets_with_a_sim(
    client: httpx.AsyncClient, person: Person, overrides: dict[str, Any]
) -> None:
    response = await register(client, registration(person, **overrides))
    assert response.status_code == 202, response.text


async def test_eligibility_is_checked_before_the_phone(
    client: httpx.AsyncClient, person: Person
) -> None:
    response = await register(client, registration(person, phone="0199999999", has_sim=False))
    assert response.json()["code"] == "device_not_eligible"


async def test_unknown_mykad_and_wrong_phone_get_the_same_answer(
    client: httpx.AsyncClient, runtime: Runtime, person: Person
) -> None:
    wrong_phone = await register(client, registration(person, phone="+60199999999"))
    unknown = await register(client, registration(person, mykad="880808-08-8888"))
    assert wrong_phone.status_code == unknown.status_code == 422
    assert wrong_phone.json() == unknown.json()
    assert wrong_phone.headers.keys() - {"x-request-id"} == unknown.headers.keys() - {
        "x-request-id"
    }
    problem = wrong_phone.json()
    assert problem["code"] == "phone_mismatch"
    assert "portal" in problem["detail"]
    assert problem["errors"] == [{"pointer": "/phone", "detail": problem["detail"]}]
    # Both refusals are audited alike, and no device or e-mail was made.
    assert audit_actions(runtime).count("device.registration_refused") == 2
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 0
    assert mails(runtime.sessions, runtime.keys.outbox_seal, purpose="device_activation") == []


async def test_unknown_mykad_and_wrong_phone_do_the_same_work(
    client: httpx.AsyncClient, runtime: Runtime, person: Person
) -> None:
    """The same statements, in the same order: no timing shape tells a MyKad nobody holds."""

    async def statements_of(body: dict[str, Any]) -> list[str]:
        seen: list[str] = []

        def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.append(" ".join(statement.split()))

        event.listen(runtime.engine, "before_cursor_execute", capture)
        try:
            assert (await register(client, body)).json()["code"] == "phone_mismatch"
        finally:
            event.remove(runtime.engine, "before_cursor_execute", capture)
        return seen

    wrong_phone = registration(person, phone="+60199999999")
    unknown = registration(person, mykad="880808-08-8888")
    for body in (wrong_phone, unknown):  # each audit chain's first event also creates its head
        await statements_of(body)
    assert await statements_of(wrong_phone) == await statements_of(unknown)


async def test_phone_is_matched_in_any_accepted_spelling(
    client: httpx.AsyncClient, person: Person
) -> None:
    for phone in ("0123456789", "60123456789", "+60 12-345 6789"):
        response = await register(client, registration(person, phone=phone))
        assert response.status_code == 202, (phone, response.text)


@pytest.mark.parametrize(
    "overrides",
    [
        {"phone": "12345"},
        {"mykad": "851301145555"},
        {"platform": "windows"},
        {"os_version": "fourteen"},
        {"has_sim": "yes"},
        {"imei": "490154203237518"},
        {"model": "bad\nmodel"},
    ],
)
async def test_malformed_registrations_are_validation_errors(
    client: httpx.AsyncClient, person: Person, overrides: dict[str, Any]
) -> None:
    response = await register(client, registration(person, **overrides))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@contextlib.asynccontextmanager
async def client_from(runtime: Runtime, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connections come from `address`."""
    app = create_app(runtime=runtime, background_workers=False)
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roamsign.test") as client:
        yield client


async def test_wrong_phones_count_against_their_address_and_never_block_the_person(
    client: httpx.AsyncClient, runtime: Runtime, person: Person, clock: FrozenClock
) -> None:
    limit = runtime.settings.device_registrations_per_mykad_per_address
    async with client_from(runtime, "203.0.113.66") as attacker:
        for _ in range(limit):
            refused = await register(attacker, registration(person, phone="+60199999999"))
            assert refused.json()["code"] == "phone_mismatch"
        # The guesser's own budget for this MyKad is spent, whatever phone it tries now.
        for phone in ("+60199999998", "012-345 6789"):
            limited = await register(attacker, registration(person, phone=phone))
            assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
            # A hit counts for the hour and the 10-minute bucket it fell in.
            assert int(limited.headers["Retry-After"]) == 70 * 60
        # The same for a MyKad nobody holds: the limit says nothing about the person.
        for _ in range(limit):
            unknown = await register(attacker, registration(person, mykad="880808-08-8888"))
            assert unknown.json()["code"] == "phone_mismatch"
    # The person, from their own address, is not held back by any of it.
    assert (await register(client, registration(person))).status_code == 202
    with runtime.sessions() as session:
        keys = list(session.scalars(select(RateWindow.key)))
    assert all(person.mykad not in key for key in keys)  # only keyed digests are stored


async def test_registrations_with_the_right_phone_are_limited_per_mykad(
    client: httpx.AsyncClient, runtime: Runtime, person: Person, clock: FrozenClock
) -> None:
    runtime.settings.device_registrations_per_mykad_per_address = 100
    limit = runtime.settings.device_registrations_per_mykad
    for _ in range(limit):
        assert (await register(client, registration(person))).status_code == 202
    limited = await register(client, registration(person))
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) == 70 * 60
    # A wrong phone is still just a wrong phone; and refusals are not counted: once the five
    # are forgotten, the person registers again.
    wrong_phone = await register(client, registration(person, phone="+60199999999"))
    assert wrong_phone.json()["code"] == "phone_mismatch"
    clock.advance(minutes=70)
    assert (await register(client, registration(person))).status_code == 202


async def test_registration_is_rate_limited_per_client_address(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    runtime.settings.device_registrations_per_address = 3
    people = [factory.person() for _ in range(4)]
    answers = [(await register(client, registration(p))).status_code for p in people]
    assert answers == [202, 202, 202, 429]


# -- activation -----------------------------------------------------------------------------


async def test_activation_makes_the_device_active_and_emails_the_person(
    client: httpx.AsyncClient, runtime: Runtime, person: Person
) -> None:
    app, code = await registered_app(client, runtime, person)
    response = await activate(client, app, code)
    assert response.status_code == 200, response.text
    device = response.json()
    assert device["status"] == "active"
    assert device["activated_at"] == "2026-11-27T10:00:00Z"
    assert device["phone"] == "****6789"
    notice = last_mail(
        runtime.sessions,
        runtime.keys.outbox_seal,
        recipient="aisyah@jdn.gov.my",
        purpose="device_activated",
    )
    assert "activated" in notice.subject and "diaktifkan" in notice.subject
    assert "device.activated" in audit_actions(runtime)


async def test_three_wrong_codes_then_locked_even_for_the_right_one(
    client: httpx.AsyncClient, runtime: Runtime, person: Person
) -> None:
    app, code = await registered_app(client, runtime, person)
    for remaining in (2, 1, 0):
        refused = await activate(client, app, wrong(code))
        assert refused.status_code == 403
        assert refused.json()["code"] == "authorization_failed"
        assert refused.json()["attempts_remaining"] == remaining
    locked = await activate(client, app, code)
    assert locked.status_code == 423
    assert locked.json()["code"] == "request_locked"
    with runtime.sessions() as session:
        device = session.get(Device, app.device_id)
        assert device is not None
        assert device.activation_attempts == 3 and device.status == "pending_activation"


async def test_an_expired_code_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, person: Person, clock: FrozenClock
) -> None:
    app, code = await registered_app(client, runtime, person)
    clock.advance(seconds=runtime.settings.device_activation_ttl_seconds)
    expired = await activate(client, app, code)
    assert expired.status_code == 410
    assert expired.json()["code"] == "otp_expired"


async def test_a_used_code_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, person: Person
) -> None:
    app, code = await registered_app(client, runtime, person)
    assert (await activate(client, app, code)).status_code == 200
    again = await activate(client, app, code, MobileApp().public_key_pem)
    assert again.status_code == 409
    assert again.json()["code"] == "otp_consumed"


async def test_a_newer_registration_ends_the_older_pending_one(
    client: httpx.AsyncClient, runtime: Runtime, person: Person
) -> None:
    first, first_code = await registered_app(client, runtime, person)
    second, second_code = await registered_app(client, runtime, person)
    assert (await activate(client, first, first_code)).json()["code"] == "otp_consumed"
    assert (await activate(client, second, second_code)).status_code == 200


@pytest.mark.parametrize(
    ("code", "public_key", "pointer"),
    [
        ("12345", None, "/code"),
        ("12a456", None, "/code"),
        (None, "not a key", "/public_key"),
        (None, "rsa", "/public_key"),
        (None, "p384", "/public_key"),
    ],
)
async def test_malformed_activations_are_not_counted(
    client: httpx.AsyncClient,
    runtime: Runtime,
    person: Person,
    code: str | None,
    public_key: str | None,
    pointer: str,
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    app, right = await registered_app(client, runtime, person)
    if public_key == "rsa":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif public_key == "p384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = None
    if key is not None:
        public_key = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
    response = await activate(client, app, code or right, public_key)
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == pointer
    assert (await activate(client, app, right)).status_code == 200


async def test_activating_an_unknown_device_is_not_found(client: httpx.AsyncClient) -> None:
    response = await activate(client, MobileApp("00000000-0000-4000-8000-000000000000"), "123456")
    assert response.status_code == 404


async def test_a_new_device_on_any_platform_deactivates_the_previous_one(
    client: httpx.AsyncClient, runtime: Runtime, person: Person, clock: FrozenClock
) -> None:
    android = await active_app(client, runtime, person)
    assert (await fetch(client, android, clock)).status_code == 200
    clock.advance(seconds=1)  # its notice the later one: last_mail orders by time
    iphone, code = await registered_app(
        client, runtime, person, platform="ios", os_version="17.4", model="iPhone 15"
    )
    assert (await activate(client, iphone, code)).status_code == 200

    refused = await fetch(client, android, clock)
    assert refused.status_code == 401
    assert "no longer active" in refused.json()["detail"]
    assert (await fetch(client, iphone, clock)).status_code == 200
    with runtime.sessions() as session:
        statuses = {row.platform: row.status for row in session.execute(select(Device)).scalars()}
    assert statuses == {"android": "deactivated", "ios": "active"}
    notice = last_mail(
        runtime.sessions,
        runtime.keys.outbox_seal,
        recipient="aisyah@jdn.gov.my",
        purpose="device_activated",
    )
    assert "Android" in notice.text and "deactivated" in notice.text


# -- removal and JDN --------------------------------------------------------------------------


async def test_the_device_removes_itself(
    client: httpx.AsyncClient, runtime: Runtime, person: Person, clock: FrozenClock
) -> None:
    app = await active_app(client, runtime, person)
    removed = await client.send(app.delete_request(client, created=clock.now()))
    assert removed.status_code == 204
    assert (await fetch(client, app, clock)).status_code == 401
    again = await client.send(app.delete_request(client, created=clock.now()))
    assert again.status_code == 401
    with runtime.sessions() as session:
        device = session.get(Device, app.device_id)
        assert device is not None
        assert (device.status, device.deactivation_reason) == ("deactivated", "removed_by_device")


async def test_jdn_lists_and_deactivates_devices(
    client: httpx.AsyncClient,
    runtime: Runtime,
    person: Person,
    api_keys: Keys,
    clock: FrozenClock,
) -> None:
    old = await active_app(client, runtime, person)
    clock.advance(minutes=1)
    app = await active_app(client, runtime, person)
    listed = await client.get(
        f"/v1/users/{person.mykad}/devices", headers=bearer(api_keys.jdn_admin)
    )
    assert listed.status_code == 200
    assert [(d["device_id"], d["status"]) for d in listed.json()] == [
        (app.device_id, "active"),
        (old.device_id, "deactivated"),
    ]
    assert listed.json()[1]["deactivation_reason"] == "replaced"

    url = f"/v1/devices/{app.device_id}/deactivation"
    deactivated = await client.post(url, headers=bearer(api_keys.jdn_admin))
    assert deactivated.status_code == 200
    assert deactivated.json()["status"] == "deactivated"
    assert deactivated.json()["deactivation_reason"] == "administrator"
    assert (await fetch(client, app, clock)).status_code == 401
    again = await client.post(url, headers=bearer(api_keys.jdn_admin))
    assert again.status_code == 200 and again.json() == deactivated.json()


@pytest.mark.parametrize("role", ["signer", "portal", "agency_admin"])
async def test_only_jdn_sees_or_deactivates_devices(
    client: httpx.AsyncClient, runtime: Runtime, person: Person, api_keys: Keys, role: str
) -> None:
    app = await active_app(client, runtime, person)
    key = {"signer": api_keys.signer, "portal": api_keys.portal}.get(role, api_keys.agency_admin)
    listed = await client.get(f"/v1/users/{person.mykad}/devices", headers=bearer(key))
    assert listed.status_code == 403
    deactivated = await client.post(
        f"/v1/devices/{app.device_id}/deactivation", headers=bearer(key)
    )
    assert deactivated.status_code == 403
    assert (await client.get(f"/v1/users/{person.mykad}/devices")).status_code == 401


async def test_jdn_gets_not_found_for_unknown_people_and_devices(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    headers = bearer(api_keys.jdn_admin)
    assert (await client.get("/v1/users/880808088888/devices", headers=headers)).status_code == 404
    assert (await client.get("/v1/users/not-a-mykad/devices", headers=headers)).status_code == 404
    unknown = "/v1/devices/00000000-0000-4000-8000-000000000000/deactivation"
    assert (await client.post(unknown, headers=headers)).status_code == 404


async def test_registration_after_removal_starts_over(
    client: httpx.AsyncClient, runtime: Runtime, person: Person, clock: FrozenClock
) -> None:
    app = await active_app(client, runtime, person)
    await client.send(app.delete_request(client, created=clock.now()))
    again = await active_app(client, runtime, person)
    assert (await fetch(client, again, clock)).status_code == 200
