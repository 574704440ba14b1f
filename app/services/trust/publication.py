"""What relying parties fetch to build and check the chain: the issuing CA's and the root's
certificates as DER (AIA caIssuers, RFC 5280 s.4.2.2.1) and the root's CRL."""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives import serialization

from app.crypto.pki import build_signed_crl
from app.services.ca import CertificateAuthorityService

# The root revokes nothing today (one issuing CA); its CRL says so, for validators (pyHanko's
# LTV among them) that demand revocation data for every certificate below the root.
ROOT_CRL_NEXT_UPDATE_SECONDS = 7 * 24 * 3600


class PkiPublication:
    def __init__(self, ca: CertificateAuthorityService) -> None:
        self.ca = ca

    def issuer_der(self) -> bytes:
        """The issuing CA's certificate, DER (`application/pkix-cert`)."""
        return self.ca.material().issuing.public_bytes(serialization.Encoding.DER)

    def root_der(self) -> bytes:
        """The root's certificate, DER."""
        return self.ca.material().root.public_bytes(serialization.Encoding.DER)

    def root_crl_der(self, now: datetime) -> bytes:
        """The root's CRL (DER), signed now: it lists no revoked CA."""
        crl = build_signed_crl(
            self.ca.material().root,
            self.ca.sign_with_root_key,
            [],
            now=now,
            next_update_seconds=ROOT_CRL_NEXT_UPDATE_SECONDS,
        )
        return crl.public_bytes(serialization.Encoding.DER)
