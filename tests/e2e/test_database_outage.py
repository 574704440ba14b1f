"""The database goes away and comes back: 503 while it is gone, nothing half-written after.

PostgreSQL only: the server reaches it through a TCP proxy this test cuts and restores.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.models import Signature, SigningRequest
from app.services.mail.sink import MailSink
from tests.db_proxy import DatabaseProxy
from tests.e2e.conftest import ServerStarter
from tests.factories import Factory
from tests.helpers import document_hash, otp_from_message

pytestmark = pytest.mark.postgres_only


def test_outage_answers_503_and_leaves_nothing_half_written(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    database_url: str,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person()
    key = e2e_factory.client("igfmas", "signer")
    url = make_url(database_url)
    proxy = DatabaseProxy(int(url.port or 5432))
    try:
        proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
        server = start_server(ROAMSIGN_DATABASE_URL=proxied)
        with server.client(key) as client:
            created = client.post(
                "/v1/signing-requests",
                json={
                    "mykad": person.mykad,
                    "document_hash": document_hash(),
                    "document_name": "PV",
                },
            ).json()
            message = sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == created["id"])
            otp = otp_from_message(message)

            proxy.cut()
            assert client.get("/readyz").status_code == 503
            refused = client.post(
                f"/v1/signing-requests/{created['id']}/signature",
                json={"otp": otp, "pin": person.pin},
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "service_unavailable"
            assert refused.headers["content-type"] == "application/problem+json"
            another = client.post(
                "/v1/signing-requests",
                json={
                    "mykad": person.mykad,
                    "document_hash": document_hash("2"),
                    "document_name": "PV-2",
                },
            )
            assert another.status_code == 503

            proxy.restore()
            assert client.get("/readyz").status_code == 200
            # Nothing half-written: the refused submission counted no attempt and signed nothing,
            # the refused request does not exist; the OTP still works once.
            with sessions() as session:
                request = session.get(SigningRequest, created["id"])
                assert request is not None and request.attempts == 0
                assert request.status == "pending"
                assert session.scalar(select(func.count()).select_from(SigningRequest)) == 1
                assert session.scalar(select(func.count()).select_from(Signature)) == 0
            signed = client.post(
                f"/v1/signing-requests/{created['id']}/signature",
                json={"otp": otp, "pin": person.pin},
            )
            assert signed.status_code == 201, signed.text
    finally:
        proxy.close()
