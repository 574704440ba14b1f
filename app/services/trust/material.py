"""The evidence keys beside the CA: the time-stamping authority and the OCSP responder.

Each is a row of `certificate_authorities` ("tsa", "ocsp": certificate and key blob), its key
in the same key store as the CA's (`KeyStore.generate` / `sign_digest`, so a token once the
key store speaks PKCS#11). `TrustProvisioning` creates them (`ca init`) and brings an older
deployment up to date (`ca upgrade`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.ca import (
    certificate_pem,
    issue_ocsp_responder_certificate,
    issue_tsa_certificate,
)
from app.crypto.keystore import KeyAlgorithm, KeyStore
from app.crypto.pki import has_revocation_pointers, reissue_with_pointers
from app.errors import ServiceUnavailable
from app.models import CertificateAuthority
from app.services.ca import (
    CA_ISSUERS_PATH,
    CRL_PATH,
    ISSUING,
    OCSP_PATH,
    ROOT,
    ROOT_CERTIFICATE_PATH,
    ROOT_CRL_PATH,
    CertificateAuthorityService,
    ca_key_id,
)

TSA, OCSP = "tsa", "ocsp"
TSA_VALIDITY_DAYS = 5 * 365
# RFC 6960 s.4.2.2.2.1: a responder certificate with ocsp-nocheck is never asked about, so
# it lives briefly; `ca upgrade` re-issues it once it has less than the margin left.
OCSP_RESPONDER_VALIDITY_DAYS = 90
OCSP_RESPONDER_RENEWAL_MARGIN = timedelta(days=30)


@dataclass(frozen=True)
class TrustMaterial:
    """The TSA's and the OCSP responder's certificates and key blobs, read once a process."""

    tsa: x509.Certificate
    tsa_key_blob: bytes
    ocsp: x509.Certificate
    ocsp_key_blob: bytes


class TrustCache:
    def __init__(self) -> None:
        self._material: TrustMaterial | None = None
        self._lock = threading.Lock()

    def get(self, session: Session) -> TrustMaterial:
        if self._material is None:
            with self._lock:
                if self._material is None:
                    self._material = _load(session)
        return self._material

    def clear(self) -> None:
        with self._lock:
            self._material = None


class TrustProvisioning:
    """`ca init` and `ca upgrade`: the CA, then the TSA and OCSP material; idempotent."""

    def __init__(
        self,
        session: Session,
        ca: CertificateAuthorityService,
        key_store: KeyStore,
        cache: TrustCache,
        key_algorithm: KeyAlgorithm = "ecdsa-p256",
    ) -> None:
        self.session = session
        self.ca = ca
        self.key_store = key_store
        self.cache = cache
        self.key_algorithm = key_algorithm

    def init(self, now: datetime) -> list[str]:
        """Create what is missing (the root and issuing CA included); names what was made."""
        made = ["root and issuing CA"] if self.ca.init(now) else []
        return made + self.upgrade(now)

    def upgrade(self, now: datetime) -> list[str]:
        """For an existing CA: re-issue the issuing CA's certificate with its root CRL
        distribution point and AIA, create the TSA and the OCSP responder if missing, and
        re-issue the responder's certificate when it nears its end."""
        rows = {row.name: row for row in self.session.scalars(select(CertificateAuthority))}
        if ROOT not in rows or ISSUING not in rows:
            raise ServiceUnavailable("the CA is not initialised: run `python -m app ca init`")
        made: list[str] = []
        if self._reissue_issuing_ca(rows[ISSUING], rows[ROOT]):
            made.append("issuing CA certificate with its revocation pointers")
        if TSA not in rows:
            self._add_tsa(now)
            made.append("time-stamping authority")
        responder = rows.get(OCSP)
        if responder is None or _expires_soon(responder, now):
            self._issue_responder(responder, now)
            made.append("OCSP responder certificate")
        if made:
            self.session.flush()
            self.cache.clear()
        return made

    def _url(self, path: str) -> str | None:
        base = self.ca.public_base_url
        return f"{base}{path}" if base else None

    def _reissue_issuing_ca(
        self, issuing_row: CertificateAuthority, root_row: CertificateAuthority
    ) -> bool:
        crl_url = self._url(ROOT_CRL_PATH)
        issuing = _certificate(issuing_row)
        if crl_url is None or has_revocation_pointers(issuing, crl_url):
            return False
        reissued = reissue_with_pointers(
            issuing,
            _certificate(root_row),
            self.ca.sign_with_root_key,
            crl_url=crl_url,
            ca_issuers_url=self._url(ROOT_CERTIFICATE_PATH),
        )
        issuing_row.certificate_pem = certificate_pem(reissued)
        self.session.flush()
        self.ca.cache.clear()
        return True

    def _add_tsa(self, now: datetime) -> None:
        generated = self.key_store.generate(ca_key_id(TSA), self.key_algorithm)
        certificate = issue_tsa_certificate(
            generated.public_key,
            self.ca.material().issuing,
            self.ca.sign_with_issuing_key,
            self.ca.ca_name,
            now=now,
            validity_days=TSA_VALIDITY_DAYS,
            crl_url=self._url(CRL_PATH),
            ca_issuers_url=self._url(CA_ISSUERS_PATH),
            ocsp_url=self._url(OCSP_PATH),
        )
        self.session.add(
            CertificateAuthority(
                name=TSA,
                certificate_pem=certificate_pem(certificate),
                key_blob=generated.blob,
                created_at=now,
            )
        )

    def _issue_responder(self, row: CertificateAuthority | None, now: datetime) -> None:
        # A new key with each certificate: the old one signed nothing a client still trusts.
        generated = self.key_store.generate(ca_key_id(OCSP), self.key_algorithm)
        certificate = issue_ocsp_responder_certificate(
            generated.public_key,
            self.ca.material().issuing,
            self.ca.sign_with_issuing_key,
            self.ca.ca_name,
            now=now,
            validity_days=OCSP_RESPONDER_VALIDITY_DAYS,
        )
        if row is None:
            row = CertificateAuthority(name=OCSP, created_at=now)
            self.session.add(row)
        row.certificate_pem = certificate_pem(certificate)
        row.key_blob = generated.blob


def _load(session: Session) -> TrustMaterial:
    rows = {
        row.name: row
        for row in session.scalars(
            select(CertificateAuthority).where(CertificateAuthority.name.in_((TSA, OCSP)))
        )
    }
    if TSA not in rows or OCSP not in rows:
        raise ServiceUnavailable(
            "the TSA and OCSP responder are not set up: run `python -m app ca upgrade`"
        )
    return TrustMaterial(
        tsa=_certificate(rows[TSA]),
        tsa_key_blob=rows[TSA].key_blob,
        ocsp=_certificate(rows[OCSP]),
        ocsp_key_blob=rows[OCSP].key_blob,
    )


def _certificate(row: CertificateAuthority) -> x509.Certificate:
    return x509.load_pem_x509_certificate(row.certificate_pem.encode())


def _expires_soon(row: CertificateAuthority, now: datetime) -> bool:
    return _certificate(row).not_valid_after_utc - now < OCSP_RESPONDER_RENEWAL_MARGIN
