"""Roaming credentials: a key in the key store, a certificate from our CA, a PIN."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.ca import certificate_pem, serial_hex
from app.crypto.keystore import KEY_ALGORITHMS, KeyAlgorithm, KeyStore
from app.crypto.secrets import pin_mac
from app.errors import Conflict, ValidationFailed
from app.models import Credential, CredentialStatus, Medium
from app.models.base import new_id
from app.services.audit import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.people import PeopleService
from app.validation import check_pin


class CredentialService:
    def __init__(
        self,
        session: Session,
        key_store: KeyStore,
        ca: CertificateAuthorityService,
        audit: AuditLog,
        pin_pepper: bytes,
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
        return self.session.scalar(
            select(Credential).where(
                Credential.user_id == user_id,
                Credential.medium == Medium.ROAMING,
                Credential.status.in_(
                    [CredentialStatus.ACTIVE, CredentialStatus.LOCKED, CredentialStatus.PENDING_PIN]
                ),
            )
        )
