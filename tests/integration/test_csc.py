"""The CSC services on a real database, under concurrency: one OTP gives one SAD, one SAD one
signature, whatever the number of simultaneous callers (row locks on PostgreSQL, one writer
at a time on SQLite)."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import unit_of_work
from app.errors import DomainError
from app.models import Signature, SigningRequest
from app.runtime import Runtime
from app.services.clients import Caller, ClientService
from app.services.signing.csc import CscService
from app.services.signing.service import SigningService
from tests.factories import Factory, Person
from tests.helpers import queued_otp

SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
HASH_B64 = base64.b64encode(hashlib.sha256(b"signed attributes").digest()).decode()
CALLERS = 8
T = TypeVar("T")


@pytest.fixture
def caller(factory: Factory, runtime: Runtime) -> Caller:
    key = factory.client("igfmas", "signer")
    with runtime.sessions() as session:
        return ClientService(session, runtime.audit_log(session)).authenticate(key)


def csc_service(runtime: Runtime, session: Session) -> CscService:
    audit = runtime.audit_log(session)
    ca = Factory(runtime).ca(session)
    signing = SigningService(
        session,
        settings=runtime.settings,
        keys=runtime.keys,
        key_store=runtime.key_store,
        ca=ca,
        audit=audit,
        notices=runtime.notices,
    )
    return CscService(
        session, signing=signing, ca=ca, keys=runtime.keys, settings=runtime.settings, audit=audit
    )


def in_parallel(count: int, work: Callable[[], T]) -> list[T | DomainError]:
    """Run `work` in `count` threads released together; each answer or domain error."""
    barrier = threading.Barrier(count)
    outcomes: list[T | DomainError] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            outcome: T | DomainError = work()
        except DomainError as error:
            outcome = error
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def send_otp(runtime: Runtime, caller: Caller, person: Person) -> str:
    assert person.credential_id is not None
    with unit_of_work(runtime.sessions) as session:
        request = csc_service(runtime, session).send_otp(
            caller,
            credential_id=person.credential_id,
            digest=base64.b64decode(HASH_B64),
            hash_algorithm="sha256",
            document_name="Baucar Bayaran PV-2026-000123",
            now=runtime.clock.now(),
        )
    return queued_otp(runtime.sessions, runtime.keys.outbox_seal, request.id)


def authorize(runtime: Runtime, caller: Caller, person: Person, otp: str) -> str:
    assert person.credential_id is not None
    with unit_of_work(runtime.sessions) as session:
        return (
            csc_service(runtime, session)
            .authorize(
                caller,
                credential_id=person.credential_id,
                digest=base64.b64decode(HASH_B64),
                hash_algorithm=None,
                otp=otp,
                pin=person.pin,
                now=runtime.clock.now(),
            )
            .sad
        )


def sign_hash(runtime: Runtime, caller: Caller, person: Person, sad: str) -> bytes:
    assert person.credential_id is not None
    with unit_of_work(runtime.sessions) as session:
        return csc_service(runtime, session).sign_hash(
            caller,
            credential_id=person.credential_id,
            sad=sad,
            digest=base64.b64decode(HASH_B64),
            hash_algorithm_oid=SHA256,
            sign_algorithm_oid=ECDSA_SHA256,
            sign_algorithm_params_b64=None,
            now=runtime.clock.now(),
        )


def kinds(outcomes: list[object]) -> Counter[str]:
    return Counter(
        outcome.code if isinstance(outcome, DomainError) else "ok" for outcome in outcomes
    )


def test_simultaneous_authorizations_give_one_sad(
    runtime: Runtime, factory: Factory, caller: Caller
) -> None:
    person = factory.person()
    otp = send_otp(runtime, caller, person)

    outcomes = in_parallel(CALLERS, lambda: authorize(runtime, caller, person, otp))

    assert kinds(outcomes) == {"ok": 1, "otp_consumed": CALLERS - 1}
    (sad,) = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert sign_hash(runtime, caller, person, sad)


def test_simultaneous_sign_hash_with_one_sad_gives_one_signature(
    runtime: Runtime, factory: Factory, caller: Caller
) -> None:
    person = factory.person()
    sad = authorize(runtime, caller, person, send_otp(runtime, caller, person))

    outcomes = in_parallel(CALLERS, lambda: sign_hash(runtime, caller, person, sad))

    assert kinds(outcomes) == {"ok": 1, "otp_consumed": CALLERS - 1}
    with runtime.sessions() as session:
        assert len(session.scalars(select(Signature)).all()) == 1
        assert session.scalars(select(SigningRequest.status)).one() == "signed"


def test_the_sad_is_never_stored(runtime: Runtime, factory: Factory, caller: Caller) -> None:
    person = factory.person()
    sad = authorize(runtime, caller, person, send_otp(runtime, caller, person))
    secret = sad.partition(".")[2].encode()
    with runtime.sessions() as session:
        request = session.scalars(select(SigningRequest)).one()
        stored = b"".join(
            value if isinstance(value, bytes) else str(value).encode()
            for value in vars(request).values()
        )
    assert secret not in stored
    assert request.sad_mac is not None and len(request.sad_mac) == 32
    assert request.sad_expires_at == runtime.clock.now() + timedelta(seconds=60)
