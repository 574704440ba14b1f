"""The roaming lifecycle against a running server, its e-mail through a real SMTP sink.

From token user to signature: the verification and PIN-setup tokens are read from the e-mails
the sink received, as the person would; then revocation, checked with openssl on the CRL the
server publishes; and the server's own periodic job sending an expiry notice.
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.db import unit_of_work
from app.models import Credential
from app.services.mail.sink import MailSink
from tests.e2e.conftest import ServerStarter
from tests.factories import Factory
from tests.helpers import document_hash, otp_from_message

PIN = "802461"
TOKEN_LINE = re.compile(r"^Token: (\S+)\r?$", re.MULTILINE)


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def token_in(message: EmailMessage) -> str:
    match = TOKEN_LINE.search(text_of(message))
    assert match, text_of(message)
    return match.group(1)


def addressed(to: str, subject_part: str) -> object:
    return lambda m: m["To"] == to and subject_part in str(m["Subject"])


def test_from_token_user_to_signature_then_revocation(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink, tmp_path: Path
) -> None:
    person = e2e_factory.token_user(email="rahim@anm.gov.my")
    portal = e2e_factory.client("portal", "portal")
    jdn = e2e_factory.client("jdn", "jdn_admin")
    signer = e2e_factory.client("igfmas", "signer")
    server = start_server()

    with (
        server.client(jdn) as admin,
        server.client(portal) as mygpki,
        server.client(signer) as igfmas,
    ):
        enrolled = admin.post("/v1/roaming-enrolments", json={"mykads": [person.mykad]})
        assert enrolled.status_code == 200, enrolled.text
        application_id = enrolled.json()["results"][0]["application_id"]

        verification = sink.wait_for(addressed("rahim@anm.gov.my", "verify your e-mail"), 10)
        assert text_of(verification).splitlines()[0].startswith("Token: ")
        verified = mygpki.post(
            f"/v1/roaming-applications/{application_id}/email-verification",
            json={"token": token_in(verification)},
        )
        assert verified.status_code == 200, verified.text

        approved = admin.post(f"/v1/roaming-applications/{application_id}/approval")
        assert approved.status_code == 200, approved.text
        credential_id = approved.json()["credential_id"]
        setup = sink.wait_for(addressed("rahim@anm.gov.my", "Set your roaming"), 10)
        activated = mygpki.put(
            f"/v1/credentials/{credential_id}/pin", json={"new_pin": PIN, "token": token_in(setup)}
        )
        assert activated.status_code == 200 and activated.json()["status"] == "active"

        created = igfmas.post(
            "/v1/signing-requests",
            json={
                "mykad": person.mykad,
                "document_hash": document_hash(),
                "document_name": "Baucar Bayaran PV-2026-000123",
            },
        )
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        otp_mail = sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id, 10)
        signed = igfmas.post(
            f"/v1/signing-requests/{request_id}/signature",
            json={"otp": otp_from_message(otp_mail), "pin": PIN},
        )
        assert signed.status_code == 201, signed.text
        serial = activated.json()["serial"]

        revoked = admin.post(
            f"/v1/credentials/{credential_id}/revocation", json={"reason": "keyCompromise"}
        )
        assert revoked.status_code == 200, revoked.text
        sink.wait_for(addressed("rahim@anm.gov.my", "revoked"), 10)
        refused = igfmas.post(
            "/v1/signing-requests",
            json={"mykad": person.mykad, "document_hash": document_hash("2"), "document_name": "2"},
        )
        assert refused.status_code == 409 and refused.json()["code"] == "credential_not_active"
        crl = server.client().get("/v1/ca/crl").content
        certificate = activated.json()["certificate"]

    (tmp_path / "ca.crl").write_bytes(crl)
    (tmp_path / "leaf.pem").write_text(certificate)
    crl_text = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(tmp_path / "ca.crl"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = [int(found, 16) for found in re.findall(r"Serial Number: ([0-9A-F]+)", crl_text)]
    assert listed == [int(serial, 16)] and "Key Compromise" in crl_text
    leaf_text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "URI:http://127.0.0.1:8000/v1/ca/crl" in leaf_text
    assert "CA Issuers - URI:http://127.0.0.1:8000/v1/ca/issuer.cer" in leaf_text
    # No token, PIN or full MyKad in the server's log.
    log = server.log()
    for secret in (token_in(verification), token_in(setup), PIN, person.mykad):
        assert secret not in log


def test_the_server_sends_expiry_notices_on_its_own(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person(email="expiring@jdn.gov.my")
    with unit_of_work(sessions) as session:
        session.execute(
            update(Credential)
            .where(Credential.id == person.credential_id)
            .values(not_after=datetime.now(UTC) + timedelta(days=29))
        )
    start_server(ROAMSIGN_JOBS_POLL_SECONDS="0.2")
    notice = sink.wait_for(addressed("expiring@jdn.gov.my", "expires soon"), 15)
    assert "Token:" not in text_of(notice)
    assert len([m for m in sink.messages if m["To"] == "expiring@jdn.gov.my"]) == 1
