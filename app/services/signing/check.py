"""The one check of an OTP and a PIN, shared by the native signature and CSC's authorize:
one attempt counted whatever was wrong, and the lockouts a failure leads to."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.crypto.keys import Secrets
from app.crypto.keystore import KeyStore
from app.crypto.secrets import macs_equal, otp_mac, pin_mac
from app.db import keep_changes
from app.errors import AuthorizationFailed, RequestLocked, ValidationFailed
from app.models import Credential, RequestStatus, SigningRequest, User
from app.services.audit.log import AuditLog
from app.services.clients import Caller
from app.services.credential_rules import (
    binding_of,
    clear_failed_checks,
    clear_pin_failures,
    count_failed_check,
    count_pin_failure,
    refuse_held,
    refuse_spent_otp,
    refuse_unless_can_sign,
    report_credential_locked,
)
from app.services.mail.notices import NoticeContext
from app.services.signing.statements import COUNT_ATTEMPT, SIGNER_LOCKED, loaded_as
from app.settings import Settings

_OTP_FORMAT = re.compile(r"^[0-9]{6}$")
_PIN_FORMAT = re.compile(r"^[0-9]{6,8}$")


class OtpPinCheck:
    """Checks an OTP and a PIN in the contract's order and counts the failures."""

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        keys: Secrets,
        audit: AuditLog,
        key_store: KeyStore,
        notices: NoticeContext,
    ) -> None:
        self.session = session
        self.settings = settings
        self.keys = keys
        self.audit = audit
        self.key_store = key_store
        self.notices = notices

    def check_otp_and_pin(
        self, caller: Caller, request: SigningRequest, otp: str, pin: str, now: datetime
    ) -> tuple[Credential, User]:
        """The one check of an OTP and a PIN, in the contract's order; the native signature and
        CSC credentials/authorize both use it.

        Refusals before the check count nothing; the check itself counts one attempt whatever
        was wrong and raises `AuthorizationFailed` (committed with its counters). On success
        the person's failure counters are cleared, and spending the OTP (a signature, or a
        SAD) is the caller's next step, in the same transaction: the row lock taken by the
        count keeps concurrent submissions out until then.
        """
        if not _OTP_FORMAT.match(otp):
            raise ValidationFailed("otp must be 6 digits", "/otp")
        if not _PIN_FORMAT.match(pin):
            raise ValidationFailed("pin must be 6 to 8 digits", "/pin")
        refuse_spent_otp(self.session, request, now)
        credential, user = self._locked_signer(request)
        assert credential is not None and user is not None  # foreign keys
        refuse_unless_can_sign(self.session, credential, now)
        refuse_held(self.session, user, now)

        attempts = self._count_attempt(request, now)
        # Both factors are always computed and compared, so the time taken says nothing
        # about which one was wrong.
        otp_ok = macs_equal(request.otp_mac, otp_mac(self.keys.otp_mac, otp, binding_of(request)))
        pin_ok = macs_equal(credential.pin_mac, pin_mac(self.keys.pin_pepper, credential.id, pin))
        if otp_ok and pin_ok:
            clear_pin_failures(self.session, credential)
            clear_failed_checks(user)
            return credential, user
        self._record_failure(caller, request, credential, user, attempts, otp_ok, pin_ok, now)
        remaining = self.settings.otp_max_attempts - attempts
        keep_changes(self.session)
        raise AuthorizationFailed("the OTP or the PIN is not correct", attempts_remaining=remaining)

    def _locked_signer(self, request: SigningRequest) -> tuple[Credential | None, User | None]:
        """The request's credential and person, locked and read fresh: the checks of one
        credential (the person's one roaming credential) take turns, so one that waited
        behind the fifth wrong PIN sees the lock and is refused before it counts anything,
        and the person's hold (written only here) is exact too. The native route loaded them
        locked already (`SigningService.get_own`); CSC's authorize did not."""
        if self.session.info.get(SIGNER_LOCKED) == request.id:
            return (
                self.session.get(Credential, request.credential_id),
                self.session.get(User, request.user_id),
            )
        self.session.info[SIGNER_LOCKED] = request.id
        # FOR NO KEY UPDATE: a new request's foreign keys (FOR KEY SHARE) never wait for it.
        lock = {"key_share": True}
        return (
            self.session.get(
                Credential, request.credential_id, with_for_update=lock, populate_existing=True
            ),
            self.session.get(User, request.user_id, with_for_update=lock, populate_existing=True),
        )

    def _count_attempt(self, request: SigningRequest, now: datetime) -> int:
        """Count one check before comparing anything, atomically: parallel guesses cannot
        exceed the limit. The row lock this takes is held until the transaction ends."""
        counted: int | None = (
            self.session.connection()
            .execute(
                COUNT_ATTEMPT,
                {
                    "request_id": request.id,
                    "max_attempts": self.settings.otp_max_attempts,
                    "now": now,
                },
            )
            .scalar_one_or_none()
        )
        if counted is None:
            # Another submission changed the request between our read and this update.
            self.session.refresh(request)
            refuse_spent_otp(self.session, request, now)
            keep_changes(self.session)
            raise RequestLocked("too many failed attempts; request a new OTP")
        loaded_as(request, attempts=counted)
        return counted

    def _record_failure(
        self,
        caller: Caller,
        request: SigningRequest,
        credential: Credential,
        user: User,
        attempts: int,
        otp_ok: bool,
        pin_ok: bool,
        now: datetime,
    ) -> None:
        request_locked = attempts >= self.settings.otp_max_attempts
        if request_locked:
            self.session.execute(
                update(SigningRequest)
                .where(
                    SigningRequest.id == request.id, SigningRequest.status == RequestStatus.PENDING
                )
                .values(status=RequestStatus.LOCKED, finished_at=now)
            )
        # Only someone who has the OTP can lock the credential or hold the person back: a
        # wrong OTP counts against its own request alone (the attempt counted above), and
        # whatever its PIN, it leaves the credential and the person as they were. The same two
        # statements run either way (adding nothing when they do not count), so neither the
        # answer nor the work says which factor was wrong.
        counts = otp_ok and not pin_ok
        credential_locked = count_pin_failure(
            self.session, credential, self.settings.pin_max_failures, now, counts=counts
        ).locked
        failed_checks, held_until = count_failed_check(
            self.session, user, self.settings, now, counts=counts
        )
        self.audit.record(
            now=now,
            action="otp.check.rejected",
            actor=caller.name,
            mykad=user.mykad,
            target_id=request.id,
            # Never which factor: with a wrong OTP not counting towards any lock, a trail that
            # said "otp_wrong" would confirm a guessed PIN to anyone who reads it.
            outcome="check_failed",
            details={"attempt": attempts, "request_locked": request_locked},
        )
        if request_locked:
            self.audit.record(
                now=now,
                action="signing_request.locked",
                actor=caller.name,
                mykad=user.mykad,
                target_id=request.id,
            )
        if credential_locked:
            report_credential_locked(
                self.session,
                self.notices,
                self.audit,
                caller.name,
                user,
                credential,
                now,
                key_store=self.key_store,
            )
        if held_until is not None:
            self.audit.record(
                now=now,
                action="person.signing_held",
                actor=caller.name,
                mykad=user.mykad,
                outcome="consecutive_failures",
                details={"failed_checks": failed_checks, "held_until": held_until.isoformat()},
            )
