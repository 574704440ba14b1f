"""A small PKI for the time-stamping, OCSP and CAdES tests: root, issuing CA, TSA, OCSP
responder and people's certificates, all built with app/crypto/ca.py and software keys."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.crypto.ca import (
    build_issuing_ca,
    build_root_ca,
    issue_ocsp_responder_certificate,
    issue_signing_certificate,
    issue_tsa_certificate,
)
from app.crypto.external_signing import DigestSigner
from app.crypto.keystore import KeyAlgorithm, PrivateKey, new_private_key, sign_digest_with

NOW = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)
BASE = "https://roamsign.example.gov.my"
TSA_POLICY = "1.3.6.1.4.1.99999.1.3161"
# openssl ocsp checks thisUpdate/nextUpdate against the wall clock (-attime covers only the
# chain), so the OCSP tests answer as of a moment just past, certificates issued before it.
ANSWERED_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
ISSUED_AT = ANSWERED_AT - timedelta(days=5)


def signer(key: PrivateKey) -> DigestSigner:
    """The `sign(digest, hash_algorithm)` callback a key store gives for `key`."""
    return lambda digest, hash_algorithm: sign_digest_with(key, digest, hash_algorithm)


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    root_key: PrivateKey
    issuing: x509.Certificate
    issuing_key: PrivateKey

    def issue_tsa(self, key: PrivateKey, now: datetime = NOW) -> x509.Certificate:
        return issue_tsa_certificate(
            key.public_key(),
            self.issuing,
            signer(self.issuing_key),
            "JDN Test",
            now=now,
            validity_days=1825,
            crl_url=f"{BASE}/v1/ca/crl",
            ca_issuers_url=f"{BASE}/v1/ca/issuer.cer",
            ocsp_url=f"{BASE}/v1/ca/ocsp",
        )

    def issue_responder(self, key: PrivateKey, now: datetime = NOW) -> x509.Certificate:
        return issue_ocsp_responder_certificate(
            key.public_key(),
            self.issuing,
            signer(self.issuing_key),
            "JDN Test",
            now=now,
            validity_days=30,
        )

    def issue_person(
        self, key: PrivateKey, now: datetime = NOW, serial: int | None = None
    ) -> x509.Certificate:
        return issue_signing_certificate(
            key.public_key(),
            "Nur Aisyah binti Ahmad",
            "RS-7f3a9c0e",
            self.issuing,
            self.issuing_key,
            now=now,
            validity_days=730,
            serial=serial,
            crl_url=f"{BASE}/v1/ca/crl",
            ca_issuers_url=f"{BASE}/v1/ca/issuer.cer",
            ocsp_url=f"{BASE}/v1/ca/ocsp",
        )


def make_pki(name: str = "JDN Test", now: datetime = NOW) -> Pki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root_ca(root_key, name, now=now, validity_days=7300)
    issuing = build_issuing_ca(issuing_key, root, root_key, name, now=now, validity_days=3650)
    return Pki(root, root_key, issuing, issuing_key)


def new_key(algorithm: KeyAlgorithm = "ecdsa-p256") -> PrivateKey:
    return new_private_key(algorithm)


def write_pem(path: Path, *certs: x509.Certificate) -> str:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return str(path)


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
