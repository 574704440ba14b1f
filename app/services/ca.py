"""The certification authority: `ca init`, the chain, and issuing people's certificates."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.ca import (
    CaKey,
    HeldKey,
    build_crl,
    build_issuing_ca,
    build_root_ca,
    certificate_pem,
    issue_signing_certificate,
)
from app.crypto.external_signing import DigestSigner
from app.crypto.keystore import KeyAlgorithm, KeyStore, PublicKey, RsaPadding, sign_digest_with
from app.errors import ServiceUnavailable
from app.models import CertificateAuthority, Credential

ROOT, ISSUING = "root", "issuing"
ROOT_VALIDITY_DAYS = 20 * 365
ISSUING_VALIDITY_DAYS = 10 * 365
CRL_NEXT_UPDATE_SECONDS = 24 * 3600
# Where the published CA material lives under the public base URL (app/routers/ca.py).
CRL_PATH = "/v1/ca/crl"
# RFC 5280 s.4.2.2.1: one DER certificate (the PEM chain stays at /v1/ca/certificates).
CA_ISSUERS_PATH = "/v1/ca/issuer.cer"
OCSP_PATH = "/v1/ca/ocsp"
# The issuing CA's own pointers: the root's CRL and certificate.
ROOT_CRL_PATH = "/v1/ca/root.crl"
ROOT_CERTIFICATE_PATH = "/v1/ca/root.cer"


# With a PKCS#11 key store the CA keys are token objects under these labels, and the
# certificate_authorities row stores a reference to the label (`token_reference`), no key.
TOKEN_LABELS = {ROOT: "roamsign-ca-root", ISSUING: "roamsign-ca-issuing"}
_TOKEN_REFERENCE = b"pkcs11-token-key:"
CA_ALGORITHM: KeyAlgorithm = "ecdsa-p256"


def ca_key_id(name: str) -> str:
    return f"ca:{name}"


def token_reference(label: str) -> bytes:
    """What the key_blob column holds for a CA key that lives in the token as `label`."""
    return _TOKEN_REFERENCE + label.encode()


def token_label(blob: bytes) -> str | None:
    """The token label a key_blob refers to; None for a software key's sealed blob."""
    if blob.startswith(_TOKEN_REFERENCE):
        return blob[len(_TOKEN_REFERENCE) :].decode()
    return None


@runtime_checkable
class TokenKeys(Protocol):
    """A key store that keeps named keys inside a token (app.crypto.pkcs11.Pkcs11KeyStore)."""

    def generate_token_key(self, label: str, algorithm: KeyAlgorithm) -> PublicKey: ...

    def token_public_key(self, label: str) -> PublicKey: ...

    def sign_with_token_key(
        self,
        label: str,
        digest: bytes,
        hash_algorithm: str,
        rsa_padding: RsaPadding = "pkcs1v15",
        pss_salt_length: int | None = None,
    ) -> bytes: ...


@dataclass(frozen=True)
class CaMaterial:
    """The CA as the signing path needs it: parsed once per process, never changing after."""

    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key_blob: bytes
    chain_pems: tuple[str, str]  # issuing CA, then root: what a verifier needs after the leaf


class CaCache:
    def __init__(self) -> None:
        self._material: CaMaterial | None = None
        self._lock = threading.Lock()

    def get(self, session: Session) -> CaMaterial:
        if self._material is None:
            with self._lock:
                if self._material is None:
                    self._material = _load(session)
        return self._material

    def clear(self) -> None:
        """Forget the material (after this process re-issued a CA certificate)."""
        with self._lock:
            self._material = None


