"""The roaming PIN over HTTP: change, reset by e-mail, the lock and the unlock."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from app.clock import FrozenClock
from app.models import AuditEvent, Credential
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.api.lifecycle_steps import (
    NEW_PIN,
    OTHER_PIN,
    expect_problem,
    mail,
    request_signature,
    set_pin,
    sign,
)
from tests.factories import Factory, Person
from tests.mailbox import mails

WRONG_PIN = "902847"


async def pin_reset(client: httpx.AsyncClient, key: str, credential_id: str) -> httpx.Response:
    return await client.post(f"/v1/credentials/{credential_id}/pin-reset", headers=bearer(key))


async def unlock(client: httpx.AsyncClient, key: str, credential_id: str) -> httpx.Response:
    return await client.post(f"/v1/credentials/{credential_id}/unlock", headers=bearer(key))


async def lock_by_pin_changes(
    client: httpx.AsyncClient, keys: Keys, credential_id: str
) -> list[httpx.Response]:
    return [
        await set_pin(client, keys.portal, credential_id, new_pin=NEW_PIN, current_pin=WRONG_PIN)
        for _ in range(5)
    ]


async def test_change_with_the_current_pin(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    assert person.credential_id is not None
    changed = await set_pin(
        client, api_keys.portal, person.credential_id, new_pin=NEW_PIN, current_pin=person.pin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] == "active"
    notice = mail(runtime, "aisyah@jdn.gov.my", "pin_changed")
    assert "PIN" in notice.subject and " / " in notice.subject
    assert "Token:" not in notice.text and NEW_PIN not in notice.text
    refused = await sign(client, api_keys.signer, runtime, person.mykad, person.pin, "old PIN")
    expect_problem(refused, 403, "authorization_failed")
    signed = await sign(client, api_keys.signer, runtime, person.mykad, NEW_PIN, "new PIN")
    assert signed.status_code == 201, signed.text


async def test_pin_change_refusals_that_count_nothing(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    assert person.credential_id is not None
    cid = person.credential_id
    for body in (
        {"new_pin": person.pin, "current_pin": person.pin},  # the same PIN
        {"new_pin": "111111", "current_pin": person.pin},  # trivial
        {"new_pin": NEW_PIN},  # no proof
        {"new_pin": NEW_PIN, "current_pin": person.pin, "token": "x"},  # two proofs
        {"new_pin": NEW_PIN, "current_pin": "12ab56"},  # malformed current PIN
    ):
        expect_problem(await set_pin(client, api_keys.portal, cid, **body), 422, "validation_error")
    with runtime.sessions() as session:
        credential = session.get(Credential, cid)
        assert credential is not None and credential.pin_failures == 0
    for role in ("jdn_admin", "agency_admin", "signer"):
        refused = await set_pin(
            client, getattr(api_keys, role), cid, new_pin=NEW_PIN, current_pin=person.pin
        )
        expect_problem(refused, 403, "forbidden")
    unknown = await set_pin(
        client, api_keys.portal, "no-such-credential", new_pin=NEW_PIN, current_pin=person.pin
    )
    expect_problem(unknown, 404, "not_found")


async def test_five_wrong_current_pins_lock_the_credential(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    assert person.credential_id is not None
    answers = await lock_by_pin_changes(client, api_keys, person.credential_id)
    assert [a.status_code for a in answers] == [403] * 5
    assert [a.json()["code"] for a in answers] == ["authorization_failed"] * 5
    assert [a.json()["attempts_remaining"] for a in answers] == [4, 3, 2, 1, 0]
    with runtime.sessions() as session:  # counted although every answer was a refusal
        credential = session.get(Credential, person.credential_id)
        assert credential is not None
        assert credential.status == "locked" and credential.pin_failures == 5

    locked = await set_pin(
        client, api_keys.portal, person.credential_id, new_pin=NEW_PIN, current_pin=person.pin
    )
    expect_problem(locked, 423, "credential_locked")
    expect_problem(
        await request_signature(client, api_keys.signer, person.mykad), 423, "credential_locked"
    )
    notices = mails(runtime.sessions, runtime.keys.outbox_seal, purpose="credential_locked")
    assert len(notices) == 1 and notices[0].recipient == "aisyah@jdn.gov.my"
    assert "locked" in notices[0].subject


async def test_wrong_pins_in_signing_and_in_a_change_count_together(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    assert person.credential_id is not None
    for n in range(3):
        refused = await sign(client, api_keys.signer, runtime, person.mykad, WRONG_PIN, str(n))
        expect_problem(refused, 403, "authorization_failed")
    answers = [
        await set_pin(
            client, api_keys.portal, person.credential_id, new_pin=NEW_PIN, current_pin=WRONG_PIN
        )
        for _ in range(2)
    ]
    assert [a.json()["attempts_remaining"] for a in answers] == [1, 0]
    expect_problem(
        await request_signature(client, api_keys.signer, person.mykad, "after"),
        423,
        "credential_locked",
    )


async def test_a_right_current_pin_resets_the_count(
    client: httpx.AsyncClient, api_keys: Keys, person: Person
) -> None:
    assert person.credential_id is not None
    cid = person.credential_id
    for _ in range(4):
        await set_pin(client, api_keys.portal, cid, new_pin=NEW_PIN, current_pin=WRONG_PIN)
    assert (
        await set_pin(client, api_keys.portal, cid, new_pin=NEW_PIN, current_pin=person.pin)
    ).status_code == 200
    again = await set_pin(client, api_keys.portal, cid, new_pin=OTHER_PIN, current_pin=WRONG_PIN)
    assert again.json()["attempts_remaining"] == 4


async def test_reset_by_email_unlocks(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    assert person.credential_id is not None
    await lock_by_pin_changes(client, api_keys, person.credential_id)
    requested = await pin_reset(client, api_keys.portal, person.credential_id)
    assert requested.status_code == 202, requested.text
    assert requested.json() == {
        "purpose": "pin_reset",
        "destination": "a***@jdn.gov.my",
        "expires_at": "2026-11-27T11:00:00Z",
    }
    reset_mail = mail(runtime, "aisyah@jdn.gov.my", "pin_reset")
    assert reset_mail.text.splitlines()[0] == f"Token: {reset_mail.token}"
    assert "reset" in reset_mail.subject.lower()

    wrong = await set_pin(
        client, api_keys.portal, person.credential_id, new_pin=NEW_PIN, token="not-the-token"
    )
    expect_problem(wrong, 422, "validation_error")
    done = await set_pin(
        client, api_keys.portal, person.credential_id, new_pin=NEW_PIN, token=reset_mail.token
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "active" and done.json()["locked_at"] is None
    assert mail(runtime, "aisyah@jdn.gov.my", "pin_changed")
    reused = await set_pin(
        client, api_keys.portal, person.credential_id, new_pin=OTHER_PIN, token=reset_mail.token
    )
    expect_problem(reused, 409, "otp_consumed")
    signed = await sign(client, api_keys.signer, runtime, person.mykad, NEW_PIN)
    assert signed.status_code == 201, signed.text


async def test_an_expired_reset_token_is_refused(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    assert person.credential_id is not None
    await pin_reset(client, api_keys.portal, person.credential_id)
    token = mail(runtime, "aisyah@jdn.gov.my", "pin_reset").token
    clock.advance(3600)
    expired = await set_pin(
        client, api_keys.portal, person.credential_id, new_pin=NEW_PIN, token=token
    )
    expect_problem(expired, 410, "otp_expired")
    signed = await sign(client, api_keys.signer, runtime, person.mykad, person.pin)
    assert signed.status_code == 201  # the PIN did not change


async def test_reset_requests_are_limited(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, clock: FrozenClock
) -> None:
    assert person.credential_id is not None
    for _ in range(5):
        assert (await pin_reset(client, api_keys.portal, person.credential_id)).status_code == 202
        clock.advance(60)
    limited = await pin_reset(client, api_keys.portal, person.credential_id)
    expect_problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) == 24 * 3600 - 5 * 60
    for role in ("jdn_admin", "agency_admin", "signer"):
        refused = await pin_reset(client, getattr(api_keys, role), person.credential_id)
        expect_problem(refused, 403, "forbidden")


async def test_no_reset_without_an_address_or_for_a_token(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory
) -> None:
    silent = factory.person(email=None)
    assert silent.credential_id is not None
    expect_problem(
        await pin_reset(client, api_keys.portal, silent.credential_id), 409, "no_email_address"
    )
    token_id = factory.record_medium(silent.mykad, "TKN-77", factory.now().replace(year=2027))
    expect_problem(await pin_reset(client, api_keys.portal, token_id), 409, "conflict")


async def test_jdn_unlocks(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    assert person.credential_id is not None
    not_locked = await unlock(client, api_keys.jdn_admin, person.credential_id)
    expect_problem(not_locked, 409, "conflict")
    await lock_by_pin_changes(client, api_keys, person.credential_id)
    for role in ("portal", "agency_admin", "signer"):
        expect_problem(
            await unlock(client, getattr(api_keys, role), person.credential_id), 403, "forbidden"
        )
    unlocked = await unlock(client, api_keys.jdn_admin, person.credential_id)
    assert unlocked.status_code == 200 and unlocked.json()["status"] == "active"
    signed = await sign(client, api_keys.signer, runtime, person.mykad, person.pin)
    assert signed.status_code == 201  # the PIN is what it was
    with runtime.sessions() as session:
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {"credential.locked", "credential.unlocked", "credential.pin_change_rejected"} <= actions
    expect_problem(await unlock(client, api_keys.jdn_admin, "nope"), 404, "not_found")
