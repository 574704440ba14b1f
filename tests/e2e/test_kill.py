"""A server process killed between accepting an OTP and answering: either the signature is
recorded once (and `GET` shows it) or nothing happened and the OTP still signs once.

Deterministic, not a random kill: the server reaches PostgreSQL through a proxy that stops
the signing transaction at its COMMIT, before it reaches PostgreSQL or after PostgreSQL has
committed it but before the server hears so; then the server gets SIGKILL. PostgreSQL only.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.keys import Secrets
from app.models import AuditEvent, Signature
from app.services.audit.verification import verify_audit_trail
from app.services.mail.sink import MailSink
from tests.db_proxy import DatabaseProxy
from tests.e2e.conftest import Server, ServerStarter
from tests.factories import Factory, Person
from tests.helpers import document_hash, openssl_verify, otp_from_message

pytestmark = pytest.mark.postgres_only


def signature_rows(sessions: sessionmaker[Session], request_id: str) -> int:
    with sessions() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Signature)
                .where(Signature.request_id == request_id)
            )
            or 0
        )


def audit_actions(sessions: sessionmaker[Session], request_id: str) -> list[str]:
    """The request's events, e-mail delivery left out (it follows its own course)."""
    with sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.target_id == request_id, AuditEvent.action.not_like("mail.%"))
                .order_by(AuditEvent.id)
            )
        )


def open_request(
    server: Server, key: str, person: Person, sink: MailSink, text: str
) -> tuple[str, str]:
    with server.client(key) as client:
        created = client.post(
            "/v1/signing-requests",
            json={
                "mykad": person.mykad,
                "document_hash": document_hash(text),
                "document_name": text,
            },
        )
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    message = sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id)
    return request_id, otp_from_message(message)


def assert_verifies(signature: dict[str, Any], text: str, tmp_path: Path) -> None:
    """openssl: the detached CMS signs `text`, under the chain's root."""
    (tmp_path / "signature.der").write_bytes(base64.b64decode(signature["signature"]))
    (tmp_path / "document.txt").write_text(text)
    (tmp_path / "root.pem").write_text(signature["certificate_chain"][-1])
    verified = openssl_verify(
        tmp_path / "signature.der", tmp_path / "document.txt", tmp_path / "root.pem"
    )
    assert verified.returncode == 0, verified.stderr


def test_a_server_killed_mid_signature_leaves_a_record_or_nothing(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    database_url: str,
    sessions: sessionmaker[Session],
    keys: Secrets,
    tmp_path: Path,
) -> None:
    person = e2e_factory.person()
    key = e2e_factory.client("igfmas", "signer")
    url = make_url(database_url)
    proxy = DatabaseProxy(int(url.port or 5432))
    try:
        proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
        doomed = start_server(ROAMSIGN_DATABASE_URL=proxied)
        # Two submissions in flight when the process dies: one stopped before its COMMIT
        # reached PostgreSQL, one whose COMMIT went through but whose answer did not come back.
        uncommitted, uncommitted_otp = open_request(doomed, key, person, sink, "PV-1")
        committed, committed_otp = open_request(doomed, key, person, sink, "PV-2")
        answers: list[object] = []

        def submit(request_id: str, otp: str) -> None:
            try:
                with doomed.client(key) as client:
                    answers.append(
                        client.post(
                            f"/v1/signing-requests/{request_id}/signature",
                            json={"otp": otp, "pin": person.pin},
                        )
                    )
            except httpx.TransportError as error:
                answers.append(error)

        # The committed one first: an uncommitted transaction keeps its row locks (the
        # person's audit chain head among them), which the other would wait for.
        submitters = []
        for request_id, otp, reply in (
            (committed, committed_otp, True),
            (uncommitted, uncommitted_otp, False),
        ):
            held = proxy.hold_commit(b"INSERT INTO signatures", request_id.encode(), reply=reply)
            submitters.append(threading.Thread(target=submit, args=(request_id, otp)))
            submitters[-1].start()
            assert held.wait(timeout=30), "the signing transaction never reached its COMMIT"
        doomed.process.kill()
        doomed.process.wait(timeout=10)
        for submitter in submitters:
            submitter.join(timeout=20)
        assert len(answers) == 2, answers
        assert all(isinstance(answer, httpx.TransportError) for answer in answers), answers
    finally:
        proxy.close()  # PostgreSQL sees the killed server's connections end

    server = start_server()
    with server.client(key) as client:
        # Never committed: nothing was spent, counted or signed; the OTP signs once.
        shown = client.get(f"/v1/signing-requests/{uncommitted}").json()
        assert shown["status"] == "pending" and shown["attempts_remaining"] == 3, shown
        assert shown["signature"] is None
        assert signature_rows(sessions, uncommitted) == 0
        assert audit_actions(sessions, uncommitted) == ["otp.issued"]
        signed = client.post(
            f"/v1/signing-requests/{uncommitted}/signature",
            json={"otp": uncommitted_otp, "pin": person.pin},
        )
        assert signed.status_code == 201, signed.text
        assert_verifies(signed.json(), "PV-1", tmp_path)

        # Committed: the signature is on record and readable, the OTP is spent.
        shown = client.get(f"/v1/signing-requests/{committed}").json()
        assert shown["status"] == "signed", shown
        assert_verifies(shown["signature"], "PV-2", tmp_path)

        for request_id, otp in ((uncommitted, uncommitted_otp), (committed, committed_otp)):
            again = client.post(
                f"/v1/signing-requests/{request_id}/signature", json={"otp": otp, "pin": person.pin}
            )
            assert again.status_code == 409, again.text
            assert again.json()["code"] == "otp_consumed"
            assert signature_rows(sessions, request_id) == 1
            assert audit_actions(sessions, request_id) == ["otp.issued", "signature.created"]
    with sessions() as session:
        assert verify_audit_trail(session, keys.audit_mac).ok
