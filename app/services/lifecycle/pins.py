"""The roaming credential's PIN: first setting, change, reset by e-mail, and the lock.

PINs are kept only as `pin_mac` (keyed, bound to the credential). A wrong current PIN in a change
counts towards the lock exactly like a wrong PIN in a signature: `pin_max_failures` in a row
lock the credential, and a reset (or JDN) unlocks it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update

from app.crypto.secrets import macs_equal, pin_mac
from app.db import keep_changes
from app.errors import (
    AuthorizationFailed,
    Conflict,
    CredentialLocked,
    CredentialNotActive,
    NoEmailAddress,
    ValidationFailed,
)
from app.models import Credential, CredentialStatus, TokenPurpose, User
from app.services.clients import Caller
from app.services.credential_rules import count_pin_failure, report_credential_locked
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.credential_lifecycle import CredentialLifecycle
from app.services.lifecycle.credentials import effective_status
from app.services.lifecycle.tokens import TokenSent
from app.services.mail.notices import queue_notice, queue_pin_changed_notice
from app.services.mail.texts.common import mask_email
from app.services.mail.texts.tokens import PinResetNotice


class PinService:
    def __init__(self, context: LifecycleContext) -> None:
        self.context = context
        self.session = context.session
        self.audit = context.audit
        self.credentials = CredentialLifecycle(context)

    def set_with_token(
        self, caller: Caller, credential_id: str, new_pin: str, token: str, now: datetime
    ) -> Credential:
        """The first PIN (with the PIN-setup token) or a new one (with a reset token, which
        also unlocks). A renewed credential's first PIN supersedes the credential it renews."""
        credential = self._roaming(caller, credential_id)
        user = credential.user
        status = effective_status(credential, now)
        if status == CredentialStatus.PENDING_PIN:
            purpose = TokenPurpose.PIN_SETUP
        elif status in (CredentialStatus.ACTIVE, CredentialStatus.LOCKED):
            purpose = TokenPurpose.PIN_RESET
        else:
            raise CredentialNotActive(f"the credential is {status}; its PIN cannot be set")
        self._refuse_same_pin(credential, new_pin)
        self.context.tokens.consume(
            purpose=purpose,
            subject_id=credential.id,
            token=token,
            now=now,
            actor=caller.name,
            mykad=user.mykad,
            recognised=[TokenPurpose.PIN_SETUP, TokenPurpose.PIN_RESET],
        )
        expected = (
            CredentialStatus.PENDING_PIN
            if purpose is TokenPurpose.PIN_SETUP
            else (CredentialStatus.ACTIVE, CredentialStatus.LOCKED)
        )
        self._store_pin(credential, new_pin, now, expected)
        if purpose is TokenPurpose.PIN_SETUP:
            action = "credential.pin_set"
            if credential.replaces_credential_id is not None:
                self.credentials.supersede(
                    credential.replaces_credential_id, credential, now, caller.name
                )
        else:
            action = "credential.pin_reset"
            self._tell_pin_changed(user, credential, now)
        self.audit.record(
            now=now,
            action=action,
            actor=caller.name,
            mykad=user.mykad,
            target_id=credential.id,
            details={"was_locked": status == CredentialStatus.LOCKED},
        )
        return credential

    def change(
        self, caller: Caller, credential_id: str, current_pin: str, new_pin: str, now: datetime
    ) -> Credential:
        """Change the PIN with the current one. A wrong current PIN is counted (and may lock
        the credential) and answers `authorization_failed` with the tries left."""
        credential = self._roaming(caller, credential_id)
        user = credential.user
        status = effective_status(credential, now)
        if status == CredentialStatus.LOCKED:
            keep_changes(self.session)
            raise CredentialLocked("the credential is locked: reset the PIN by e-mail")
        if status != CredentialStatus.ACTIVE:
            raise CredentialNotActive(f"the credential is {status}; its PIN cannot be changed")
        verified_mac = credential.pin_mac
        # Always computed, so the time taken says nothing about the format of the input.
        current_ok = macs_equal(
            verified_mac, pin_mac(self.context.keys.pin_pepper, credential.id, current_pin)
        )
        if not current_ok:
            self._count_wrong_pin(caller, credential, user, now)
        self._refuse_same_pin(credential, new_pin)
        # Only over the PIN just verified: of concurrent changes with the same current PIN,
        # one stores its new PIN and the others find the PIN changed (`conflict`).
        self._store_pin(credential, new_pin, now, CredentialStatus.ACTIVE, replacing=verified_mac)
        self._tell_pin_changed(user, credential, now)
        self.audit.record(
            now=now,
            action="credential.pin_changed",
            actor=caller.name,
            mykad=user.mykad,
            target_id=credential.id,
        )
        return credential

    def request_reset(self, caller: Caller, credential_id: str, now: datetime) -> TokenSent:
        """E-mail a PIN reset token to the registered address (for a credential still waiting
        for its first PIN: a new PIN-setup token). Refused while the address is new."""
        credential = self._roaming(caller, credential_id)
        user = credential.user
        status = effective_status(credential, now)
        if status not in (
            CredentialStatus.ACTIVE,
            CredentialStatus.LOCKED,
            CredentialStatus.PENDING_PIN,
        ):
            raise CredentialNotActive(f"the credential is {status}; its PIN cannot be reset")
        if not user.email:
            raise NoEmailAddress("a PIN reset goes by e-mail: register an address first")
        settings = self.context.settings
        if user.email_changed_at is not None:
            usable_from = user.email_changed_at + timedelta(
                seconds=settings.pin_reset_email_age_seconds
            )
            if now < usable_from:
                raise Conflict(
                    "the e-mail address changed recently; no PIN reset goes to it before "
                    f"{usable_from.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                )
        purpose = (
            TokenPurpose.PIN_SETUP
            if status == CredentialStatus.PENDING_PIN
            else TokenPurpose.PIN_RESET
        )
        self.context.tokens.check_rate(
            user, [purpose], settings.token_emails_per_day, now, "PIN e-mails"
        )
        if purpose is TokenPurpose.PIN_SETUP:
            issued = self.credentials.send_pin_setup(user, credential, now, on_request=True)
        else:
            issued = self.context.tokens.issue(
                purpose=purpose,
                subject_id=credential.id,
                user=user,
                email=user.email,
                ttl_seconds=settings.pin_reset_token_ttl_seconds,
                now=now,
                on_request=True,
            )
            notice = PinResetNotice(
                token=issued.token,
                name=user.name,
                expires_at=issued.row.expires_at,
                credential_id=credential.id,
                link_base=settings.token_link_base,
            )
            queue_notice(
                self.session,
                self.context.notices,
                purpose="pin_reset",
                recipient=user.email,
                notice=notice,
                now=now,
                not_after=issued.row.expires_at,
            )
        self.audit.record(
            now=now,
            action="credential.pin_reset_requested",
            actor=caller.name,
            mykad=user.mykad,
            target_id=credential.id,
            details={"purpose": purpose.value},
        )
        return TokenSent(mask_email(user.email), issued.row.expires_at, purpose)

    # -- the steps ----------------------------------------------------------------------------

    def _roaming(self, caller: Caller, credential_id: str) -> Credential:
        credential = self.credentials.get_for(caller, credential_id)
        if credential.medium != "roaming":
            raise Conflict(f"a {credential.medium} on record has no PIN here")
        return credential

    def _refuse_same_pin(self, credential: Credential, new_pin: str) -> None:
        if credential.pin_mac is not None and macs_equal(
            credential.pin_mac, pin_mac(self.context.keys.pin_pepper, credential.id, new_pin)
        ):
            raise ValidationFailed("the new PIN must differ from the current one", "/new_pin")

    def _store_pin(
        self,
        credential: Credential,
        new_pin: str,
        now: datetime,
        expected: CredentialStatus | tuple[CredentialStatus, ...],
        replacing: bytes | None = None,
    ) -> None:
        """Store the new PIN if the credential is still in an `expected` status and, given
        `replacing`, still has that PIN; else `conflict`."""
        statuses = expected if isinstance(expected, tuple) else (expected,)
        unchanged = [Credential.id == credential.id, Credential.status.in_(statuses)]
        if replacing is not None:
            unchanged.append(Credential.pin_mac == replacing)
        stored = self.session.execute(
            update(Credential)
            .where(*unchanged)
            .values(
                pin_mac=pin_mac(self.context.keys.pin_pepper, credential.id, new_pin),
                pin_failures=0,
                status=CredentialStatus.ACTIVE,
                locked_at=None,
                updated_at=now,
            )
            .returning(Credential.id)
            .execution_options(synchronize_session=False)
        ).first()
        if stored is None:
            # Revoked, locked, or its PIN set meanwhile by a concurrent request.
            self.session.refresh(credential)
            raise Conflict(
                f"the credential or its PIN changed meanwhile (it is {credential.status}); "
                "check the PIN and retry"
            )
        self.session.refresh(credential)

    def _count_wrong_pin(
        self, caller: Caller, credential: Credential, user: User, now: datetime
    ) -> None:
        limit = self.context.settings.pin_max_failures
        failure = count_pin_failure(self.session, credential, limit, now)
        self.audit.record(
            now=now,
            action="credential.pin_change_rejected",
            actor=caller.name,
            mykad=user.mykad,
            target_id=credential.id,
            outcome="pin_wrong",
            details={"failures": failure.failures},
        )
        if failure.locked:
            report_credential_locked(
                self.session,
                self.context.notices,
                self.audit,
                caller.name,
                user,
                credential,
                now,
                key_store=self.context.key_store,
            )
        # Commit the count (and the lock), then refuse.
        keep_changes(self.session)
        raise AuthorizationFailed(
            "the current PIN is not correct", attempts_remaining=max(0, limit - failure.failures)
        )

    def _tell_pin_changed(self, user: User, credential: Credential, now: datetime) -> None:
        queue_pin_changed_notice(self.session, self.context.notices, user, credential, now)
