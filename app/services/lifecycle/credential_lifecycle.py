"""The roaming credential's lifecycle: issue pending its PIN, renew, supersede, revoke, unlock;
tokens and softcerts put on record.

Revocation and renewal destroy the old key: its blob (the key's only copy) is wiped in the
transaction, and this process's unwrapped copy (`KeyStore.forget`) is dropped once it has
committed. Other processes never sign with theirs: signing checks the credential's status
first, and a wiped blob cannot be unwrapped again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.crypto.ca import certificate_pem, serial_hex
from app.crypto.keystore import KEY_ALGORITHMS, KeyAlgorithm
from app.db import after_commit
from app.errors import Conflict, NoEmailAddress, NotFound, ValidationFailed
from app.models import (
    Credential,
    CredentialStatus,
    Medium,
    RequestStatus,
    SigningRequest,
    TokenPurpose,
    User,
)
from app.models.base import new_id
from app.services.clients import Caller
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.credentials import CURRENT_ROAMING_STATUSES, REVOCATION_REASONS
from app.services.lifecycle.people import PeopleService
from app.services.lifecycle.tokens import IssuedToken
from app.services.mail.notices import queue_notice, queue_revoked_notice
from app.services.mail.texts.tokens import PinSetupNotice


class CredentialLifecycle:
    """Issue (pending its PIN), renew, revoke and unlock roaming credentials; record tokens."""

    def __init__(self, context: LifecycleContext) -> None:
        self.context = context
        self.session = context.session
        self.audit = context.audit

    # -- reading ------------------------------------------------------------------------------

    def get(self, credential_id: str, *, lock: bool = False) -> Credential:
        query = select(Credential).where(Credential.id == credential_id)
        if lock:
            query = query.with_for_update()
        credential = self.session.scalar(query)
        if credential is None:
            raise NotFound("no such credential")
        return credential

    def get_for(self, caller: Caller, credential_id: str, *, lock: bool = False) -> Credential:
        """The credential, if this caller may see its holder; otherwise 404."""
        credential = self.get(credential_id, lock=lock)
        PeopleService.check_visible(caller, credential.user)
        return credential

    def of_person(self, caller: Caller, mykad: str) -> list[Credential]:
        user = PeopleService(self.session, self.audit).get_for(caller, mykad)
        return list(
            self.session.scalars(
                select(Credential)
                .where(Credential.user_id == user.id)
                .order_by(Credential.created_at, Credential.id)
            )
        )

    # -- tokens and softcerts -----------------------------------------------------------------

    def record_medium(
        self,
        caller: Caller,
        mykad: str,
        *,
        medium: Medium,
        serial: str,
        not_before: datetime | None,
        not_after: datetime,
        now: datetime,
    ) -> Credential:
        """Put a token (or softcert) a person holds on record, next to any other media."""
        user = PeopleService(self.session, self.audit).get_for(caller, mykad)
        if medium is Medium.ROAMING:
            raise ValidationFailed("roaming credentials are issued, not recorded", "/medium")
        if not_before is not None and not_before >= not_after:
            raise ValidationFailed("not_before must be before expires_at", "/not_before")
        # Stored and answered in UTC whatever offset the caller wrote.
        not_after = not_after.astimezone(UTC)
        not_before = not_before.astimezone(UTC) if not_before else None
        credential = Credential(
            id=new_id(),
            user_id=user.id,
            medium=medium,
            status=CredentialStatus.ACTIVE,
            token_serial=serial,
            not_before=not_before,
            not_after=not_after,
            pin_failures=0,
            created_at=now,
            updated_at=now,
        )
        try:
            with self.session.begin_nested():
                self.session.add(credential)
        except IntegrityError:
            raise Conflict(f"a {medium.value} with this serial is already on record") from None
        self.audit.record(
            now=now,
            action="credential.recorded",
            actor=caller.name,
            mykad=user.mykad,
            target_id=credential.id,
            details={"medium": medium.value, "serial": serial},
        )
        return credential

    # -- roaming credentials ------------------------------------------------------------------

    def issue_pending(
        self,
        user: User,
        key_algorithm: str,
        now: datetime,
        actor: str,
        *,
        replaces: Credential | None = None,
    ) -> tuple[Credential, IssuedToken]:
        """Generate a key, have the CA certify it, and e-mail the PIN-setup token: the
        credential signs once the person has set its PIN."""
        if key_algorithm not in KEY_ALGORITHMS:
            raise ValidationFailed(
                f"key algorithm must be one of {', '.join(KEY_ALGORITHMS)}", "/key_algorithm"
            )
        if not user.email:
            raise NoEmailAddress("the PIN-setup token goes by e-mail: register an address first")
        settings = self.context.settings
        credential_id = new_id()
        algorithm: KeyAlgorithm = key_algorithm  # checked above
        generated = self.context.key_store.generate(credential_id, algorithm)
        certificate = self.context.ca.issue(
            generated.public_key, user.name, user.id, now, settings.certificate_validity_days
        )
        credential = Credential(
            id=credential_id,
            user_id=user.id,
            medium=Medium.ROAMING,
            status=CredentialStatus.PENDING_PIN,
            key_algorithm=key_algorithm,
            key_blob=generated.blob,
            certificate_pem=certificate_pem(certificate),
            certificate_serial=serial_hex(certificate),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            pin_failures=0,
            replaces_credential_id=replaces.id if replaces else None,
            created_at=now,
            updated_at=now,
        )
        self.session.add(credential)
        self.session.flush()
        issued = self.send_pin_setup(user, credential, now)
        self.audit.record(
            now=now,
            action="credential.issued",
            actor=actor,
            mykad=user.mykad,
            target_id=credential.id,
            outcome=CredentialStatus.PENDING_PIN,
            details={
                "key_algorithm": key_algorithm,
                "certificate_serial": credential.certificate_serial,
                "replaces": replaces.id if replaces else None,
            },
        )
        return credential, issued

    def send_pin_setup(
        self, user: User, credential: Credential, now: datetime, *, on_request: bool = False
    ) -> IssuedToken:
        """(Re)send the PIN-setup token of a credential waiting for its first PIN."""
        assert user.email is not None and credential.certificate_serial is not None
        issued = self.context.tokens.issue(
            purpose=TokenPurpose.PIN_SETUP,
            subject_id=credential.id,
            user=user,
            email=user.email,
            ttl_seconds=self.context.settings.pin_setup_token_ttl_seconds,
            now=now,
            on_request=on_request,
        )
        notice = PinSetupNotice(
            token=issued.token,
            name=user.name,
            certificate_serial=credential.certificate_serial,
            expires_at=issued.row.expires_at,
            credential_id=credential.id,
            is_renewal=credential.replaces_credential_id is not None,
            link_base=self.context.settings.token_link_base,
        )
        queue_notice(
            self.session,
            self.context.notices,
            purpose="pin_setup",
            recipient=user.email,
            notice=notice,
            now=now,
            not_after=issued.row.expires_at,
        )
        return issued

    def renew(
        self, caller: Caller, credential_id: str, key_algorithm: str | None, now: datetime
    ) -> Credential:
        """A new key and certificate for the same person, as a new credential waiting for its
        PIN (the PIN is bound to the key's credential, so it is set again with the e-mailed
        token). The current credential keeps signing until then, and is superseded the moment
        the new PIN is set."""
        current = self.get(credential_id, lock=True)
        self._require_roaming(current)
        if current.status in (CredentialStatus.REVOKED, CredentialStatus.SUPERSEDED):
            raise Conflict(
                f"a {current.status} credential is not renewed: open a new roaming application"
            )
        if current.status == CredentialStatus.PENDING_PIN:
            raise Conflict("this credential has no PIN yet: resend its PIN-setup e-mail instead")
        pending = self.session.scalar(
            select(Credential.id).where(
                Credential.replaces_credential_id == current.id,
                Credential.status == CredentialStatus.PENDING_PIN,
            )
        )
        if pending is not None:
            raise Conflict("a renewal of this credential is already waiting for its PIN")
        user = current.user
        renewed, _issued = self.issue_pending(
            user,
            key_algorithm or current.key_algorithm or self.context.settings.key_algorithm,
            now,
            caller.name,
            replaces=current,
        )
        self.audit.record(
            now=now,
            action="credential.renewed",
            actor=caller.name,
            mykad=user.mykad,
            target_id=current.id,
            details={"renewed_by": renewed.id, "certificate_serial": renewed.certificate_serial},
        )
        return renewed

    def supersede(self, old_id: str, successor: Credential, now: datetime, actor: str) -> None:
        """The renewed credential is active: the old one never signs again. Its key is
        destroyed and its pending requests cancelled; its certificate stays valid (not
        revoked) for the signatures it made."""
        # Requests first, then the credential: the order a failed signature check takes its
        # row locks in (request, then credential), so the two cannot deadlock.
        cancelled = cancel_pending_requests(self.session, old_id, now)
        superseded = self.session.execute(
            update(Credential)
            .where(
                Credential.id == old_id,
                Credential.status.in_(CURRENT_ROAMING_STATUSES),
            )
            .values(status=CredentialStatus.SUPERSEDED, key_blob=None, updated_at=now)
            .returning(Credential.id)
            .execution_options(synchronize_session=False)
        ).first()
        if superseded is None:
            return  # revoked meanwhile: nothing left to end
        self._forget_key_after_commit(old_id)
        self.context.tokens.supersede_subject(old_id, now)
        self.audit.record(
            now=now,
            action="credential.superseded",
            actor=actor,
            mykad=successor.user.mykad,
            target_id=old_id,
            details={"superseded_by": successor.id, "cancelled_requests": cancelled},
        )

    def revoke(self, caller: Caller, credential_id: str, reason: str, now: datetime) -> Credential:
        """Revoke the certificate: the credential stops signing at once, its pending signing
        requests are cancelled, its key is destroyed, and the CRL lists it from now on."""
        if reason not in REVOCATION_REASONS:
            raise ValidationFailed(
                f"reason must be one of {', '.join(REVOCATION_REASONS)}", "/reason"
            )
        credential = self.get(credential_id)
        self._require_roaming(credential)
        if credential.status == CredentialStatus.REVOKED:
            raise Conflict("the credential is already revoked")
        # Requests first, then the credential (see `supersede`). A request opened in between
        # stays pending but can never sign: the signing service refuses a revoked credential.
        cancelled = cancel_pending_requests(self.session, credential.id, now)
        revoked = self.session.execute(
            update(Credential)
            .where(Credential.id == credential.id, Credential.status != CredentialStatus.REVOKED)
            .values(
                status=CredentialStatus.REVOKED,
                revoked_at=now,
                revocation_reason=reason,
                key_blob=None,
                updated_at=now,
            )
            .returning(Credential.id)
            .execution_options(synchronize_session=False)
        ).first()
        if revoked is None:
            raise Conflict("the credential is already revoked")
        self._forget_key_after_commit(credential.id)
        self.session.refresh(credential)
        self.context.tokens.supersede_subject(credential.id, now)
        user = credential.user
        queue_revoked_notice(self.session, self.context.notices, user, credential, now)
        self.audit.record(
            now=now,
            action="credential.revoked",
            actor=caller.name,
            mykad=user.mykad,
            target_id=credential.id,
            outcome=reason,
            details={
                "certificate_serial": credential.certificate_serial,
                "cancelled_requests": cancelled,
            },
        )
        return credential

    def unlock(self, caller: Caller, credential_id: str, now: datetime) -> Credential:
        """Unlock a credential locked by wrong PINs; its PIN is unchanged."""
        credential = self.get(credential_id)
        self._require_roaming(credential)
        unlocked = self.session.execute(
            update(Credential)
            .where(Credential.id == credential.id, Credential.status == CredentialStatus.LOCKED)
            .values(status=CredentialStatus.ACTIVE, pin_failures=0, locked_at=None, updated_at=now)
            .returning(Credential.id)
            .execution_options(synchronize_session=False)
        ).first()
        if unlocked is None:
            raise Conflict(f"the credential is not locked (it is {credential.status})")
        self.session.refresh(credential)
        self.audit.record(
            now=now,
            action="credential.unlocked",
            actor=caller.name,
            mykad=credential.user.mykad,
            target_id=credential.id,
        )
        return credential

    def _forget_key_after_commit(self, credential_id: str) -> None:
        after_commit(self.session, partial(self.context.key_store.forget, credential_id))

    @staticmethod
    def _require_roaming(credential: Credential) -> None:
        if credential.medium != Medium.ROAMING:
            raise Conflict(f"this is a {credential.medium} on record, not a roaming credential")


def cancel_pending_requests(session: Session, credential_id: str, now: datetime) -> int:
    """Cancel the credential's pending signing requests; their OTPs can no longer sign.

    A conditional UPDATE on the shared table: a submission already being checked holds the
    request's row lock, so this waits for it, and any later one finds the request cancelled.
    """
    cancelled = session.execute(
        update(SigningRequest)
        .where(
            SigningRequest.credential_id == credential_id,
            SigningRequest.status == RequestStatus.PENDING,
        )
        .values(status=RequestStatus.CANCELLED, finished_at=now)
        .returning(SigningRequest.id)
        .execution_options(synchronize_session=False)
    ).all()
    return len(cancelled)
