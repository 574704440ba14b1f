"""The device services on a real database: one active device per person under concurrency,
each message claimed once, the phone-change hook, the housekeeping, sealing at rest."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.clock import FrozenClock
from app.crypto.sealing import SealBroken
from app.db import unit_of_work
from app.errors import ActivationCodeConsumed
from app.models import AuditEvent, User
from app.models.device import Device, DeviceMessage, DeviceNonce
from app.runtime import Runtime
from app.services.audit.verification import verify_audit_trail
from app.services.clients import ClientService
from app.services.devices.deactivation import deactivate_for_phone_change
from app.services.devices.messages import DeviceMessageStore, associated_data
from app.services.devices.service import DeviceService, purge_device_leftovers
from app.services.signing.service import NewSigningRequest, SigningService
from tests.factories import Factory, Person
from tests.helpers import document_hash, pending_device
from tests.mobile_app import MobileApp


class NoMail:
    def send(self, *, user: User, device: Device, code: str, now: datetime) -> None:
        del user, device, code, now


def service(runtime: Runtime, session: Session) -> DeviceService:
    return DeviceService(
        session,
        settings=runtime.settings,
        keys=runtime.keys,
        audit=runtime.audit_log(session),
        notices=runtime.notices,
        code_sender=NoMail(),
    )


def statuses(runtime: Runtime) -> dict[str, tuple[str, str | None]]:
    with runtime.sessions() as session:
        return {
            device.id: (device.status, device.deactivation_reason)
            for device in session.scalars(select(Device))
        }


def test_two_activations_at_once_end_with_one_active_device(
    runtime: Runtime, factory: Factory
) -> None:
    person = factory.person()
    first = pending_device(runtime, person, "111111")
    second = pending_device(runtime, person, "222222")
    now = runtime.clock.now()

    # The first activation is done but not committed when the second one starts: on
    # PostgreSQL the second waits on the partial unique index, fails once the first commits,
    # and retries; on SQLite it waits for the one connection. Either way the later one wins.
    held = runtime.sessions()
    service(runtime, held).activate(first, "111111", MobileApp().public_key_pem, now)
    failures: list[BaseException] = []

    def activate_second() -> None:
        try:
            with unit_of_work(runtime.sessions) as session:
                service(runtime, session).activate(
                    second, "222222", MobileApp().public_key_pem, now
                )
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=activate_second)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "the second activation should wait for the first"
    held.commit()
    held.close()
    thread.join(timeout=30)
    assert not failures, failures

    assert statuses(runtime) == {
        first: ("deactivated", "replaced"),
        second: ("active", None),
    }


def test_a_refused_activation_replaces_nothing(runtime: Runtime, factory: Factory) -> None:
    person = factory.person()
    active = pending_device(runtime, person, "111111")
    gone = pending_device(runtime, person, "222222")
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        service(runtime, session).activate(active, "111111", MobileApp().public_key_pem, now)
        session.execute(update(Device).where(Device.id == gone).values(status="deactivated"))

    # The activation's last step on a device that is no longer pending (the earlier checks
    # normally refuse it first): the refusal is committed, with nothing deactivated.
    with pytest.raises(ActivationCodeConsumed), unit_of_work(runtime.sessions) as session:
        device, user = session.get(Device, gone), session.get(User, person.user_id)
        assert device is not None and user is not None
        service(runtime, session).activation._make_only_active(
            device, user, MobileApp().public_key_pem, now
        )

    assert statuses(runtime) == {active: ("active", None), gone: ("deactivated", None)}


def test_the_database_refuses_a_second_active_device(runtime: Runtime, factory: Factory) -> None:
    person = factory.person()
    first = pending_device(runtime, person, "111111")
    second = pending_device(runtime, person, "222222")
    with unit_of_work(runtime.sessions) as session:
        session.execute(update(Device).where(Device.id == first).values(status="active"))
    with pytest.raises(IntegrityError), unit_of_work(runtime.sessions) as session:
        session.execute(update(Device).where(Device.id == second).values(status="active"))


def issue(runtime: Runtime, factory: Factory, person: Person, document: str) -> str:
    key = factory.client(f"signer-{document}", "signer")
    with unit_of_work(runtime.sessions) as session:
        caller = ClientService(session, runtime.audit_log(session)).authenticate(key)
        request = SigningService(
            session,
            settings=runtime.settings,
            keys=runtime.keys,
            key_store=runtime.key_store,
            ca=factory.ca(session),
            audit=runtime.audit_log(session),
            notices=runtime.notices,
        ).request_signature(
            caller,
            NewSigningRequest(
                mykad=person.mykad,
                document_hash=document_hash(document),
                hash_algorithm="sha256",
                document_name=f"PV {document}",
                channel="mobile",
                signature_format="cms",
            ),
            runtime.clock.now(),
        )
        return request.id


@pytest.mark.postgres_only
def test_a_fetch_skips_messages_another_fetch_holds(runtime: Runtime, factory: Factory) -> None:
    person = factory.person()
    app = factory.mobile_device(person)
    assert app.device_id is not None
    request_id = issue(runtime, factory, person, "A")
    now = runtime.clock.now()

    held = runtime.sessions()
    claimed = DeviceMessageStore(held, runtime.keys.outbox_seal).claim(app.device_id, now)
    assert [message.request_id for message, _row in claimed] == [request_id]
    started = time.monotonic()
    with unit_of_work(runtime.sessions) as session:
        other = DeviceMessageStore(session, runtime.keys.outbox_seal).claim(app.device_id, now)
    assert other == [] and time.monotonic() - started < 1  # skipped, not waited for
    held.commit()
    held.close()
    with unit_of_work(runtime.sessions) as session:
        assert DeviceMessageStore(session, runtime.keys.outbox_seal).claim(app.device_id, now) == []


def test_concurrent_claims_deliver_each_message_once(runtime: Runtime, factory: Factory) -> None:
    person = factory.person()
    app = factory.mobile_device(person)
    assert app.device_id is not None
    device_id = app.device_id
    issued = [issue(runtime, factory, person, document) for document in "ABCD"]
    now = runtime.clock.now()
    barrier = threading.Barrier(6)
    delivered: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        barrier.wait()
        with unit_of_work(runtime.sessions) as session:
            claimed = DeviceMessageStore(session, runtime.keys.outbox_seal).claim(device_id, now)
        with lock:
            delivered.extend(message.request_id for message, _row in claimed)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(delivered) == sorted(issued)


def test_a_sealed_message_opens_only_for_its_device_and_request(
    runtime: Runtime, factory: Factory
) -> None:
    person = factory.person()
    app = factory.mobile_device(person)
    request_id = issue(runtime, factory, person, "A")
    with runtime.sessions() as session:
        row = session.scalars(select(DeviceMessage)).one()
    assert row.sealed_payload is not None and app.device_id is not None
    key = runtime.keys.outbox_seal
    assert key.open(row.sealed_payload, associated_data(app.device_id, request_id))
    with pytest.raises(SealBroken):
        key.open(row.sealed_payload, associated_data("another-device", request_id))
    with pytest.raises(SealBroken):
        key.open(row.sealed_payload, associated_data(app.device_id, "another-request"))


def test_a_new_phone_number_deactivates_the_devices(runtime: Runtime, factory: Factory) -> None:
    person = factory.person()
    active = factory.mobile_device(person)
    issue(runtime, factory, person, "A")
    pending = pending_device(runtime, person, "333333")
    untouched = factory.mobile_device(factory.person())
    now = runtime.clock.now()

    with unit_of_work(runtime.sessions) as session:
        deactivated = deactivate_for_phone_change(
            session, runtime.audit_log(session), person.user_id, now, "portal"
        )
    assert sorted(deactivated) == sorted([active.device_id, pending])
    found = statuses(runtime)
    assert found[active.device_id or ""] == ("deactivated", "phone_changed")
    assert found[pending] == ("deactivated", "phone_changed")
    assert found[untouched.device_id or ""] == ("active", None)
    with runtime.sessions() as session:
        message = session.scalars(select(DeviceMessage)).one()
        assert (message.status, message.sealed_payload) == ("withdrawn", None)
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.outcome == "phone_changed")
        ).all()
        assert {event.target_id for event in events} == set(deactivated)
        assert {event.actor for event in events} == {"portal"}
    with unit_of_work(runtime.sessions) as session:
        again = deactivate_for_phone_change(
            session, runtime.audit_log(session), person.user_id, now, "portal"
        )
    assert again == []


def test_housekeeping_wipes_and_forgets_what_no_longer_matters(
    runtime: Runtime, factory: Factory, clock: FrozenClock
) -> None:
    person = factory.person()
    factory.mobile_device(person)
    issue(runtime, factory, person, "A")
    with unit_of_work(runtime.sessions) as session:
        device_id = session.scalars(select(Device.id)).one()
        session.add(DeviceNonce(device_id=device_id, nonce="n" * 16, expires_at=clock.now()))
    clock.advance(hours=2)
    with unit_of_work(runtime.sessions) as session:
        summary = purge_device_leftovers(session, clock.now())
    assert summary == "device leftovers: 1 expired messages wiped, 1 nonces forgotten"
    with runtime.sessions() as session:
        message = session.scalars(select(DeviceMessage)).one()
        assert (message.status, message.sealed_payload) == ("expired", None)


def test_the_audit_trail_verifies_after_the_device_work(runtime: Runtime, factory: Factory) -> None:
    person = factory.person()
    factory.mobile_device(person)
    factory.mobile_device(person)
    issue(runtime, factory, person, "A")
    with runtime.sessions() as session:
        verification = verify_audit_trail(session, runtime.keys.audit_mac)
        actions = set(session.scalars(select(AuditEvent.action)))
    assert verification.ok
    assert {"device.registered", "device.activated", "device.deactivated", "otp.issued"} <= actions
