"""Every CMS signature carries a signature time-stamp: from the built-in TSA by default, from
the TSA at `tsa_url` otherwise; a TSA that does not answer in time is a 503 that leaves the
OTP usable."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from app.clock import FrozenClock
from app.crypto.cades import signature_timestamp_tokens
from app.crypto.cms import verify_cms
from app.crypto.tsa import reply_to_query
from app.crypto.tsa_token import read_timestamp_token
from app.db import unit_of_work
from app.models import CertificateAuthority, SigningRequest
from app.runtime import Runtime
from app.units import Services
from tests.api.conftest import Keys, assert_problem, bearer, request_otp
from tests.factories import FACTORY_CALLER, Person
from tests.helpers import document_hash, openssl_verify, queued_otp
from tests.unit.ltv_pki import NOW, TSA_POLICY, make_pki, new_key, signer


class LocalTsa:
    """A real HTTP TSA on 127.0.0.1 (another CA's), that answers or, once told, hangs."""

    def __init__(self) -> None:
        pki = make_pki("Remote TSA")
        key = new_key()
        self.certificate = pki.issue_tsa(key)
        self.hanging = False
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.hanging:
                    outer.release.wait(30)
                    return
                reply = reply_to_query(
                    query,
                    now=NOW,
                    serial=1,
                    policy_oid=TSA_POLICY,
                    tsa_cert=outer.certificate,
                    chain=[pki.issuing],
                    sign=signer(key),
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsa"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def remote_tsa() -> Iterator[LocalTsa]:
    tsa = LocalTsa()
    yield tsa
    tsa.close()


async def sign(
    client: httpx.AsyncClient, runtime: Runtime, key: str, person: Person, **body: str
) -> tuple[str, str, httpx.Response]:
    created = (await request_otp(client, key, person, **body)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    response = await client.post(
        f"/v1/signing-requests/{created['id']}/signature",
        json={"otp": otp, "pin": person.pin},
        headers=bearer(key),
    )
    return created["id"], otp, response


async def test_a_cms_signature_carries_a_stamp_of_the_built_in_tsa(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime, clock: FrozenClock
) -> None:
    _id, _otp, response = await sign(client, runtime, api_keys.signer, person)
    assert response.status_code == 201, response.text
    cms = base64.b64decode(response.json()["signature"])
    [token] = signature_timestamp_tokens(cms)
    stamp = read_timestamp_token(token)
    assert stamp.gen_time == clock.now().replace(microsecond=0)
    with runtime.sessions() as session:
        tsa = session.get(CertificateAuthority, "tsa")
        material = Services(runtime, session).ca.material()
    assert tsa is not None
    assert stamp.tsa_certificate == x509.load_pem_x509_certificate(tsa.certificate_pem.encode())
    checked = verify_cms(
        cms,
        bytes.fromhex(document_hash("PV-1")),
        "sha256",
        roots=[material.root],
        intermediates=[material.issuing],
    )
    assert checked.valid, checked.reason  # the stamp changed nothing the signature covers


async def test_a_tsa_that_hangs_is_a_503_and_the_same_otp_signs_once_it_answers(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    remote_tsa: LocalTsa,
) -> None:
    remote_tsa.hanging = True
    runtime.settings = runtime.settings.model_copy(
        update={"tsa_url": remote_tsa.url, "tsa_timeout_seconds": 0.3}
    )
    request_id, otp, refused = await sign(client, runtime, api_keys.signer, person)
    assert_problem(refused, 503, "tsa_unavailable")
    assert refused.headers["retry-after"] == "5"
    with runtime.sessions() as session:
        request = session.get(SigningRequest, request_id)
        assert request is not None and request.status == "pending" and request.attempts == 0

    remote_tsa.hanging = False
    signed = await client.post(
        f"/v1/signing-requests/{request_id}/signature",
        json={"otp": otp, "pin": person.pin},
        headers=bearer(api_keys.signer),
    )
    assert signed.status_code == 201, signed.text
    [token] = signature_timestamp_tokens(base64.b64decode(signed.json()["signature"]))
    assert read_timestamp_token(token).tsa_certificate == remote_tsa.certificate


async def test_a_cades_lt_signature_carries_its_validation_data(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    tmp_path: Path,
) -> None:
    _id, _otp, response = await sign(
        client, runtime, api_keys.signer, person, signature_format="cades-lt"
    )
    assert response.status_code == 201, response.text
    assert response.json()["signature_format"] == "cades-lt"
    signature = base64.b64decode(response.json()["signature"])
    signed_data = cms.ContentInfo.load(signature)["content"]
    assert signed_data["version"].native == "v5"
    with runtime.sessions() as session:
        material = Services(runtime, session).ca.material()
        tsa = session.get(CertificateAuthority, "tsa")
    assert tsa is not None
    held = {c.chosen.dump() for c in signed_data["certificates"]}
    tsa_der = x509.load_pem_x509_certificate(tsa.certificate_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    assert tsa_der in held and len(held) == 4  # leaf, issuing CA, root, TSA
    revocation = list(signed_data["crls"])
    answers = [
        ocsp.load_der_ocsp_response(r.chosen["other_rev_info"].dump())
        for r in revocation
        if r.name == "other"
    ]
    assert [a.certificate_status for a in answers] == [ocsp.OCSPCertStatus.GOOD] * 2
    [crl] = [r.chosen.dump() for r in revocation if r.name == "crl"]
    assert x509.load_der_x509_crl(crl).issuer == material.root.subject
    assert len(signature_timestamp_tokens(signature)) == 1

    (tmp_path / "signature.der").write_bytes(signature)
    (tmp_path / "content").write_bytes(b"PV-1")
    root = tmp_path / "root.pem"
    root.write_bytes(material.root.public_bytes(serialization.Encoding.PEM))
    checked = openssl_verify(tmp_path / "signature.der", tmp_path / "content", root)
    assert checked.returncode == 0, checked.stderr
    verified = await client.post(
        "/v1/signatures/verification",
        json={
            "document_hash": document_hash("PV-1"),
            "signature": response.json()["signature"],
            "signature_format": "cades-lt",
        },
        headers=bearer(api_keys.signer),
    )
    assert verified.json()["valid"] is True, verified.text


async def test_verification_reports_the_stamp_and_the_status_then_and_now(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    _id, _otp, response = await sign(client, runtime, api_keys.signer, person)
    stamped_at = clock.now().replace(microsecond=0)
    clock.advance(days=3)
    with unit_of_work(runtime.sessions) as session:
        Services(runtime, session).credential_lifecycle.revoke(
            FACTORY_CALLER, person.credential_id or "", "keyCompromise", clock.now()
        )
    verified = await client.post(
        "/v1/signatures/verification",
        json={"document_hash": document_hash("PV-1"), "signature": response.json()["signature"]},
        headers=bearer(api_keys.signer),
    )
    body = verified.json()
    assert body["valid"] is True, body
    assert body["certificate_status"] == "revoked"
    assert body["certificate_status_at_timestamp"] == "good"
    assert body["timestamp"] == {
        "time": stamped_at.isoformat().replace("+00:00", "Z"),
        "tsa": "roamsign Demo Time-Stamping Authority",
        "tsa_trusted": True,
    }
