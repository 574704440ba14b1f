"""The public PKI endpoints: the TSA, the OCSP responder, issuer.cer and the root CRL."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import httpx
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp

from app.clock import FrozenClock
from app.crypto.tsa import TimeStampResp, timestamp_query
from app.crypto.tsa_token import read_timestamp_token
from app.db import unit_of_work
from app.models import Credential
from app.runtime import Runtime
from app.units import Services
from tests.factories import FACTORY_CALLER, Factory, Person
from tests.unit.ltv_pki import make_pki, openssl, write_pem

TSQ = {"Content-Type": "application/timestamp-query"}
OCSP_REQ = {"Content-Type": "application/ocsp-request"}


def chain(runtime: Runtime) -> tuple[x509.Certificate, x509.Certificate]:
    with runtime.sessions() as session:
        material = Services(runtime, session).ca.material()
        return material.issuing, material.root


def certificate_of(runtime: Runtime, person: Person) -> x509.Certificate:
    with runtime.sessions() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None and credential.certificate_pem is not None
        return x509.load_pem_x509_certificate(credential.certificate_pem.encode())


def ocsp_request(
    certificate: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None = None
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


async def post_ocsp(client: httpx.AsyncClient, der: bytes) -> ocsp.OCSPResponse:
    response = await client.post("/v1/ca/ocsp", content=der, headers=OCSP_REQ)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


async def test_the_tsa_grants_a_token_openssl_verifies(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "document").write_bytes(b"Baucar Bayaran PV-2026-000123")
    query = tmp_path / "query.tsq"
    made = openssl(
        "ts", "-query", "-data", tmp_path / "document", "-sha256", "-cert", "-out", query
    )
    assert made.returncode == 0, made.stderr
    response = await client.post("/v1/tsa", content=query.read_bytes(), headers=TSQ)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/timestamp-reply"
    (tmp_path / "reply.tsr").write_bytes(response.content)
    issuing, root = chain(runtime)
    checked = openssl(
        "ts",
        "-verify",
        "-in",
        tmp_path / "reply.tsr",
        "-queryfile",
        query,
        "-CAfile",
        write_pem(tmp_path / "root.pem", root),
        "-untrusted",
        write_pem(tmp_path / "issuing.pem", issuing),
    )
    assert checked.returncode == 0 and "Verification: OK" in checked.stdout, checked.stderr


async def test_the_tsa_refuses_garbage_and_sha1_in_its_own_shape(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock
) -> None:
    garbage = await client.post("/v1/tsa", content=b"\x30\x03junk", headers=TSQ)
    sha1 = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha1"},
                "hashed_message": b"1" * 20,
            },
            "cert_req": True,
        }
    ).dump()
    unsupported = await client.post("/v1/tsa", content=sha1, headers=TSQ)
    for response, failure in ((garbage, "bad_data_format"), (unsupported, "bad_alg")):
        assert response.status_code == 200
        status = TimeStampResp.load(response.content)["status"].native
        assert status["status"] == "rejection" and status["fail_info"] == {failure}
    granted = await client.post(
        "/v1/tsa", content=timestamp_query(b"\x01" * 32, "sha256", nonce=7), headers=TSQ
    )
    token = tsp.TimeStampResp.load(granted.content)["time_stamp_token"].dump()
    read = read_timestamp_token(token)
    assert (read.nonce, read.gen_time) == (7, clock.now().replace(microsecond=0))
    wrong_type = await client.post("/v1/tsa", content=sha1)
    assert wrong_type.status_code == 415


async def test_ocsp_good_then_revoked_unknown_unauthorized_malformed(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    person: Person,
    clock: FrozenClock,
) -> None:
    issuing, _root = chain(runtime)
    leaf = certificate_of(runtime, person)
    der = ocsp_request(leaf, issuing)
    good = await post_ocsp(client, der)
    assert good.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert good.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert good.next_update_utc == good.this_update_utc + timedelta(hours=1)
    again = await client.get(f"/v1/ca/ocsp/{base64.b64encode(der).decode()}")
    assert again.content == good.public_bytes(serialization.Encoding.DER)  # the cached answer
    nonce = await post_ocsp(client, ocsp_request(leaf, issuing, nonce=b"n" * 16))
    assert nonce.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16

    clock.advance(60)
    with unit_of_work(runtime.sessions) as session:
        Services(runtime, session).credential_lifecycle.revoke(
            FACTORY_CALLER, person.credential_id or "", "keyCompromise", clock.now()
        )
    revoked = await post_ocsp(client, der)
    assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_time_utc == clock.now().replace(microsecond=0)
    assert revoked.revocation_reason == x509.ReasonFlags.key_compromise

    other = make_pki()
    stranger = other.issue_person(ec.generate_private_key(ec.SECP256R1()))
    unauthorized = await post_ocsp(client, ocsp_request(stranger, other.issuing))
    assert unauthorized.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    asked = asn1_ocsp.OCSPRequest.load(ocsp_request(leaf, issuing))
    asked["tbs_request"]["request_list"][0]["req_cert"]["serial_number"] = 12345
    unknown = await post_ocsp(client, asked.dump(force=True))
    assert unknown.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    for body in (b"garbage", b""):
        malformed = await post_ocsp(client, body)
        assert malformed.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    bad_path = await client.get("/v1/ca/ocsp/not*base64")
    assert ocsp.load_der_ocsp_response(bad_path.content).response_status == (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


async def test_issuer_cer_and_the_root_crl(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    issuing, root = chain(runtime)
    issuer = await client.get("/v1/ca/issuer.cer")
    assert issuer.headers["content-type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(issuer.content) == issuing
    assert x509.load_der_x509_certificate((await client.get("/v1/ca/root.cer")).content) == root
    response = await client.get("/v1/ca/root.crl")
    assert response.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    root_key = root.public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert crl.is_signature_valid(root_key) and crl.issuer == root.subject and len(crl) == 0
