"""The retention job on a real database: what it deletes, what it never touches (signatures,
signed requests, audit, recent rows, live requests), in bounded batches, idempotent."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.clock import FrozenClock
from app.db import unit_of_work
from app.models import (
    AuditEvent,
    OneTimeToken,
    OutboxMessage,
    RateWindow,
    Signature,
    SigningRequest,
)
from app.models.base import new_id
from app.models.device import DeviceMessage
from app.models.web import ConsoleEnrolmentJob
from app.runtime import Runtime
from app.services.audit.verification import verify_audit_trail
from app.services.clients import Caller, ClientService
from app.services.retention import RetentionPurge
from app.services.signing.service import NewSigningRequest, SigningService
from app.units import Services
from tests.factories import DEFAULT_PIN, Factory, Person
from tests.helpers import document_hash, queued_otp

Signing = Callable[[Callable[[SigningService, Caller, datetime], object]], object]


@pytest.fixture
def signing(runtime: Runtime, factory: Factory) -> Signing:
    """Runs one use case of the signing service, as the signer igfmas, in a unit of work."""
    key = factory.client("igfmas", "signer")
    # One signer asks for everything here: as much of a person's OTPs as the person may have.
    runtime.settings.otps_per_signer_person_per_minute = runtime.settings.otps_per_person_per_minute

    def run(use: Callable[[SigningService, Caller, datetime], object]) -> object:
        with unit_of_work(runtime.sessions) as session:
            caller = ClientService(session, runtime.audit_log(session)).authenticate(key)
            service = SigningService(
                session,
                settings=runtime.settings,
                keys=runtime.keys,
                key_store=runtime.key_store,
                ca=factory.ca(session),
                audit=runtime.audit_log(session),
                notices=runtime.notices,
            )
            return use(service, caller, runtime.clock.now())

    return run


def issue(signing: Signing, person: Person, document: str, channel: str = "email") -> str:
    new = NewSigningRequest(
        mykad=person.mykad,
        document_hash=document_hash(document),
        hash_algorithm="sha256",
        document_name=document,
        channel=channel,
        signature_format="cms",
    )
    request = signing(lambda service, caller, now: service.request_signature(caller, new, now))
    assert isinstance(request, SigningRequest)
    return request.id


def old_token(session: Session, person: Person, expires_at: datetime) -> str:
    token = OneTimeToken(
        id=new_id(),
        purpose="pin_reset",
        subject_id=person.credential_id,
        user_id=person.user_id,
        token_mac=b"\0" * 32,
        email="aisyah@jdn.gov.my",
        is_on_request=True,
        created_at=expires_at - timedelta(hours=1),
        expires_at=expires_at,
    )
    session.add(token)
    return token.id


def enrolment_job(runtime: Runtime, person: Person, now: datetime) -> str:
    with unit_of_work(runtime.sessions) as session:
        jobs = Services(runtime, session).console_enrolments
        return jobs.start(person.user_id, "console:test", 1, now)


def ids(runtime: Runtime, column: object) -> set[str]:
    with runtime.sessions() as session:
        return set(session.scalars(select(column)))  # type: ignore[call-overload]


def count(runtime: Runtime, model: type) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def history(
    runtime: Runtime, factory: Factory, signing: Signing, clock: FrozenClock
) -> dict[str, str]:
    """Requests in every state 91 days ago, then a recent cancelled one and a live one."""
    person = factory.person()
    mobile = factory.person(email="muthu@mof.gov.my")
    factory.mobile_device(mobile)
    made = {name: issue(signing, person, name) for name in ("signed", "cancelled", "locked")}
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, made["signed"])
    signing(lambda s, c, now: s.sign(c, made["signed"], otp, person.pin, now))
    signing(lambda s, c, now: s.cancel(c, made["cancelled"], now))
    made["lazy"] = issue(signing, person, "lazy")  # never used: pending, past its window
    made["mobile"] = issue(signing, mobile, "mobile", channel="mobile")
    with unit_of_work(runtime.sessions) as session:
        session.execute(
            update(SigningRequest)
            .where(SigningRequest.id == made["locked"])
            .values(status="locked", finished_at=clock.now())
        )
        # Delivered, all but the lazy request's OTP, which is still waiting (never deleted).
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.request_id.is_distinct_from(made["lazy"]))
            .values(status="sent", sealed_message=None, sent_at=clock.now())
        )
        made["old_token"] = old_token(session, person, clock.now() + timedelta(hours=1))
    made["old_job"] = enrolment_job(runtime, person, clock.now())
    clock.advance(days=91)
    made["recent_job"] = enrolment_job(runtime, person, clock.now() - timedelta(days=89))
    made["recent_cancelled"] = issue(signing, person, "recent cancelled")
    signing(lambda s, c, now: s.cancel(c, made["recent_cancelled"], now))
    made["live"] = issue(signing, person, "live")
    with unit_of_work(runtime.sessions) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.request_id == made["recent_cancelled"])
            .values(status="sent", sealed_message=None, sent_at=clock.now())
        )
        made["recent_token"] = old_token(session, person, clock.now() - timedelta(days=1))
    return made


def purge(runtime: Runtime, **options: int) -> RetentionPurge:
    return RetentionPurge(runtime.sessions, runtime.audit_log, 90, **options)


def test_a_pass_deletes_what_nothing_needs_and_never_signatures_signed_requests_or_audit(
    runtime: Runtime, factory: Factory, signing: Signing, clock: FrozenClock
) -> None:
    made = history(runtime, factory, signing, clock)
    outbox_before = ids(runtime, OutboxMessage.id)
    audit_before = count(runtime, AuditEvent)
    with runtime.sessions() as session:
        windows = session.scalar(select(func.count()).select_from(RateWindow))
        live_windows = session.scalar(
            select(func.count()).select_from(RateWindow).where(RateWindow.expires_at > clock.now())
        )
    assert windows and live_windows and windows > live_windows

    outcome = purge(runtime, batch=2)(clock.now())

    assert ids(runtime, SigningRequest.id) == {
        made["signed"],
        made["recent_cancelled"],
        made["live"],
    }
    assert count(runtime, Signature) == 1
    assert count(runtime, DeviceMessage) == 0  # the mobile request's OTP went with it
    with runtime.sessions() as session:
        kept_mail = set(
            session.scalars(
                select(OutboxMessage.request_id).where(OutboxMessage.id.in_(outbox_before))
            )
        )
        assert (
            session.scalar(
                select(func.count())
                .select_from(RateWindow)
                .where(RateWindow.expires_at <= clock.now())
            )
            == 0
        )
    # The waiting e-mail of 91 days ago stays; the delivered ones of then are gone.
    assert kept_mail == {made["lazy"], made["recent_cancelled"], made["live"]}
    assert ids(runtime, OneTimeToken.id) == {made["recent_token"]}
    assert ids(runtime, ConsoleEnrolmentJob.id) == {made["recent_job"]}
    assert count(runtime, RateWindow) == live_windows
    deleted_windows = windows - live_windows
    # The OTPs of the signed, cancelled and locked requests, the signature's notice and the
    # device activation's.
    assert outcome == (
        "retention: deleted 1 device_messages, 4 signing_requests, 5 outbox_messages, "
        f"1 one_time_tokens, 1 console_enrolment_jobs, {deleted_windows} rate_windows"
    )
    # One audit event for the pass, with the counts and nothing about anyone.
    assert count(runtime, AuditEvent) == audit_before + 1
    with runtime.sessions() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert event is not None
        assert (event.action, event.actor, event.outcome) == (
            "retention.purged",
            "jobs",
            "complete",
        )
        assert (event.subject_ref, event.mykad_masked, event.target_id) == (None, None, None)
        assert event.details == {
            "device_messages": 1,
            "signing_requests": 4,
            "outbox_messages": 5,
            "one_time_tokens": 1,
            "console_enrolment_jobs": 1,
            "rate_windows": deleted_windows,
            "retention_days": 90,
        }
        assert verify_audit_trail(session, runtime.keys.audit_mac).ok
    # The signed request still reads as signed, and the live one still signs.
    with runtime.sessions() as session:
        signed = session.get(SigningRequest, made["signed"])
        assert signed is not None and signed.status == "signed"
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, made["live"])
    signing(lambda s, c, now: s.sign(c, made["live"], otp, DEFAULT_PIN, now))
    assert count(runtime, Signature) == 2


def test_passes_are_bounded_and_a_pass_with_nothing_to_do_changes_nothing(
    runtime: Runtime, factory: Factory, signing: Signing, clock: FrozenClock
) -> None:
    made = history(runtime, factory, signing, clock)
    with unit_of_work(runtime.sessions) as session:
        session.execute(delete(RateWindow))  # counted by the test above; here they would vary
    bounded = purge(runtime, batch=2, max_batches=1)
    outcomes = []
    for _ in range(10):
        outcomes.append(bounded(clock.now()))
        if not outcomes[-1].endswith("(more left)"):
            break
    # One batch of 2 a status a pass: the requests (1 cancelled, 1 locked, 2 pending) go in
    # the first; the 5 sent e-mails take three, the third finding no more of anything.
    assert [re.findall(r"(\d+) (signing_requests|outbox_messages)", o) for o in outcomes] == [
        [("4", "signing_requests"), ("2", "outbox_messages")],
        [("0", "signing_requests"), ("2", "outbox_messages")],
        [("0", "signing_requests"), ("1", "outbox_messages")],
    ]
    nothing = (
        "retention: deleted 0 device_messages, 0 signing_requests, 0 outbox_messages, "
        "0 one_time_tokens, 0 console_enrolment_jobs, 0 rate_windows"
    )
    assert bounded(clock.now()) == nothing
    assert bounded(clock.now()) == nothing
    assert ids(runtime, SigningRequest.id) == {
        made["signed"],
        made["recent_cancelled"],
        made["live"],
    }
    with runtime.sessions() as session:
        passes = session.scalars(
            select(AuditEvent.outcome)
            .where(AuditEvent.action == "retention.purged")
            .order_by(AuditEvent.occurred_at, AuditEvent.id)
        ).all()
    assert passes == ["more_left", "more_left", "complete"]  # none for a pass deleting nothing
