"""The whole flow against a running server: OTP by e-mail through SMTP, then the signature."""

from __future__ import annotations

import base64
from pathlib import Path

from app.services.mail.sink import MailSink
from tests.e2e.conftest import ServerStarter
from tests.factories import Factory
from tests.helpers import document_hash, openssl_verify, otp_from_message

DOCUMENT = b"Tender ePerolehan QT-2026-0042: approved"


def test_otp_by_email_then_cms_signature_verified_by_openssl(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink, tmp_path: Path
) -> None:
    person = e2e_factory.person(name="Muthu a/l Rajan", email="muthu@mof.gov.my")
    key = e2e_factory.client("eperolehan", "signer")
    server = start_server()

    with server.client(key) as client:
        created = client.post(
            "/v1/signing-requests",
            json={
                "mykad": person.mykad,
                "document_hash": base64.b64encode(
                    bytes.fromhex(document_hash(DOCUMENT.decode()))
                ).decode(),
                "document_name": "Tender QT-2026-0042",
            },
        )
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        message = sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id, timeout=10)
        assert message["To"] == "muthu@mof.gov.my"
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        assert body.get_content().splitlines()[0].startswith("Kod OTP / OTP code: ")
        assert "eperolehan" in body.get_content()
        otp = otp_from_message(message)

        signed = client.post(
            f"/v1/signing-requests/{request_id}/signature", json={"otp": otp, "pin": person.pin}
        )
        assert signed.status_code == 201, signed.text
        signature = signed.json()
        chain = client.get("/v1/ca/certificates").text

    (tmp_path / "document.bin").write_bytes(DOCUMENT)
    (tmp_path / "signature.der").write_bytes(base64.b64decode(signature["signature"]))
    (tmp_path / "ca.pem").write_text(chain)
    verify = (tmp_path / "signature.der", tmp_path / "document.bin", tmp_path / "ca.pem")
    accepted = openssl_verify(*verify)
    assert accepted.returncode == 0, accepted.stderr
    (tmp_path / "document.bin").write_bytes(DOCUMENT + b" (altered)")
    refused = openssl_verify(*verify)
    assert refused.returncode != 0
    # The server's logs carry no OTP, no PIN and no full MyKad.
    log = server.log()
    assert otp not in log and person.pin not in log and person.mykad not in log
    # One OTP e-mail, then the notice after signing that names the document and the system.
    notice = sink.wait_for(lambda m: "Document signed" in str(m["Subject"]), timeout=10)
    assert notice["To"] == "muthu@mof.gov.my"
    notice_text = notice.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Tender QT-2026-0042" in notice_text and "eperolehan" in notice_text
    assert [m["X-Roamsign-Request-Id"] for m in sink.messages].count(request_id) == 1


def test_smtp_451_is_retried_and_delivered_once(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person()
    key = e2e_factory.client("igfmas", "signer")
    sink.fail_next(1, code=451)
    server = start_server()
    with server.client(key) as client:
        created = client.post(
            "/v1/signing-requests",
            json={"mykad": person.mykad, "document_hash": document_hash(), "document_name": "PV-1"},
        )
        assert created.status_code == 201  # the request never waits on SMTP
        request_id = created.json()["id"]
        message = sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id, timeout=15)
        signed = client.post(
            f"/v1/signing-requests/{request_id}/signature",
            json={"otp": otp_from_message(message), "pin": person.pin},
        )
        assert signed.status_code == 201
        # A few more delivery rounds: nothing is sent again.
        other = client.post(
            "/v1/signing-requests",
            json={
                "mykad": person.mykad,
                "document_hash": document_hash("2"),
                "document_name": "PV-2",
            },
        ).json()["id"]
        sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == other, timeout=10)
    ids = [m["X-Roamsign-Request-Id"] for m in sink.messages]
    assert ids.count(request_id) == 1
