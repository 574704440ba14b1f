"""OTPs by MyGPKI Mobile: channels, store-and-forward, once each, in order, never expired."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from app.clock import FrozenClock
from app.models import AuditEvent, OutboxMessage, SigningRequest
from app.models.device import DeviceMessage, DeviceNonce
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer, request_otp
from tests.factories import Factory, Person
from tests.helpers import document_hash, flushed_new_objects
from tests.mobile_app import MobileApp


async def fetch(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock, wait: int = 0
) -> list[dict[str, Any]]:
    response = await client.send(app.fetch_request(client, wait=wait, created=clock.now()))
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def outbox_otps(runtime: Runtime) -> list[OutboxMessage]:
    with runtime.sessions() as session:
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "otp")))


async def test_mobile_without_an_active_device_is_refused(
    client: httpx.AsyncClient, api_keys: Keys, person: Person
) -> None:
    response = await request_otp(client, api_keys.signer, person, channel="mobile")
    assert response.status_code == 409
    assert response.json()["code"] == "no_active_device"


async def test_auto_without_a_device_falls_back_to_email(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    response = await request_otp(client, api_keys.signer, person, channel="auto")
    assert response.status_code == 201
    assert response.json()["channel"] == "email"
    assert response.json()["destination"] == "a***@jdn.gov.my"
    assert len(outbox_otps(runtime)) == 1


@pytest.mark.parametrize("channel", ["mobile", "auto"])
async def test_an_otp_for_the_device_then_the_signature(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
    channel: str,
) -> None:
    app = factory.mobile_device(person)
    created = await request_otp(client, api_keys.signer, person, channel=channel)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["channel"] == "mobile"
    assert body["destination"] == "MyGPKI Mobile (android, ****6789)"
    assert outbox_otps(runtime) == []  # no e-mail: the OTP waits for the phone

    clock.advance(seconds=5)
    (message,) = await fetch(client, app, clock)
    assert message["request_id"] == body["id"]
    assert message["document_name"] == "Baucar Bayaran PV-2026-000123"
    assert message["requesting_system"] == "igfmas"
    assert message["hash_algorithm"] == "sha256"
    digest = document_hash("PV-1")
    assert message["document_fingerprint"] == f"{digest[:8]}...{digest[-8:]}".upper()
    assert message["issued_at"] == "2026-11-27T10:00:00Z"
    assert message["expires_at"] == body["expires_at"] == "2026-11-27T10:02:00Z"
    assert await fetch(client, app, clock) == []  # delivered once

    signed = await client.post(
        f"/v1/signing-requests/{body['id']}/signature",
        json={"otp": message["otp"], "pin": person.pin},
        headers=bearer(api_keys.signer),
    )
    assert signed.status_code == 201, signed.text
    with runtime.sessions() as session:
        row = session.scalars(select(DeviceMessage)).one()
        assert row.status == "delivered" and row.sealed_payload is None
        delivered = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "otp.delivered")
        ).one()
        assert delivered.target_id == body["id"]
        assert delivered.details["delay_ms"] == 5000


async def test_email_stays_email_with_a_device(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    app = factory.mobile_device(person)
    response = await request_otp(client, api_keys.signer, person, channel="email")
    assert response.json()["channel"] == "email"
    assert len(outbox_otps(runtime)) == 1
    assert await fetch(client, app, clock) == []


async def test_mobile_needs_no_email_address(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, clock: FrozenClock
) -> None:
    person = factory.person(email=None)
    app = factory.mobile_device(person)
    response = await request_otp(client, api_keys.signer, person, channel="auto")
    assert response.status_code == 201, response.text
    assert len(await fetch(client, app, clock)) == 1


async def test_sealed_at_rest_until_delivered(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    app = factory.mobile_device(person)
    await request_otp(client, api_keys.signer, person, channel="mobile")
    with runtime.sessions() as session:
        row = session.scalars(select(DeviceMessage)).one()
        sealed = row.sealed_payload
    assert sealed is not None and b"Baucar" not in sealed and b"otp" not in sealed
    (message,) = await fetch(client, app, clock)
    assert message["otp"].encode() not in sealed


async def test_a_phone_that_was_off_gets_only_what_is_still_valid(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    app = factory.mobile_device(person)
    first = (await request_otp(client, api_keys.signer, person, document="A")).json()
    clock.advance(seconds=60)
    second = (await request_otp(client, api_keys.signer, person, document="B")).json()
    clock.advance(seconds=30)
    third = (await request_otp(client, api_keys.signer, person, document="C")).json()
    clock.advance(seconds=40)  # the first is 130 s old: expired; the others are not
    messages = await fetch(client, app, clock)
    assert [m["request_id"] for m in messages] == [second["id"], third["id"]]
    with runtime.sessions() as session:
        expired = session.scalars(
            select(DeviceMessage).where(DeviceMessage.request_id == first["id"])
        ).one()
        assert expired.status == "expired" and expired.sealed_payload is None


async def test_nothing_expired_is_ever_delivered(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    clock: FrozenClock,
) -> None:
    app = factory.mobile_device(person)
    await request_otp(client, api_keys.signer, person)
    clock.advance(seconds=120)  # the OTP's window, exactly
    assert await fetch(client, app, clock) == []


async def test_messages_of_ended_requests_are_withdrawn(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    app = factory.mobile_device(person)
    cancelled = (await request_otp(client, api_keys.signer, person, document="A")).json()
    kept = (await request_otp(client, api_keys.signer, person, document="B")).json()
    await client.delete(f"/v1/signing-requests/{cancelled['id']}", headers=bearer(api_keys.signer))
    assert [m["request_id"] for m in await fetch(client, app, clock)] == [kept["id"]]
    with runtime.sessions() as session:
        statuses = {
            row.request_id: (row.status, row.sealed_payload)
            for row in session.scalars(select(DeviceMessage))
        }
    assert statuses[cancelled["id"]] == ("withdrawn", None)


async def test_a_replaced_device_gets_nothing_more(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    old = factory.mobile_device(person)
    await request_otp(client, api_keys.signer, person)
    new = factory.mobile_device(person)
    refused = await client.send(old.fetch_request(client, created=clock.now()))
    assert refused.status_code == 401
    # The pending message was withdrawn with the old device, not moved to the new one.
    assert await fetch(client, new, clock) == []
    with runtime.sessions() as session:
        row = session.scalars(select(DeviceMessage)).one()
        assert (row.status, row.sealed_payload) == ("withdrawn", None)


async def test_the_long_poll_answers_as_soon_as_an_otp_is_issued(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    clock: FrozenClock,
) -> None:
    app = factory.mobile_device(person)
    waiting = asyncio.create_task(fetch(client, app, clock, wait=20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    issued_at = time.monotonic()
    created = await request_otp(client, api_keys.signer, person)
    messages = await asyncio.wait_for(waiting, timeout=5)
    assert time.monotonic() - issued_at < 1
    assert [m["request_id"] for m in messages] == [created.json()["id"]]


async def test_the_long_poll_ends_empty_after_its_wait(
    client: httpx.AsyncClient, person: Person, factory: Factory, clock: FrozenClock
) -> None:
    app = factory.mobile_device(person)
    started = time.monotonic()
    assert await fetch(client, app, clock, wait=1) == []
    assert 0.9 < time.monotonic() - started < 3


async def test_the_long_poll_ends_when_the_device_is_deactivated(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    clock: FrozenClock,
) -> None:
    app = factory.mobile_device(person)
    waiting = asyncio.create_task(
        client.send(app.fetch_request(client, wait=20, created=clock.now()))
    )
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await client.post(
        f"/v1/devices/{app.device_id}/deactivation", headers=bearer(api_keys.jdn_admin)
    )
    response = await asyncio.wait_for(waiting, timeout=5)
    assert time.monotonic() - started < 1
    assert response.status_code == 401


async def test_the_wait_is_bounded(
    client: httpx.AsyncClient, person: Person, factory: Factory, clock: FrozenClock
) -> None:
    app = factory.mobile_device(person)
    response = await client.send(app.fetch_request(client, wait=26, created=clock.now()))
    assert response.status_code == 422


async def test_two_concurrent_long_polls_share_one_message(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    clock: FrozenClock,
) -> None:
    app = factory.mobile_device(person)
    polls = [asyncio.create_task(fetch(client, app, clock, wait=2)) for _ in range(2)]
    await asyncio.sleep(0.3)
    await request_otp(client, api_keys.signer, person)
    results = await asyncio.gather(*polls)
    assert sorted(len(messages) for messages in results) == [0, 1]


async def test_a_signing_request_with_a_device_is_audited_with_its_channel(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
) -> None:
    factory.mobile_device(person)
    created = (await request_otp(client, api_keys.signer, person)).json()
    with runtime.sessions() as session:
        issued = session.scalars(select(AuditEvent).where(AuditEvent.action == "otp.issued")).one()
        request = session.get(SigningRequest, created["id"])
    assert issued.details["channel"] == "mobile"
    assert request is not None and request.channel == "mobile"


async def test_the_device_path_writes_its_message_and_nonce_without_the_orm(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    """The stored message and the fetch's nonce are statements built once, run on the
    connection: the ORM's flush and its statement handling cost more than the writes
    (bench/RESULTS.md, session 6). Both rows are still written."""
    app = factory.mobile_device(person)
    orm_statements: list[str] = []

    def record_statement(state: Any) -> None:
        orm_statements.append(str(state.statement))

    event.listen(runtime.sessions, "do_orm_execute", record_statement)
    try:
        with flushed_new_objects(runtime.sessions) as flushed:
            created = await request_otp(client, api_keys.signer, person, channel="mobile")
            (message,) = await fetch(client, app, clock)
    finally:
        event.remove(runtime.sessions, "do_orm_execute", record_statement)

    assert message["request_id"] == created.json()["id"]
    assert [o for o in flushed if isinstance(o, DeviceMessage | DeviceNonce)] == []
    assert [s for s in orm_statements if "device_nonces" in s or "device_messages" in s] == []
    with runtime.sessions() as session:
        assert session.scalars(select(DeviceMessage.request_id)).all() == [message["request_id"]]
        assert len(session.scalars(select(DeviceNonce.nonce)).all()) == 1


async def test_a_replayed_fetch_with_a_message_waiting_takes_nothing(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    """The nonce goes in the statement that marks the message and writes its audit event: a
    replay there refuses the fetch and leaves the message waiting, unaudited."""
    app = factory.mobile_device(person)
    assert await fetch(client, app, clock) == []
    used = app.fetch_request(client, created=clock.now(), nonce="used-0123456789abcdef")
    assert (await client.send(used)).status_code == 200
    created = await request_otp(client, api_keys.signer, person, channel="mobile")
    replay = app.fetch_request(client, created=clock.now(), nonce="used-0123456789abcdef")
    refused = await client.send(replay)
    assert refused.status_code == 401, refused.text
    assert "nonce" in refused.json()["detail"]
    with runtime.sessions() as session:
        delivered = select(AuditEvent).where(AuditEvent.action == "otp.delivered")
        assert session.scalars(delivered).all() == []
        assert session.scalars(select(DeviceMessage.status)).all() == ["pending"]
    (message,) = await fetch(client, app, clock)
    assert message["request_id"] == created.json()["id"]
