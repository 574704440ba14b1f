"""Credentials (media): roaming credentials issued here, tokens and softcerts on record.

A roaming credential is a key in the key store, a certificate from our CA and a PIN. Its
statuses: `pending_pin` (issued, waiting for its first PIN) -> `active` <-> `locked` (wrong
PINs), and in the end `revoked` or `superseded` (renewed). Tokens and softcerts are only
recorded: they need no cancellation and read as `expired` after their date.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.ca import certificate_pem, serial_hex
from app.crypto.keys import MacKey
from app.crypto.keystore import KEY_ALGORITHMS, KeyAlgorithm, KeyStore
from app.crypto.secrets import pin_mac
from app.errors import Conflict, ValidationFailed
from app.models import (
    Credential,
    CredentialStatus,
    Medium,
)
from app.models.base import new_id
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.credential_rules import is_expired
from app.services.lifecycle.people import PeopleService
from app.validation import check_pin

# Statuses in which a roaming credential is the person's current one (it signs, or will).
CURRENT_ROAMING_STATUSES = (
    CredentialStatus.PENDING_PIN,
    CredentialStatus.ACTIVE,
    CredentialStatus.LOCKED,
)
# RFC 5280 s.5.3.1 reason codes an end-entity certificate is revoked for here. certificateHold
# and removeFromCRL (suspension) and the CA/AA compromise codes do not apply.
REVOCATION_REASONS = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)
EXPIRED = "expired"


def effective_status(credential: Credential, now: datetime) -> str:
    """The status a caller sees: a current credential past its validity reads `expired`."""
    if credential.status in CURRENT_ROAMING_STATUSES and is_expired(credential, now):
        return EXPIRED
    return credential.status


class CredentialService:
    def __init__(
        self,
        session: Session,
        key_store: KeyStore,
        ca: CertificateAuthorityService,
        audit: AuditLog,
        pin_pepper: MacKey,
    ) -> None:
        self.session = session
        self.key_store = key_store
        self.ca = ca
        self.audit = audit
        self.pin_pepper = pin_pepper

    def issue_roaming(
        self,
        mykad: str,
        pin: str,
        key_algorithm: str,
        now: datetime,
        validity_days: int,
        actor: str,
    ) -> Credential:
        """An active roaming credential at once: the administrator's shortcut past the
        application workflow. One active roaming credential per person."""
        if key_algorithm not in KEY_ALGORITHMS:
            raise ValidationFailed(f"key algorithm must be one of {', '.join(KEY_ALGORITHMS)}")
        try:
            check_pin(pin)
        except ValueError as exc:
            raise ValidationFailed(str(exc), "/pin") from None
        user = PeopleService(self.session, self.audit).get(mykad)
        if self.active_roaming(user.id) is not None:
            raise Conflict("this person already holds a roaming credential")
        credential_id = new_id()
        algorithm: KeyAlgorithm = key_algorithm  # checked above
        generated = self.key_store.generate(credential_id, algorithm)
        certificate = self.ca.issue(generated.public_key, user.name, user.id, now, validity_days)
        credential = Credential(
            id=credential_id,
            user_id=user.id,
            medium=Medium.ROAMING,
            status=CredentialStatus.ACTIVE,
            key_algorithm=key_algorithm,
            key_blob=generated.blob,
            certificate_pem=certificate_pem(certificate),
            certificate_serial=serial_hex(certificate),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            pin_mac=pin_mac(self.pin_pepper, credential_id, pin),
            pin_failures=0,
            created_at=now,
            updated_at=now,
        )
        self.session.add(credential)
        self.session.flush()
        self.audit.record(
            now=now,
            action="credential.issued",
            actor=actor,
            mykad=mykad,
            target_id=credential.id,
            details={
                "key_algorithm": key_algorithm,
                "certificate_serial": credential.certificate_serial,
            },
        )
        return credential

    def active_roaming(self, user_id: str) -> Credential | None:
        """The person's usable-or-locked roaming credential (not revoked)."""
        return self.current_roaming(self.session, user_id)

    @staticmethod
    def current_roaming(session: Session, user_id: str) -> Credential | None:
        """The person's oldest roaming credential that is neither revoked nor superseded
        (pending its PIN, active or locked; possibly expired)."""
        return session.scalars(
            select(Credential)
            .where(
                Credential.user_id == user_id,
                Credential.medium == Medium.ROAMING,
                Credential.status.in_(CURRENT_ROAMING_STATUSES),
            )
            .order_by(Credential.created_at)
        ).first()


def holds_current_roaming(session: Session, user_id: str, now: datetime) -> bool:
    """Whether the person already holds a roaming credential that signs or will (not revoked,
    superseded or expired): they need no application, and get none."""
    return (
        session.scalar(
            select(Credential.id)
            .where(
                Credential.user_id == user_id,
                Credential.medium == Medium.ROAMING,
                Credential.status.in_(CURRENT_ROAMING_STATUSES),
                Credential.not_after > now,
            )
            .limit(1)
        )
        is not None
    )
