"""The self-service use cases on a real database: a person reaches only their own certificates
and device (anyone else's is the same 404 as an unknown id), deactivating the device is audited
with the person as actor, and a new e-mail address waits for its confirmation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select

from app.db import unit_of_work
from app.errors import NotFound
from app.models import AuditEvent, OutboxMessage, User
from app.models.device import Device
from app.runtime import Runtime
from app.services.web.selfservice import person_caller
from app.units import Services
from tests.factories import Factory, Person

T = TypeVar("T")


def run(runtime: Runtime, work: Callable[[Services], T]) -> T:
    with unit_of_work(runtime.sessions) as session:
        return work(Services(runtime, session))


def user_of(runtime: Runtime, person: Person) -> User:
    with runtime.sessions() as session:
        user = session.get(User, person.user_id)
        assert user is not None
        return user


def test_a_person_lists_and_downloads_only_their_own_certificates(
    runtime: Runtime, factory: Factory
) -> None:
    mine, theirs = factory.person(), factory.person()
    me = user_of(runtime, mine)
    now = factory.now()

    rows = run(runtime, lambda s: s.self_service.credentials(me, now))
    assert [row.id for row in rows] == [mine.credential_id]
    assert rows[0].status == "active" and rows[0].has_certificate
    assert mine.credential_id is not None and theirs.credential_id is not None
    found = run(runtime, lambda s: s.self_service.certificate(me, str(mine.credential_id)))
    certificate = x509.load_der_x509_certificate(found.der)
    assert rows[0].fingerprint == certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    assert x509.load_pem_x509_certificate(found.pem.encode()) == certificate
    assert found.stem == f"roamsign-{rows[0].serial}"

    for other in (str(theirs.credential_id), "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(NotFound):
            run(runtime, lambda s, other=other: s.self_service.certificate(me, other))


def test_a_person_deactivates_only_their_own_device_audited_as_themselves(
    runtime: Runtime, factory: Factory
) -> None:
    mine, theirs = factory.person(), factory.person()
    my_app, their_app = factory.mobile_device(mine), factory.mobile_device(theirs)
    me = user_of(runtime, mine)
    now = factory.now()

    with pytest.raises(NotFound):
        run(runtime, lambda s: s.self_service.deactivate_device(me, str(their_app.device_id), now))
    with pytest.raises(NotFound):
        run(runtime, lambda s: s.self_service.own_active_device(me, str(their_app.device_id)))
    active = run(runtime, lambda s: s.self_service.active_device(me))
    assert active is not None and active.id == my_app.device_id

    run(runtime, lambda s: s.self_service.deactivate_device(me, str(my_app.device_id), now))
    with runtime.sessions() as session:
        statuses = {d.id: d.status for d in session.scalars(select(Device))}
        event = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "device.deactivated",
                AuditEvent.target_id == my_app.device_id,
            )
        ).one()
    assert statuses == {my_app.device_id: "deactivated", their_app.device_id: "active"}
    assert event.actor == person_caller(me).name == f"person:{me.id}"
    assert run(runtime, lambda s: s.self_service.active_device(me)) is None
    # Once deactivated it is no longer theirs to deactivate: the same 404.
    with pytest.raises(NotFound):
        run(runtime, lambda s: s.self_service.deactivate_device(me, str(my_app.device_id), now))


def test_a_new_address_takes_effect_only_once_confirmed(runtime: Runtime, factory: Factory) -> None:
    person = factory.person(email="lama@jdn.gov.my")
    me = user_of(runtime, person)
    now = factory.now()

    run(runtime, lambda s: s.self_service.request_email_change(me, "baharu@jdn.gov.my", now))
    assert user_of(runtime, person).email == "lama@jdn.gov.my"
    assert run(runtime, lambda s: s.self_service.pending_email(me, now)) == "baharu@jdn.gov.my"
    with runtime.sessions() as session:
        queued = session.scalars(select(OutboxMessage.recipient)).all()
        actors = session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == "user.email_change_requested")
        ).all()
    assert "baharu@jdn.gov.my" in queued
    assert actors == [f"person:{me.id}"]
