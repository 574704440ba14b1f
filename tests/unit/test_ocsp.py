"""The OCSP responder: openssl's own requests answered, and the answers read and verified by
`openssl ocsp -respin` and by cryptography; requests it must refuse refused in OCSP's shape."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from app.crypto.ca import build_issuing_ca
from app.crypto.keystore import KeyAlgorithm, PrivateKey
from app.crypto.ocsp import (
    CertStatus,
    OcspRequestMalformed,
    SerialStatus,
    error_response,
    ocsp_response,
    parse_ocsp_request,
    reply_to_request,
)
from tests.unit.ltv_pki import (
    ANSWERED_AT,
    BASE,
    ISSUED_AT,
    Pki,
    make_pki,
    new_key,
    openssl,
    signer,
    write_pem,
)

REVOKED_AT = ANSWERED_AT - timedelta(days=2, hours=3)
GOOD = SerialStatus("good")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")


class Ca:
    """The issuing CA with its responder, and what it knows of the serials it issued."""

    def __init__(self, responder_algorithm: KeyAlgorithm = "ecdsa-p256") -> None:
        self.pki: Pki = make_pki(now=ISSUED_AT)
        self.responder_key: PrivateKey = new_key(responder_algorithm)
        self.responder = self.pki.issue_responder(self.responder_key, now=ISSUED_AT)
        self.statuses: dict[int, SerialStatus] = {}

    def issue(self, status: SerialStatus = GOOD) -> x509.Certificate:
        certificate = self.pki.issue_person(new_key(), now=ISSUED_AT)
        self.statuses[certificate.serial_number] = status
        return certificate

    def lookup(self, serial: int) -> tuple[CertStatus, datetime | None, str | None]:
        return self.statuses.get(serial, SerialStatus("unknown"))

    def answer(self, request_der: bytes) -> bytes:
        return reply_to_request(
            request_der,
            self.lookup,
            self.pki.issuing,
            self.responder,
            signer(self.responder_key),
            ANSWERED_AT,
            ANSWERED_AT + timedelta(hours=12),
        )


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca()


def openssl_request(tmp_path: Path, issuer: x509.Certificate, *certs: x509.Certificate) -> bytes:
    cert_args: list[str] = []
    for index, cert in enumerate(certs):
        cert_args += ["-cert", write_pem(tmp_path / f"leaf{index}.pem", cert)]
    result = openssl(
        "ocsp",
        "-issuer",
        write_pem(tmp_path / "issuer.pem", issuer),
        *cert_args,
        "-reqout",
        tmp_path / "q.der",
    )
    assert result.returncode == 0, result.stderr
    return (tmp_path / "q.der").read_bytes()


def openssl_read(tmp_path: Path, ca: Ca, response: bytes, *trust: str) -> str:
    """`openssl ocsp` reading our response to its request q.der (nonce checked), as text."""
    (tmp_path / "r.der").write_bytes(response)
    result = openssl(
        "ocsp",
        "-reqin",
        tmp_path / "q.der",
        "-respin",
        tmp_path / "r.der",
        "-issuer",
        write_pem(tmp_path / "issuing.pem", ca.pki.issuing),
        *(trust or ("-CAfile", write_pem(tmp_path / "root.pem", ca.pki.root))),
        "-resp_text",
    )
    return result.stdout + result.stderr


@needs_openssl
def test_openssl_verifies_a_good_answer_with_its_nonce(ca: Ca, tmp_path: Path):
    leaf = ca.issue()
    text = openssl_read(tmp_path, ca, ca.answer(openssl_request(tmp_path, ca.pki.issuing, leaf)))
    assert "Response verify OK" in text
    assert "Cert Status: good" in text
    assert "OCSP Nonce:" in text
    assert "Nonce Verify error" not in text and "WARNING" not in text


@needs_openssl
@pytest.mark.parametrize("reason", ["keyCompromise", "superseded", "cessationOfOperation"])
def test_openssl_shows_revocation_time_and_reason(ca: Ca, tmp_path: Path, reason: str):
    leaf = ca.issue(SerialStatus("revoked", REVOKED_AT, reason))
    text = openssl_read(tmp_path, ca, ca.answer(openssl_request(tmp_path, ca.pki.issuing, leaf)))
    assert "Response verify OK" in text
    assert "Cert Status: revoked" in text
    assert f"Revocation Time: {REVOKED_AT:%b %e %H:%M:%S %Y} GMT" in text
    assert f"Revocation Reason: {reason}" in text


@needs_openssl
def test_openssl_reads_unknown_for_a_serial_never_issued(ca: Ca, tmp_path: Path):
    stranger = make_pki(now=ISSUED_AT)
    # Same issuing CA name and key hash as ours: only the serial is foreign.
    forged = x509.CertificateBuilder(
        issuer_name=ca.pki.issuing.subject,
        subject_name=ca.pki.issuing.subject,
        public_key=new_key().public_key(),
        serial_number=0xBADC0DE,
        not_valid_before=ISSUED_AT,
        not_valid_after=ISSUED_AT + timedelta(days=1),
    ).sign(stranger.issuing_key, hashes.SHA256())
    text = openssl_read(tmp_path, ca, ca.answer(openssl_request(tmp_path, ca.pki.issuing, forged)))
    assert "Response verify OK" in text
    assert "Cert Status: unknown" in text


@needs_openssl
def test_openssl_trusts_the_responder_given_as_vafile(ca: Ca, tmp_path: Path):
    leaf = ca.issue()
    response = ca.answer(openssl_request(tmp_path, ca.pki.issuing, leaf))
    vafile = write_pem(tmp_path / "responder.pem", ca.responder)
    text = openssl_read(tmp_path, ca, response, "-VAfile", vafile)
    assert "Response verify OK" in text and "Cert Status: good" in text


def _same_name_responder(ca: Ca, other: Ca) -> x509.Certificate:
    """A responder certificate naming our CA as issuer (a mis-wiring, or a forgery), but
    signed by another CA's key."""
    return (
        x509.CertificateBuilder()
        .issuer_name(ca.pki.issuing.subject)
        .subject_name(other.responder.subject)
        .public_key(other.responder_key.public_key())
        .serial_number(77)
        .not_valid_before(ISSUED_AT)
        .not_valid_after(ISSUED_AT + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .sign(other.pki.issuing_key, hashes.SHA256())
    )


@needs_openssl
def test_a_request_about_another_issuer_is_unauthorized(ca: Ca, tmp_path: Path):
    other = make_pki("Other", now=ISSUED_AT)
    stranger = other.issue_person(new_key(), now=ISSUED_AT)
    response = ca.answer(openssl_request(tmp_path, other.issuing, stranger))
    assert ocsp.load_der_ocsp_response(response).response_status is (
        ocsp.OCSPResponseStatus.UNAUTHORIZED
    )
    assert "Responder Error: unauthorized (6)" in openssl_read(tmp_path, ca, response)


@needs_openssl
@pytest.mark.parametrize("body", [b"", b"GET / HTTP/1.1\r\n", b"\x30\x03\x02\x01\x01"])
def test_garbage_is_a_malformed_request(ca: Ca, tmp_path: Path, body: bytes):
    response = ca.answer(body)
    assert response == error_response("malformed_request")
    assert ocsp.load_der_ocsp_response(response).response_status is (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    (tmp_path / "q.der").write_bytes(openssl_request(tmp_path, ca.pki.issuing, ca.issue()))
    assert "Responder Error: malformedrequest (1)" in openssl_read(tmp_path, ca, response)
    with pytest.raises(OcspRequestMalformed):
        parse_ocsp_request(body)


@needs_openssl
def test_cryptography_reads_every_field(ca: Ca, tmp_path: Path):
    leaf = ca.issue(SerialStatus("revoked", REVOKED_AT, "keyCompromise"))
    request_der = openssl_request(tmp_path, ca.pki.issuing, leaf)
    response = ocsp.load_der_ocsp_response(ca.answer(request_der))
    request = ocsp.load_der_ocsp_request(request_der)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.serial_number == leaf.serial_number
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == REVOKED_AT
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    assert response.produced_at_utc == ANSWERED_AT == response.this_update_utc
    assert response.next_update_utc == ANSWERED_AT + timedelta(hours=12)
    assert (
        response.responder_key_hash
        == ca.responder.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )  # SKI from_public_key is the same SHA-1 of the key bits
    assert response.certificates == [ca.responder]
    nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value
    assert nonce == request.extensions.get_extension_for_class(x509.OCSPNonce).value
    public_key = ca.responder.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    public_key.verify(
        response.signature,
        response.tbs_response_bytes,
        ec.ECDSA(response.signature_hash_algorithm),
    )


@needs_openssl
def test_several_certificates_in_one_request(ca: Ca, tmp_path: Path):
    good, revoked = ca.issue(), ca.issue(SerialStatus("revoked", REVOKED_AT, "superseded"))
    text = openssl_read(
        tmp_path, ca, ca.answer(openssl_request(tmp_path, ca.pki.issuing, good, revoked))
    )
    assert "Response verify OK" in text
    assert text.count("Cert Status: good") == 1 and text.count("Cert Status: revoked") == 1


@needs_openssl
def test_sha256_cert_ids_and_an_rsa_responder(tmp_path: Path):
    rsa_ca = Ca("rsa-2048")
    leaf = rsa_ca.issue()
    result = openssl(
        "ocsp",
        "-sha256",
        "-no_nonce",
        "-issuer",
        write_pem(tmp_path / "issuer.pem", rsa_ca.pki.issuing),
        "-cert",
        write_pem(tmp_path / "leaf.pem", leaf),
        "-reqout",
        tmp_path / "q.der",
    )
    assert result.returncode == 0, result.stderr
    request = parse_ocsp_request((tmp_path / "q.der").read_bytes())
    assert request.nonce is None and request.queries[0].hash_algorithm == "sha256"
    text = openssl_read(tmp_path, rsa_ca, rsa_ca.answer((tmp_path / "q.der").read_bytes()))
    assert "Response verify OK" in text and "Cert Status: good" in text
    assert "sha256WithRSAEncryption" in text


def test_responder_certificate_is_delegated_and_not_checked(ca: Ca):
    responder = ca.responder
    usage = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert not responder.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    responder.verify_directly_issued_by(ca.pki.issuing)


@pytest.mark.parametrize("same_name", [False, True])
def test_a_responder_not_issued_by_this_ca_is_refused_before_signing(ca: Ca, same_name: bool):
    other = Ca()
    responder = _same_name_responder(ca, other) if same_name else other.responder
    with pytest.raises(ValueError, match="not issued by this CA"):
        ocsp_response(
            parse_ocsp_request(reply_to_request_der(ca)),
            ca.lookup,
            ca.pki.issuing,
            responder,
            signer(other.responder_key),
            ANSWERED_AT,
            None,
        )


def reply_to_request_der(ca: Ca) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(ca.issue(), ca.pki.issuing, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_people_certificates_point_at_the_ocsp_responder_and_the_der_issuer(ca: Ca):
    leaf = ca.issue()
    access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(a.access_method, a.access_location.value) for a in access] == [
        (AuthorityInformationAccessOID.CA_ISSUERS, f"{BASE}/v1/ca/issuer.cer"),
        (AuthorityInformationAccessOID.OCSP, f"{BASE}/v1/ca/ocsp"),
    ]


def test_issuing_ca_gets_revocation_pointers_only_when_asked():
    pki = make_pki(now=ISSUED_AT)
    key = new_key()
    plain = build_issuing_ca(key, pki.root, pki.root_key, "X", now=ISSUED_AT, validity_days=30)
    pointed = build_issuing_ca(
        key,
        pki.root,
        pki.root_key,
        "X",
        now=ISSUED_AT,
        validity_days=30,
        crl_url=f"{BASE}/v1/ca/root.crl",
        ca_issuers_url=f"{BASE}/v1/ca/root.cer",
    )
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    [point] = pointed.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(f"{BASE}/v1/ca/root.crl")]
    [issuers] = pointed.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert issuers.access_method == AuthorityInformationAccessOID.CA_ISSUERS


@pytest.mark.parametrize(("length", "accepted"), [(16, True), (128, True), (129, False)])
def test_nonce_length_follows_rfc_8954(ca: Ca, length: int, accepted: bool):
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(ca.issue(), ca.pki.issuing, hashes.SHA1())
        .add_extension(x509.OCSPNonce(b"n" * length), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    response = ocsp.load_der_ocsp_response(ca.answer(request))
    if accepted:
        nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        assert nonce == b"n" * length
    else:
        assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
