"""Checking a signature: the cryptography, the chain to our CA, and the certificate's status."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.ca import serial_hex
from app.crypto.cms import verify_cms, verify_raw
from app.errors import ValidationFailed
from app.models import Credential, CredentialStatus, User
from app.services.ca import CertificateAuthorityService
from app.validation import mask_mykad


@dataclass(frozen=True)
class Verification:
    valid: bool
    signer_name: str | None
    mykad_masked: str | None
    certificate_serial: str | None
    signed_at: datetime | None
    certificate_status: str
    revoked_at: datetime | None
    reason: str | None


class VerificationService:
    def __init__(self, session: Session, ca: CertificateAuthorityService) -> None:
        self.session = session
        self.ca = ca

    def verify(
        self,
        *,
        document_hash_hex: str,
        hash_algorithm: str,
        signature_b64: str,
        signature_format: str,
        certificate_pem: str | None,
        now: datetime,
    ) -> Verification:
        signature = _base64(signature_b64)
        digest = bytes.fromhex(document_hash_hex)
        material = self.ca.material()
        roots, intermediates = [material.root], [material.issuing]
        signed_at: datetime | None = None
        if signature_format in ("cms", "cades-lt"):
            checked = verify_cms(
                signature, digest, hash_algorithm, roots=roots, intermediates=intermediates
            )
            valid, reason = checked.valid, checked.reason
            certificate = checked.signer_certificate
            signed_at = checked.signing_time
        else:
            if not certificate_pem:
                raise ValidationFailed("certificate is required for raw signatures", "/certificate")
            certificate = _certificate(certificate_pem)
            raw = verify_raw(
                signature,
                digest,
                hash_algorithm,
                certificate,
                roots=roots,
                intermediates=intermediates,
            )
            valid, reason = raw.valid, raw.reason
        if certificate is None:
            return Verification(False, None, None, None, None, "unknown", None, reason)
        serial = serial_hex(certificate)
        credential = self.session.scalar(
            select(Credential).where(Credential.certificate_serial == serial)
        )
        user = self.session.get(User, credential.user_id) if credential else None
        status, revoked_at = _status(credential, now)
        return Verification(
            valid=valid,
            signer_name=_common_name(certificate),
            mykad_masked=mask_mykad(user.mykad) if user else None,
            certificate_serial=serial,
            signed_at=signed_at,
            certificate_status=status,
            revoked_at=revoked_at,
            reason=reason,
        )


def _status(credential: Credential | None, now: datetime) -> tuple[str, datetime | None]:
    if credential is None:
        return "unknown", None
    if credential.status == CredentialStatus.REVOKED or credential.revoked_at is not None:
        return "revoked", credential.revoked_at
    if credential.not_after is not None and credential.not_after <= now:
        return "expired", None
    return "good", None


def _base64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("signature must be standard base64", "/signature") from None


def _certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise ValidationFailed("certificate must be one PEM certificate", "/certificate") from None


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()
