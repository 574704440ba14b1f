"""Time-stamps and OCSP answers signed by keys that never leave a SoftHSM2 token: the issuing
CA's key certifies the TSA and the OCSP responder, their keys sign, openssl checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from app.crypto.ca import issue_ocsp_responder_certificate, issue_tsa_certificate
from app.crypto.external_signing import DigestSigner, sign_certificate
from app.crypto.keystore import KeyAlgorithm
from app.crypto.ocsp import reply_to_request
from app.crypto.pkcs11 import Pkcs11KeyStore
from app.crypto.tsa import reply_to_query
from tests.unit.ltv_pki import (
    ANSWERED_AT,
    ISSUED_AT,
    TSA_POLICY,
    make_pki,
    new_key,
    openssl,
    signer,
    write_pem,
)


def _signer(store: Pkcs11KeyStore, label: str) -> DigestSigner:
    return lambda digest, hash_name: store.sign_with_token_key(label, digest, hash_name)


def _token_issuing_ca(store: Pkcs11KeyStore) -> tuple[x509.Certificate, x509.Certificate]:
    """A software root certifying an issuing CA whose key is in the token."""
    pki = make_pki(now=ISSUED_AT)
    public = store.generate_token_key("roamsign-issuing", "ecdsa-p256")
    builder = (
        x509.CertificateBuilder()
        .subject_name(pki.issuing.subject)
        .issuer_name(pki.root.subject)
        .public_key(public)
        .serial_number(pki.issuing.serial_number)
        .not_valid_before(pki.issuing.not_valid_before_utc)
        .not_valid_after(pki.issuing.not_valid_after_utc)
    )
    for extension in pki.issuing.extensions:
        if not isinstance(extension.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public), critical=False
    )
    issuing = sign_certificate(builder, pki.root_key.public_key(), signer(pki.root_key))
    return pki.root, issuing


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048"])
def test_a_token_tsa_key_stamps_what_openssl_verifies(
    key_store: Pkcs11KeyStore, tmp_path: Path, algorithm: KeyAlgorithm
) -> None:
    root, issuing = _token_issuing_ca(key_store)
    tsa_public = key_store.generate_token_key("roamsign-tsa", algorithm)
    tsa = issue_tsa_certificate(
        tsa_public,
        issuing,
        _signer(key_store, "roamsign-issuing"),
        "Token",
        now=ISSUED_AT,
        validity_days=365,
    )
    (tmp_path / "document").write_bytes(b"Baucar Bayaran PV-2026-000123\n")
    openssl_query = tmp_path / "q.tsq"
    made = openssl("ts", "-query", "-data", tmp_path / "document", "-cert", "-out", openssl_query)
    assert made.returncode == 0, made.stderr
    reply = reply_to_query(
        openssl_query.read_bytes(),
        now=ANSWERED_AT,
        serial=1,
        policy_oid=TSA_POLICY,
        tsa_cert=tsa,
        chain=[issuing],
        sign=_signer(key_store, "roamsign-tsa"),
    )
    (tmp_path / "r.tsr").write_bytes(reply)
    result = openssl(
        "ts",
        "-verify",
        "-queryfile",
        openssl_query,
        "-in",
        tmp_path / "r.tsr",
        "-CAfile",
        write_pem(tmp_path / "root.pem", root),
    )
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


def test_a_token_responder_key_answers_what_openssl_verifies(
    key_store: Pkcs11KeyStore, tmp_path: Path
) -> None:
    root, issuing = _token_issuing_ca(key_store)
    responder_public = key_store.generate_token_key("roamsign-ocsp", "ecdsa-p256")
    responder = issue_ocsp_responder_certificate(
        responder_public,
        issuing,
        _signer(key_store, "roamsign-issuing"),
        "Token",
        now=ISSUED_AT,
        validity_days=30,
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=Siti binti Ahmad,O=roamsign"))
        .issuer_name(issuing.subject)
        .public_key(new_key().public_key())
        .serial_number(0x1234)
        .not_valid_before(ISSUED_AT)
        .not_valid_after(responder.not_valid_after_utc)
    )
    issuing_public = key_store.token_public_key("roamsign-issuing")
    leaf_cert = sign_certificate(leaf, issuing_public, _signer(key_store, "roamsign-issuing"))
    made = openssl(
        "ocsp",
        "-issuer",
        write_pem(tmp_path / "issuing.pem", issuing),
        "-cert",
        write_pem(tmp_path / "leaf.pem", leaf_cert),
        "-reqout",
        tmp_path / "q.der",
    )
    assert made.returncode == 0, made.stderr
    response = reply_to_request(
        (tmp_path / "q.der").read_bytes(),
        lambda serial: ("good", None, None) if serial == 0x1234 else ("unknown", None, None),
        issuing,
        responder,
        _signer(key_store, "roamsign-ocsp"),
        ANSWERED_AT,
        None,
    )
    (tmp_path / "r.der").write_bytes(response)
    result = openssl(
        "ocsp",
        "-reqin",
        tmp_path / "q.der",
        "-respin",
        tmp_path / "r.der",
        "-issuer",
        tmp_path / "issuing.pem",
        "-CAfile",
        write_pem(tmp_path / "root.pem", root),
        "-resp_text",
    )
    text = result.stdout + result.stderr
    assert "Response verify OK" in text and "Cert Status: good" in text
