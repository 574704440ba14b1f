"""One OTP, one signature, under concurrency: on PostgreSQL with two server processes.

On SQLite (one process by design) the same tests run against one worker's thread pool.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.keys import Secrets
from app.models import AuditEvent, Credential, Signature, SigningRequest, User
from app.services.audit.verification import verify_audit_trail
from app.services.mail.sink import MailSink
from tests.conftest import Cli
from tests.e2e.conftest import Server, ServerStarter, at_once
from tests.factories import Factory, Person
from tests.helpers import document_hash, otp_from_message


@pytest.fixture
def workers(is_postgres: bool) -> int:
    return 2 if is_postgres else 1


def wrong(otp: str) -> str:
    return f"{(int(otp) + 1) % 1_000_000:06d}"


def open_request(
    server: Server, key: str, person: Person, sink: MailSink, document: str = "PV"
) -> tuple[str, str]:
    with server.client(key) as client:
        created = client.post(
            "/v1/signing-requests",
            json={
                "mykad": person.mykad,
                "document_hash": document_hash(document),
                "document_name": "PV",
            },
        )
        assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    message = sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id, timeout=10)
    return request_id, otp_from_message(message)


async def submit_all(
    server: Server, key: str, request_id: str, bodies: list[dict[str, str]]
) -> list[httpx.Response]:
    path = f"/v1/signing-requests/{request_id}/signature"
    return await at_once(server, key, [("POST", path, body) for body in bodies])


async def test_fifty_right_submissions_give_exactly_one_signature(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    workers: int,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person()
    key = e2e_factory.client("igfmas", "signer")
    server = start_server(workers=workers)
    request_id, otp = open_request(server, key, person, sink)

    answers = await submit_all(server, key, request_id, [{"otp": otp, "pin": person.pin}] * 50)

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 1, 409: 49}, statuses
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"otp_consumed"}
    # /metrics sums every worker process: one signature, 49 refusals, whichever worker answers.
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'roamsign_signatures_total{signature_format="cms"} 1.0' in metrics
    assert 'roamsign_failures_total{code="otp_consumed"} 49.0' in metrics
    with sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Signature).where(Signature.request_id == request_id)
        )
        assert count == 1


async def test_two_hundred_wrong_guesses_count_exactly_three(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    workers: int,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person()
    key = e2e_factory.client("igfmas", "signer")
    server = start_server(workers=workers)
    request_id, otp = open_request(server, key, person, sink)
    guesses = [f"{(int(otp) + n) % 1_000_000:06d}" for n in range(1, 201)]

    answers = await submit_all(
        server, key, request_id, [{"otp": g, "pin": person.pin} for g in guesses]
    )

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {403: 3, 423: 197}, statuses
    remaining = sorted(a.json()["attempts_remaining"] for a in answers if a.status_code == 403)
    assert remaining == [0, 1, 2]
    with sessions() as session:
        request = session.get(SigningRequest, request_id)
        assert request is not None and request.attempts == 3 and request.status == "locked"
    with server.client(key) as client:
        right = client.post(
            f"/v1/signing-requests/{request_id}/signature", json={"otp": otp, "pin": person.pin}
        )
    assert right.status_code == 423 and right.json()["code"] == "request_locked"


def open_requests(
    server: Server, keys: list[str], person: Person, sink: MailSink
) -> list[tuple[str, str, str]]:
    """One request per key (each signer within its per-person OTP limit): (key, id, OTP)."""
    return [
        (key, *open_request(server, key, person, sink, f"PV-{n}-{uuid.uuid4()}"))
        for n, key in enumerate(keys)
    ]


async def submit_spread(
    server: Server, opened: list[tuple[str, str, str]], bodies: list[dict[str, str]]
) -> list[httpx.Response]:
    """Every body at once, spread over the open requests (each with its own signer's key)."""
    batches = [
        submit_all(server, key, request_id, bodies[n :: len(opened)])
        for n, (key, request_id, _otp) in enumerate(opened)
    ]
    return [answer for answers in await asyncio.gather(*batches) for answer in answers]


def signing_state(sessions: sessionmaker[Session], person: Person) -> tuple[str, int, int]:
    """The credential's status and run of wrong PINs, and the person's run of failed checks."""
    with sessions() as session:
        credential = session.get(Credential, person.credential_id)
        user = session.get(User, person.user_id)
        assert credential is not None and user is not None
        return credential.status, credential.pin_failures, user.consecutive_failed_checks


async def test_two_hundred_wrong_pins_with_wrong_otps_lock_nothing(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    workers: int,
    sessions: sessionmaker[Session],
) -> None:
    """An attacker with API keys but not the person's mailbox cannot lock the person out."""
    person = e2e_factory.person()
    keys = [e2e_factory.client(name, "signer") for name in ("igfmas", "eperolehan")] * 2
    server = start_server(workers=workers)
    opened = open_requests(server, keys, person, sink)
    bodies = [{"otp": wrong(opened[n % 4][2]), "pin": f"{902847 + n:06d}"} for n in range(200)]

    answers = await submit_spread(server, opened, bodies)

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {403: 12, 423: 188}, statuses  # three tries a request, then locked
    assert {a.json()["code"] for a in answers if a.status_code == 423} == {"request_locked"}
    assert signing_state(sessions, person) == ("active", 0, 0)
    key, request_id, otp = open_requests(server, keys[:1], person, sink)[0]
    with server.client(key) as client:
        signed = client.post(
            f"/v1/signing-requests/{request_id}/signature", json={"otp": otp, "pin": person.pin}
        )
    assert signed.status_code == 201, signed.text


async def test_two_hundred_wrong_pins_with_the_right_otps_lock_at_exactly_five(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    workers: int,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person()
    keys = [e2e_factory.client(name, "signer") for name in ("igfmas", "eperolehan")] * 2
    server = start_server(workers=workers)
    opened = open_requests(server, keys, person, sink)
    bodies = [{"otp": opened[n % 4][2], "pin": f"{902847 + n:06d}"} for n in range(200)]

    answers = await submit_spread(server, opened, bodies)

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {403: 5, 423: 195}, statuses
    assert {a.json()["code"] for a in answers if a.status_code == 423} <= {
        "credential_locked",
        "request_locked",
    }
    assert signing_state(sessions, person) == ("locked", 5, 5)
    with sessions() as session:
        locked_events = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "credential.locked")
        )
    assert locked_events == 1


