"""After real flows, no secret is anywhere it should not be: logs, database, audit trail."""

from __future__ import annotations

import base64
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from app.db import Base
from app.models import Credential
from app.services.mail.sink import MailSink
from tests.e2e.conftest import ServerStarter
from tests.factories import Factory
from tests.helpers import document_hash, otp_from_message


def standalone(secret: str) -> re.Pattern[str]:
    """The secret as a token of its own, not by chance inside a hex id or a MAC."""
    return re.compile(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])")


def database_text(sessions: sessionmaker[Session]) -> tuple[str, bytes]:
    """Every value of every table, as text and as raw bytes (a database dump)."""
    texts: list[str] = []
    blobs: list[bytes] = []
    with sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(text(f"SELECT * FROM {table.name}")):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        blobs.append(bytes(value))
                    else:
                        texts.append(str(value))
    return "\n".join(texts), b"\n".join(blobs)


def test_no_secret_in_logs_database_or_audit(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person(pin="740315")
    key = e2e_factory.client("igfmas", "signer")
    server = start_server()
    otps = []
    with server.client(key) as client:
        for n in range(3):
            created = client.post(
                "/v1/signing-requests",
                json={
                    "mykad": person.mykad,
                    "document_hash": document_hash(str(n)),
                    "document_name": f"PV-{n}",
                },
            ).json()
            message = sink.wait_for(lambda m, i=created["id"]: m["X-Roamsign-Request-Id"] == i)
            otp = otp_from_message(message)
            otps.append(otp)
            wrong = f"{(int(otp) + 1) % 1_000_000:06d}"
            client.post(
                f"/v1/signing-requests/{created['id']}/signature",
                json={"otp": wrong, "pin": person.pin},
            )
            client.post(
                f"/v1/signing-requests/{created['id']}/signature",
                json={"otp": otp, "pin": "902847"},
            )
            signed = client.post(
                f"/v1/signing-requests/{created['id']}/signature",
                json={"otp": otp, "pin": person.pin},
            )
            assert signed.status_code == 201
        client.get(f"/v1/users/{person.mykad}")  # a MyKad in a path (refused: wrong role)

    runtime = e2e_factory.runtime
    with sessions() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None and credential.key_blob is not None
        private_key = runtime.key_store.private_key(credential.id, credential.key_blob)
    key_der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    secrets_as_text = [*otps, person.pin, key]
    log = server.log()
    dump_text, dump_bytes = database_text(sessions)
    with sessions() as session:
        audit = "\n".join(
            str(tuple(row)) for row in session.execute(text("SELECT * FROM audit_events"))
        )

    for secret in secrets_as_text:
        for where, content in (("log", log), ("database", dump_text), ("audit", audit)):
            assert not standalone(secret).search(content), f"a secret is in the {where}"
        assert secret.encode() not in dump_bytes
    for where, content in (("log", log), ("audit", audit)):
        assert not standalone(person.mykad).search(content), f"a full MyKad is in the {where}"
    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    scalar = private_key.private_numbers().private_value.to_bytes(32, "big")
    assert key_der not in dump_bytes and scalar not in dump_bytes
    body_b64 = "".join(key_pem.splitlines()[1:-1])
    for content in (log, dump_text, audit):
        assert body_b64[20:80] not in content
        assert key_der.hex()[40:120] not in content and scalar.hex() not in content
    assert base64.b64encode(key_der)[20:80].decode() not in log
    # The flows did happen: the log has their request lines, the audit trail their events.
    assert log.count('"http.request"') >= 10
    assert audit.count("signature.created") == 3
