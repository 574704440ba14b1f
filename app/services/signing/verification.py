"""Checking a signature: the cryptography, the chain to our CA, and the certificate's status."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms
from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.ca import serial_hex, verify_certificate_chain
from app.crypto.cades import signature_imprint, signature_timestamp_tokens
from app.crypto.cms import verify_cms, verify_raw
from app.crypto.tsa_token import TimestampTokenInvalid, read_timestamp_token
from app.errors import ValidationFailed
from app.models import Credential, CredentialStatus, User
from app.services.ca import CertificateAuthorityService
from app.validation import mask_mykad


@dataclass(frozen=True)
class TimestampFound:
    """A signature time-stamp whose token verifies and covers the signature value;
    `tsa_trusted` when the TSA's certificate chains to our CA and was valid at `time`."""

    time: datetime
    tsa: str
    tsa_trusted: bool


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
    timestamp: TimestampFound | None = None
    # The certificate's status at the time-stamp's time (None without a time-stamp).
    certificate_status_at_timestamp: str | None = None


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
        timestamp: TimestampFound | None = None
        if signature_format in ("cms", "cades-lt"):
            checked = verify_cms(
                signature, digest, hash_algorithm, roots=roots, intermediates=intermediates
            )
            valid, reason = checked.valid, checked.reason
            certificate = checked.signer_certificate
            signed_at = checked.signing_time
            timestamp = _timestamp(signature, roots, intermediates)
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
        status_then = _status(credential, timestamp.time)[0] if timestamp else None
        return Verification(
            valid=valid,
            signer_name=_common_name(certificate),
            mykad_masked=mask_mykad(user.mykad) if user else None,
            certificate_serial=serial,
            signed_at=signed_at,
            certificate_status=status,
            revoked_at=revoked_at,
            reason=reason,
            timestamp=timestamp,
            certificate_status_at_timestamp=status_then,
        )


def _timestamp(
    signature: bytes, roots: list[x509.Certificate], intermediates: list[x509.Certificate]
) -> TimestampFound | None:
    """The first signature time-stamp that verifies and covers the signer's signature."""
    try:
        [info] = cms.ContentInfo.load(signature)["content"]["signer_infos"]
        imprint = signature_imprint(info["signature"].native)
        tokens = signature_timestamp_tokens(signature)
    # asn1crypto raises assorted types on malformed input; verify_cms has said why.
    except Exception:
        return None
    for token_der in tokens:
        try:
            token = read_timestamp_token(token_der)
        except TimestampTokenInvalid:
            continue
        if (token.hash_algorithm, token.hashed_message) != ("sha256", imprint):
            continue
        tsa = token.tsa_certificate
        chained = verify_certificate_chain(tsa, roots, intermediates, at=token.gen_time)
        return TimestampFound(token.gen_time, _common_name(tsa), tsa_trusted=chained is None)
    return None


def _status(credential: Credential | None, now: datetime) -> tuple[str, datetime | None]:
    if credential is None:
        return "unknown", None
    revoked_at = credential.revoked_at
    if revoked_at is not None and revoked_at <= now:
        return "revoked", revoked_at
    if revoked_at is None and credential.status == CredentialStatus.REVOKED:
        return "revoked", None
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