class CertificateAuthorityService:
    """The CA's use cases. Give `public_base_url` (settings.public_base_url) wherever
    certificates are issued: their CRL distribution point and CA issuers URL are built on it."""

    def __init__(
        self,
        session: Session,
        key_store: KeyStore,
        cache: CaCache,
        ca_name: str,
        public_base_url: str | None = None,
    ) -> None:
        self.session = session
        self.key_store = key_store
        self.cache = cache
        self.ca_name = ca_name
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None

    def init(self, now: datetime) -> bool:
        """Create the root and issuing CA unless they exist; True when something was created."""
        # Other keys may share the table (the audit checkpoint key): only the CA's rows count.
        existing = {ca.name for ca in self.session.scalars(select(CertificateAuthority))} & {
            ROOT,
            ISSUING,
        }
        if {ROOT, ISSUING} <= existing:
            return False
        if existing:
            raise RuntimeError("the CA is half-initialised: the root or issuing CA row is missing")
        root_blob, root_key = self._new_key(ROOT)
        root = build_root_ca(root_key, self.ca_name, now=now, validity_days=ROOT_VALIDITY_DAYS)
        issuing_blob, issuing_key = self._new_key(ISSUING)
        issuing = build_issuing_ca(
            issuing_key, root, root_key, self.ca_name, now=now, validity_days=ISSUING_VALIDITY_DAYS
        )
        for name, cert, blob in ((ROOT, root, root_blob), (ISSUING, issuing, issuing_blob)):
            self.session.add(
                CertificateAuthority(
                    name=name, certificate_pem=certificate_pem(cert), key_blob=blob, created_at=now
                )
            )
        self.session.flush()
        return True

    def material(self) -> CaMaterial:
        return self.cache.get(self.session)

    def sign_with_issuing_key(self, digest: bytes, hash_algorithm: str) -> bytes:
        """Sign a digest with the issuing CA's key, wherever it lives (a `DigestSigner`:
        certificates, CRLs)."""
        return self.issuing_signer()(digest, hash_algorithm)

    def sign_with_root_key(self, digest: bytes, hash_algorithm: str) -> bytes:
        """Sign a digest with the root's key, wherever it lives (the issuing CA's certificate,
        the root CRL)."""
        root = self.session.get(CertificateAuthority, ROOT)
        if root is None:
            raise ServiceUnavailable("the CA is not initialised: run `python -m app ca init`")
        key = self._ca_key(ROOT, root.key_blob, public_key_of(self.material().root))
        if isinstance(key, HeldKey):
            return key.sign(digest, hash_algorithm)
        return sign_digest_with(key, digest, hash_algorithm)

    def chain_pem(self) -> str:
        """Issuing CA then root, as `application/pem-certificate-chain`."""
        return "".join(self.material().chain_pems)

    def crl_der(self, now: datetime) -> bytes:
        """The issuing CA's CRL, signed now, listing every revoked roaming certificate."""
        material = self.material()
        revoked = [
            (int(serial, 16), revoked_at, reason or "unspecified")
            for serial, revoked_at, reason in self.session.execute(
                select(
                    Credential.certificate_serial,
                    Credential.revoked_at,
                    Credential.revocation_reason,
                ).where(
                    Credential.revoked_at.is_not(None), Credential.certificate_serial.is_not(None)
                )
            )
            if serial is not None and revoked_at is not None
        ]
        issuing_key = self._issuing_key(material)
        crl = build_crl(
            material.issuing,
            issuing_key,
            revoked,
            now=now,
            next_update_seconds=CRL_NEXT_UPDATE_SECONDS,
        )
        return crl.public_bytes(serialization.Encoding.DER)

    def issue(
        self,
        public_key: PublicKey,
        subject_name: str,
        subject_serial: str,
        now: datetime,
        validity_days: int,
    ) -> x509.Certificate:
        material = self.material()
        issuing_key = self._issuing_key(material)
        base = self.public_base_url
        return issue_signing_certificate(
            public_key,
            subject_name,
            subject_serial,
            material.issuing,
            issuing_key,
            now=now,
            validity_days=validity_days,
            crl_url=f"{base}{CRL_PATH}" if base else None,
            ca_issuers_url=f"{base}{CA_ISSUERS_PATH}" if base else None,
            ocsp_url=f"{base}{OCSP_PATH}" if base else None,
        )

    def issuing_signer(self) -> DigestSigner:
        """Signs a digest with the issuing CA's key, wherever it lives (for certificates built
        elsewhere, e.g. the time-stamping and OCSP responder certificates)."""
        key = self._issuing_key(self.material())
        if isinstance(key, HeldKey):
            return key.sign
        return partial(sign_digest_with, key)

    def _new_key(self, name: str) -> tuple[bytes, CaKey]:
        """A new CA key: a token object when the store has a token, else a sealed blob."""
        if isinstance(self.key_store, TokenKeys):
            from app.crypto.pkcs11_objects import TokenKeyMissing

            label = TOKEN_LABELS[name]
            try:
                # Left by an earlier `ca init` that failed before its commit: the token is
                # this service's own, so its key is taken rather than refused.
                public = self.key_store.token_public_key(label)
            except TokenKeyMissing:
                public = self.key_store.generate_token_key(label, CA_ALGORITHM)
            return token_reference(label), self._held_key(label, public)
        blob = self.key_store.generate(ca_key_id(name), CA_ALGORITHM).blob
        return blob, self.key_store.private_key(ca_key_id(name), blob)

    def _issuing_key(self, material: CaMaterial) -> CaKey:
        return self._ca_key(ISSUING, material.issuing_key_blob, public_key_of(material.issuing))

    def _ca_key(self, name: str, blob: bytes, public: PublicKey) -> CaKey:
        """The CA key `name` kept as `blob`: a token object's reference, or a sealed key."""
        label = token_label(blob)
        if label is not None:
            return self._held_key(label, public)
        if isinstance(self.key_store, TokenKeys):
            raise ServiceUnavailable(
                "the CA keys are still software keys: run `python -m app keys migrate --to pkcs11`"
            )
        return self.key_store.private_key(ca_key_id(name), blob)

    def _held_key(self, label: str, public: PublicKey) -> HeldKey:
        if not isinstance(self.key_store, TokenKeys):
            raise ServiceUnavailable(
                "the CA keys are in a PKCS#11 token: set ROAMSIGN_KEY_STORE=pkcs11"
            )
        return HeldKey(public, partial(self.key_store.sign_with_token_key, label))


def public_key_of(certificate: x509.Certificate) -> PublicKey:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError("unsupported CA public key type")
    return key


def _load(session: Session) -> CaMaterial:
    rows = {ca.name: ca for ca in session.scalars(select(CertificateAuthority))}
    if ROOT not in rows or ISSUING not in rows:
        raise ServiceUnavailable("the CA is not initialised: run `python -m app ca init`")
    root = x509.load_pem_x509_certificate(rows[ROOT].certificate_pem.encode())
    issuing = x509.load_pem_x509_certificate(rows[ISSUING].certificate_pem.encode())
    return CaMaterial(
        root=root,
        issuing=issuing,
        issuing_key_blob=rows[ISSUING].key_blob,
        chain_pems=(rows[ISSUING].certificate_pem, rows[ROOT].certificate_pem),
    )