@pytest.mark.postgres_only
async def test_the_audit_trail_of_concurrent_writers_verifies_and_names_tampering(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    sessions: sessionmaker[Session],
    engine: Engine,
    keys: Secrets,
    cli: Cli,
) -> None:
    key = e2e_factory.client("igfmas", "signer")
    people = [e2e_factory.person() for _ in range(6)]
    server = start_server(workers=2)
    opened = [open_request(server, key, person, sink) for person in people]
    # Every request at once, from both processes: two wrong guesses and the right code each.
    calls = [
        ("POST", f"/v1/signing-requests/{request_id}/signature", {"otp": otp, "pin": pin})
        for (request_id, right), person in zip(opened, people, strict=True)
        for otp, pin in ((wrong(right), person.pin), (right, "902847"), (right, person.pin))
    ]
    answers = await at_once(server, key, calls)
    assert Counter(a.status_code for a in answers)[201] == len(people)
    server.process.terminate()  # nothing writes to the trail any more (e-mail deliveries)
    server.process.wait(timeout=15)

    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(AuditEvent))
        chains = session.execute(
            select(AuditEvent.chain).group_by(AuditEvent.chain).order_by(func.count().desc())
        ).scalars()
        busiest = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.chain == next(iter(chains)))
            .order_by(AuditEvent.seq)
        ).all()
    assert f"intact: {total} events checked" in cli("audit", "verify").stdout
    assert len(busiest) >= 3
    first, second, third = busiest[:3]

    def named(expected: AuditEvent, *words: str) -> None:
        broken = cli("audit", "verify", expect=1).stderr
        assert f"event_id={expected.id}," in broken, broken
        for word in words:
            assert word in broken, broken

    def intact() -> None:
        with sessions() as session:
            assert verify_audit_trail(session, keys.audit_mac).ok

    with engine.begin() as connection:  # changed
        connection.execute(
            update(AuditEvent).where(AuditEvent.id == second.id).values(outcome="tampered")
        )
    named(second, "MAC mismatch")
    with engine.begin() as connection:
        connection.execute(
            update(AuditEvent).where(AuditEvent.id == second.id).values(outcome=second.outcome)
        )
    intact()

    with engine.begin() as connection:  # deleted
        connection.execute(delete(AuditEvent).where(AuditEvent.id == second.id))
    named(third, f"seq {second.seq}..{second.seq} missing")
    with engine.begin() as connection:
        connection.execute(
            insert(AuditEvent).values(
                {column.key: getattr(second, column.key) for column in AuditEvent.__table__.c}
            )
        )
    intact()

    with engine.begin() as connection:  # reordered: the first two swap places in their chain
        for event, seq in ((first, -1), (second, first.seq), (first, second.seq)):
            connection.execute(update(AuditEvent).where(AuditEvent.id == event.id).values(seq=seq))
    named(first, "reordered")
